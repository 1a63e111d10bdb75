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
    "missing_field": "a required field is missing",
    "not_numeric": "a price, volume or count is missing or not a decimal number",
    "high_below_open_close": "high < max(open, close)",
    "low_above_open_close": "low > min(open, close)",
    "negative_volume": "a volume or the trade count is negative",
    "misaligned_time": "open time is not on the interval's grid",
    "bad_close_time": "close time != open time + interval - 1 ms",
    "in_future": "the candle has not closed yet",
}


_PAGE_OF_NUMBERS = re.compile(r"(?:-?\d{1,28}(?:\.\d{1,8})?\x00)*")


def _numeric(row) -> bool:
    number = NUMBER.fullmatch
    return all(isinstance(row[i], str) and number(row[i]) for i in DECIMAL_FIELDS) \
        and type(row[8]) is int


def _all_numeric(rows) -> bool:
    """One regex pass over the whole page (~10x faster than a match per field)."""
    try:
        text = "\x00".join(v for r in rows for v in (r[1], r[2], r[3], r[4], r[5], r[7], r[9], r[10]))
    except TypeError:  # a None or a number where a decimal string belongs
        return False
    return _PAGE_OF_NUMBERS.fullmatch(text + "\x00") is not None and all(type(r[8]) is int for r in rows)


def _lt(a: str, fa: float, b: str, fb: float) -> bool:
    """a < b: floats decide unless equal; equal floats of different strings go to Decimal."""
    return fa < fb or (fa == fb and a != b and Decimal(a) < Decimal(b))


def _broken_rules(row, step_ms: int, now_ms: int):
    """Every semantic rule `row` breaks, in RULES order (a generator: the hot path takes one)."""
    open_ms, o, h, low, c = row[0], row[1], row[2], row[3], row[4]
    fo, fh, fl, fc = float(o), float(h), float(low), float(c)  # once per row: the hot path
    if _lt(h, fh, o, fo) or _lt(h, fh, c, fc):
        yield "high_below_open_close"
    if _lt(o, fo, low, fl) or _lt(c, fc, low, fl):
        yield "low_above_open_close"
    if row[8] < 0 or row[5][0] == "-" or row[7][0] == "-" or row[9][0] == "-" or row[10][0] == "-":
        yield "negative_volume"
    if open_ms % step_ms:
        yield "misaligned_time"
    if row[6] != open_ms + step_ms - 1:
        yield "bad_close_time"
    if open_ms + step_ms > now_ms:
        yield "in_future"


def _semantic_violation(row, step_ms: int, now_ms: int) -> str | None:
    return next(_broken_rules(row, step_ms, now_ms), None)


def kline_violation(row, *, step_ms: int, now_ms: int, full: bool = True) -> str | None:
    """The first rule `row` breaks, or None. With full=False only what storage needs is checked."""
    if not _numeric(row):
        return "not_numeric"
    return _semantic_violation(row, step_ms, now_ms) if full else None


def kline_violations(row, *, step_ms: int, now_ms: int, full: bool = True) -> list[str]:
    """Every rule `row` breaks (for reports; ingest stops at the first)."""
    if not _numeric(row):
        return ["not_numeric"]
    return list(_broken_rules(row, step_ms, now_ms)) if full else []


def split_valid(rows, *, step_ms: int, now_ms: int, full: bool = True):
    """(rows to store, [(row, rule), ...] to quarantine)."""
    numbers_checked = _all_numeric(rows)
    valid, invalid = [], []
    for row in rows:
        if not numbers_checked and not _numeric(row):
            rule = "not_numeric"
        else:
            rule = _semantic_violation(row, step_ms, now_ms) if full else None
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
        for name, before, after in zip(FIELDS, old, new, strict=False):
            same = before == after if isinstance(after, int) else Decimal(before) == Decimal(after)
            if not same:
                changed[name] = [format(before, "f") if isinstance(before, Decimal) else str(before), str(after)]
        if changed:
            revisions.append((row[0], changed))
        else:
            duplicates += 1
    return duplicates, revisions


# A record as a user may send it to validate-data: the exchange's kline array, or an object.
RECORD_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                 "trades", "taker_buy_base_volume", "taker_buy_quote_volume")
_INT_FIELDS = {"open_time", "close_time", "trades"}


def record_to_kline(record) -> tuple[tuple | None, list[tuple[str, str, str]]]:
    """(kline row, []) or (None, [(field, rule, message), ...]) for an array or an object of
    RECORD_FIELDS.

    Times are epoch milliseconds; decimals may be strings or JSON numbers."""
    if isinstance(record, list):
        if len(record) < 11:
            name = RECORD_FIELDS[len(record)]
            return None, [(name, "missing_field", f"Missing required field: {name} "
                           "(a kline array has at least 11 values).")]
        record = dict(zip(RECORD_FIELDS, record, strict=False))
    if not isinstance(record, dict):
        return None, [("record", "not_numeric", "Expected a kline array or an object.")]
    errors, row = [], []
    for name in RECORD_FIELDS:
        value = record.get(name)
        if value is None:
            errors.append((name, "missing_field", f"Missing required field: {name}"))
        elif name in _INT_FIELDS:
            if type(value) is not int:
                unit = "" if name == "trades" else " (epoch milliseconds)"
                errors.append((name, "not_numeric", f"{name} must be an integer{unit}."))
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            errors.append((name, "not_numeric", f"{name} must be a decimal number."))
        elif not isinstance(value, str):
            value = repr(value)
        row.append(value)
    return (None, errors) if errors else (tuple(row), [])
