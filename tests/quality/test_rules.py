"""The ingest rules, as pure functions (no database)."""

import pytest

from quality.rules import kline_violation, split_valid

H = 3_600_000
T = 1_735_689_600_000  # 2025-01-01T00:00Z
NOW = T + 10 * H


def row(**changes):
    base = {"open_ms": T, "o": "100.00000000", "h": "110.00000000", "l": "90.00000000", "c": "105.00000000",
            "v": "12.50000000", "close_ms": T + H - 1, "qv": "1300.00000000", "n": 42, "tb": "6.00000000",
            "tq": "600.00000000"}
    base.update(changes)
    return tuple(base.values())


@pytest.mark.parametrize("changes, rule", [
    ({}, None),
    ({"h": "104.99999999"}, "high_below_open_close"),
    ({"h": "99.00000000", "c": "95.00000000"}, "high_below_open_close"),
    ({"l": "100.00000001"}, "low_above_open_close"),
    ({"v": "-0.00000001"}, "negative_volume"),
    ({"n": -1}, "negative_volume"),
    ({"tq": "-5"}, "negative_volume"),
    ({"open_ms": T + 1234, "close_ms": T + 1234 + H - 1}, "misaligned_time"),
    ({"close_ms": T + H}, "bad_close_time"),
    ({"open_ms": NOW, "close_ms": NOW + H - 1}, "in_future"),
    ({"o": "abc"}, "not_numeric"),
    ({"v": None}, "not_numeric"),
    ({"n": "42"}, "not_numeric"),
    ({"h": "1e5"}, "not_numeric"),
])
def test_each_rule_names_what_it_found(changes, rule):
    assert kline_violation(row(**changes), step_ms=H, now_ms=NOW) == rule


def test_equal_prices_are_valid_even_where_floats_cannot_tell_digits_apart():
    big = "12345678901234.12345678"
    assert kline_violation(row(o=big, h=big, l=big, c=big), step_ms=H, now_ms=NOW) is None
    assert kline_violation(row(o=big, h="12345678901234.12345677", l="1", c="1"), step_ms=H,
                           now_ms=NOW) == "high_below_open_close"


def test_with_rules_off_only_what_storage_needs_is_checked():
    assert kline_violation(row(h="1.00000000"), step_ms=H, now_ms=NOW, full=False) is None
    assert kline_violation(row(o="abc"), step_ms=H, now_ms=NOW, full=False) == "not_numeric"


def test_split_valid_keeps_order_and_pairs_each_bad_row_with_its_rule():
    rows = [row(), row(v="-1"), row(open_ms=T + H, close_ms=T + 2 * H - 1)]
    valid, invalid = split_valid(rows, step_ms=H, now_ms=NOW)
    assert valid == [rows[0], rows[2]] and invalid == [(rows[1], "negative_volume")]
