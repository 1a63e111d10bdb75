"""The hot path: store a page of candles with one bulk, idempotent upsert.

The ORM's bulk_create(update_conflicts=True) costs 3-7x more than a cursor executemany here
(see DESIGN.md), and the database parses the exchange's decimal strings itself, so this one
function talks to the cursor directly. It has its own tests on SQLite and MariaDB.
"""

import time

from django.conf import settings
from django.db import connection

COLUMNS = ("collector_id", "symbol", "interval", "open_time", "open", "high", "low", "close",
           "volume", "close_time", "quote_volume", "trades", "taker_buy_base_volume",
           "taker_buy_quote_volume")
UPDATED = COLUMNS[4:]


def _upsert_sql() -> str:
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    if connection.vendor == "mysql":
        cols = ", ".join(f"`{c}`" for c in COLUMNS)
        updates = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in UPDATED)
        return (f"INSERT INTO collectors_candle ({cols}) VALUES ({placeholders}) "
                f"ON DUPLICATE KEY UPDATE {updates}")
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in UPDATED)
    return (f"INSERT INTO collectors_candle ({cols}) VALUES ({placeholders}) "
            f'ON CONFLICT ("collector_id", "symbol", "interval", "open_time") DO UPDATE SET {updates}')


def _db_time(ms: int, _gmtime=time.gmtime, _strftime=time.strftime) -> str:
    """'YYYY-MM-DD HH:MM:SS[.ffffff]' UTC, the text both backends store for aware datetimes."""
    seconds, millis = divmod(ms, 1000)
    text = _strftime("%Y-%m-%d %H:%M:%S", _gmtime(seconds))
    return f"{text}.{millis:03d}000" if millis else text


def upsert_candles(*, collector_id: int, symbol: str, interval: str, rows) -> int:
    """Insert or overwrite kline rows (open_ms, o, h, l, c, v, close_ms, qv, n, tbb, tbq).

    Decimal strings go to the database as they came. Returns the number of rows written.
    """
    if not rows:
        return 0
    params = [
        (collector_id, symbol, interval, _db_time(r[0]), r[1], r[2], r[3], r[4], r[5],
         _db_time(r[6]), r[7], r[8], r[9], r[10])
        for r in rows
    ]
    size = settings.BATCH_COMMIT_SIZE
    with connection.cursor() as cursor:
        for i in range(0, len(params), size):
            cursor.executemany(_upsert_sql(), params[i:i + size])
    return len(params)
