from datetime import datetime, timedelta, timezone

from collectors.times import absent, ceil_time, floor_time, merge, subtract

H = timedelta(hours=1)
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def t(hours):
    return T0 + hours * H


def test_merge_joins_overlapping_and_touching_ranges_and_drops_empty_ones():
    assert merge([(5, 7), (1, 3), (3, 4), (6, 9), (10, 10)]) == [(1, 4), (5, 9)]


def test_subtract_cuts_holes_out_of_ranges():
    assert subtract([(0, 10)], [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]


def test_subtract_of_a_covering_hole_leaves_nothing():
    assert subtract([(2, 4), (6, 8)], [(0, 10)]) == []


def test_subtract_with_holes_outside_the_range_keeps_it_whole():
    assert subtract([(t(2), t(4))], [(t(0), t(1)), (t(5), t(9))]) == [(t(2), t(4))]


def test_absent_finds_leading_inner_and_trailing_holes_on_the_grid():
    assert absent(0, 10, [2, 3, 6], 1) == [(0, 2), (4, 6), (7, 10)]


def test_absent_of_a_full_page_is_empty():
    assert absent(0, 3, [0, 1, 2], 1) == []


def test_floor_and_ceil_align_to_the_interval_since_the_epoch():
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert floor_time(moment, H) == datetime(2025, 3, 4, 5, tzinfo=timezone.utc)
    assert ceil_time(moment, H) == datetime(2025, 3, 4, 6, tzinfo=timezone.utc)
    assert ceil_time(t(3), H) == t(3)
    assert floor_time(moment, timedelta(days=1)) == datetime(2025, 3, 4, tzinfo=timezone.utc)
