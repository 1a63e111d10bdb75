"""Time and range helpers: aware UTC datetimes, milliseconds since the epoch, half-open
[start, end) ranges on a grid. A leaf: no ORM, no settings, no clock (`now` is passed in)."""

from datetime import date, datetime, time, timedelta, timezone

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The span any time we accept or store lies in: from the epoch (exchanges count from it) to
# before 2100 (past that a date is a typo, and some databases' datetimes end soon after).
EARLIEST = EPOCH
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def utc_from_ms(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ms_from_utc(moment: datetime) -> int:
    """An aware datetime as milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


def midnight(day: date) -> datetime:
    """The start of a UTC day."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_start(moment: datetime) -> datetime:
    """The start of the UTC day `moment` falls in."""
    return midnight(moment.astimezone(UTC).date())


def iso(moment: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with a Z, as every answer writes times; None stays None."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def iso_ranges(ranges) -> list[dict]:
    """Ranges as [{"start", "end"}] in ISO 8601, as answers and JSON fields hold them."""
    return [{"start": iso(s), "end": iso(e)} for s, e in ranges]


def merge(ranges):
    """Sorted, non-overlapping ranges covering the same points (adjacent ones joined)."""
    out = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract(ranges, holes):
    """The parts of `ranges` not covered by `holes`."""
    holes = merge(holes)
    out = []
    for start, end in merge(ranges):
        cursor = start
        for h_start, h_end in holes:
            if h_end <= cursor or h_start >= end:
                continue
            if h_start > cursor:
                out.append((cursor, h_start))
            cursor = max(cursor, h_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


def absent(start, end, times, step):
    """Ranges inside [start, end) where no time of the sorted `times` grid points fall."""
    out = []
    cursor = start
    for t in times:
        if t > cursor:
            out.append((cursor, t))
        cursor = t + step
    if cursor < end:
        out.append((cursor, end))
    return out


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """`moment` rounded down to a multiple of `step` since the epoch (UTC)."""
    epoch = EPOCH.replace(tzinfo=moment.tzinfo)  # naive in, naive out
    return moment - (moment - epoch) % step


def ceil_time(moment: datetime, step: timedelta) -> datetime:
    floored = floor_time(moment, step)
    return floored if floored == moment else floored + step


def slots(ranges, step: timedelta) -> int:
    """How many `step`-long slots (candles) the ranges hold."""
    return int(sum((end - start).total_seconds() for start, end in ranges) // step.total_seconds())
