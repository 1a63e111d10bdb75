"""Missing ranges computed in the database with window functions (SQLite and MySQL/MariaDB)."""

from datetime import datetime, timedelta, timezone

from django.db import connection


def _epoch_seconds(column: str) -> str:
    if connection.vendor == "sqlite":
        return f"CAST(strftime('%%s', {column}) AS INTEGER)"
    if connection.vendor == "mysql":
        return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column})"
    return f"CAST(EXTRACT(EPOCH FROM {column}) AS BIGINT)"


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


def stored_gaps(*, collector_id: int, symbol: str, series: str, start: datetime, end: datetime,
                step: timedelta) -> list[tuple[datetime, datetime]]:
    """Ranges in [start, end) with no stored candle, without loading every timestamp."""
    if start >= end:
        return []
    epoch = _epoch_seconds("open_time")
    sql = f"""
        SELECT t, nxt, rn FROM (
            SELECT {epoch} AS t,
                   LEAD({epoch}) OVER (ORDER BY open_time) AS nxt,
                   ROW_NUMBER() OVER (ORDER BY open_time) AS rn
            FROM collectors_candle
            WHERE collector_id = %s AND symbol = %s AND `interval` = %s
              AND open_time >= %s AND open_time < %s
        ) w
        WHERE rn = 1 OR nxt IS NULL OR nxt - t > %s
        ORDER BY t
    """
    if connection.vendor != "mysql":
        sql = sql.replace("`interval`", '"interval"')
    adapt = connection.ops.adapt_datetimefield_value
    step_s = int(step.total_seconds())
    with connection.cursor() as cursor:
        cursor.execute(sql, [collector_id, symbol, series, adapt(start), adapt(end), step_s])
        rows = cursor.fetchall()
    if not rows:
        return [(start, end)]
    gaps = []
    first = _from_epoch(rows[0][0])
    if first > start:
        gaps.append((start, first))
    for t, nxt, _ in rows:
        after = _from_epoch(t) + step
        until = _from_epoch(nxt) if nxt is not None else end
        if after < until:
            gaps.append((after, until))
    return gaps


def last_stored(*, collector_id: int, symbol: str, series: str) -> datetime | None:
    from collectors.models import Candle

    return (Candle.objects.filter(collector_id=collector_id, symbol=symbol, interval=series)
            .order_by("-open_time").values_list("open_time", flat=True).first())
