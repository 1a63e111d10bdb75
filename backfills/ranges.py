"""Pure range arithmetic on half-open [start, end) ranges. No ORM, no clock."""

from datetime import datetime, timedelta


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
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return moment - (moment - epoch) % step


def ceil_time(moment: datetime, step: timedelta) -> datetime:
    floored = floor_time(moment, step)
    return floored if floored == moment else floored + step


def slots(ranges, step: timedelta) -> int:
    """How many `step`-long slots (candles) the ranges hold."""
    return int(sum((end - start).total_seconds() for start, end in ranges) // step.total_seconds())
