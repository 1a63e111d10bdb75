"""Validation rules for candles as they arrive. Pure functions: no ORM, no clock (now is passed).

A kline row here is the source's storage tuple:
(open_ms, open, high, low, close, volume, close_ms, quote_volume, trades, taker_base, taker_quote)
with decimal strings as the exchange sent them.
"""

import re
from decimal import Decimal

NUMBER = re.compile(r"-?\d{1,28}(\.\d{1,8})?")  # what fits the exact decimal columns
DECIMAL_FIELDS = (1, 2, 3, 4, 5, 7, 9, 10)
RULES = {
    "not_numeric": "a price, volume or count is missing or not a decimal number",
    "high_below_open_close": "high < max(open, close)",
    "low_above_open_close": "low > min(open, close)",
    "negative_volume": "a volume or the trade count is negative",
    "misaligned_time": "open time is not on the interval's grid",
    "bad_close_time": "close time != open time + interval - 1 ms",
    "in_future": "the candle has not closed yet",
}


def _less(a: str, b: str) -> bool:
    """a < b for decimal strings; floats decide unless they cannot tell them apart."""
    fa, fb = float(a), float(b)
    return fa < fb if fa != fb else Decimal(a) < Decimal(b)


def kline_violation(row, *, step_ms: int, now_ms: int, full: bool = True) -> str | None:
    """The first rule `row` breaks, or None. With full=False only what storage needs is checked."""
    number = NUMBER.fullmatch
    if not all(isinstance(row[i], str) and number(row[i]) for i in DECIMAL_FIELDS) \
            or not isinstance(row[8], int):
        return "not_numeric"
    if not full:
        return None
    open_ms, o, h, l, c = row[0], row[1], row[2], row[3], row[4]
    if _less(h, o) or _less(h, c):
        return "high_below_open_close"
    if _less(o, l) or _less(c, l):
        return "low_above_open_close"
    if row[8] < 0 or any(row[i].startswith("-") for i in (5, 7, 9, 10)):
        return "negative_volume"
    if open_ms % step_ms:
        return "misaligned_time"
    if row[6] != open_ms + step_ms - 1:
        return "bad_close_time"
    if open_ms + step_ms > now_ms:
        return "in_future"
    return None


def split_valid(rows, *, step_ms: int, now_ms: int, full: bool = True):
    """(rows to store, [(row, rule), ...] to quarantine)."""
    valid, invalid = [], []
    for row in rows:
        rule = kline_violation(row, step_ms=step_ms, now_ms=now_ms, full=full)
        if rule is None:
            valid.append(row)
        else:
            invalid.append((row, rule))
    return valid, invalid


FIELDS = ("open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
          "taker_buy_base_volume", "taker_buy_quote_volume")


def compare_stored(rows, stored: dict) -> tuple[int, list[tuple[int, dict]]]:
    """Rows that already exist: (how many are identical, [(open_ms, {field: [old, new]})]).

    `stored` maps open_ms to the stored values in FIELDS order (decimals, ms, ints)."""
    duplicates, revisions = 0, []
    for row in rows:
        old = stored.get(row[0])
        if old is None:
            continue
        new = (row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10])
        changed = {}
        for name, before, after in zip(FIELDS, old, new):
            same = before == after if isinstance(after, int) else Decimal(before) == Decimal(after)
            if not same:
                changed[name] = [format(before, "f") if isinstance(before, Decimal) else str(before), str(after)]
        if changed:
            revisions.append((row[0], changed))
        else:
            duplicates += 1
    return duplicates, revisions
