"""Missing ranges computed in the database with window functions (SQLite and MySQL/MariaDB)."""

import sqlite3
from datetime import datetime, timedelta, timezone

from django.db import connection

from backfills.models import EmptyRange
from collectors.models import Candle
from collectors.times import subtract


def _epoch_seconds(column: str) -> str:
    if connection.vendor == "sqlite":
        # unixepoch() (SQLite 3.38+) is twice as fast as strftime('%s') over millions of rows.
        if sqlite3.sqlite_version_info >= (3, 38):
            return f"unixepoch({column})"
        return f"CAST(strftime('%%s', {column}) AS INTEGER)"
    if connection.vendor == "mysql":
        return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column})"
    return f"CAST(EXTRACT(EPOCH FROM {column}) AS BIGINT)"


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


def stored_gaps(*, collector_id: int, symbol: str, series: str, start: datetime, end: datetime,
                step: timedelta) -> list[tuple[datetime, datetime]]:
    """Ranges in [start, end) with no stored candle, without loading every timestamp.

    One window function (LEAD) over the unique index returns only the rows followed by a
    hole (or by nothing); the first stored row comes from an index seek. Measured on 10
    million rows (make bench-gaps): see the README.
    """
    if start >= end:
        return []
    rows = Candle.objects.filter(collector_id=collector_id, symbol=symbol, interval=series,
                                 open_time__gte=start, open_time__lt=end)
    first = rows.order_by("open_time").values_list("open_time", flat=True).first()
    if first is None:
        return [(start, end)]
    epoch = _epoch_seconds("open_time")
    quote = "`" if connection.vendor == "mysql" else '"'
    sql = f"""
        SELECT t, nxt FROM (
            SELECT {epoch} AS t, LEAD({epoch}) OVER (ORDER BY open_time) AS nxt
            FROM collectors_candle
            WHERE collector_id = %s AND symbol = %s AND {quote}interval{quote} = %s
              AND open_time >= %s AND open_time < %s
        ) w
        WHERE nxt IS NULL OR nxt - t > %s
        ORDER BY t
    """
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [collector_id, symbol, series, adapt(start), adapt(end),
                             int(step.total_seconds())])
        breaks = cursor.fetchall()
    gaps = [(start, first)] if first > start else []
    for t, nxt in breaks:
        after = _from_epoch(t) + step
        until = _from_epoch(nxt) if nxt is not None else end
        if after < until:
            gaps.append((after, until))
    return gaps


def coverage(*, collector, symbol: str, start: datetime, end: datetime):
    """(missing, no_data) in [start, end): holes in the database, minus the ranges the source
    answered empty (the ledger), and those ranges themselves."""
    series = collector.series
    no_data = EmptyRange.ranges(collector_id=collector.pk, symbol=symbol, series=series, start=start, end=end)
    gaps = stored_gaps(collector_id=collector.pk, symbol=symbol, series=series, start=start, end=end,
                       step=collector.grain)
    return subtract(gaps, no_data), no_data


def last_stored(*, collector_id: int, symbol: str, series: str) -> datetime | None:
    return (Candle.objects.filter(collector_id=collector_id, symbol=symbol, interval=series)
            .order_by("-open_time").values_list("open_time", flat=True).first())
