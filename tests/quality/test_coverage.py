"""The coverage grid: stored vs expected per symbol and day, no-data apart, quarantine marked."""

from datetime import date

import pytest

from collectors.storage import upsert_candles
from quality import services
from quality.services import coverage_day, coverage_grid
from tests.factories import CollectorFactory
from tests.quality.conftest import utc

pytestmark = pytest.mark.django_db


def test_each_cell_counts_stored_expected_no_data_and_quarantined(covered):
    collector = covered
    grid = coverage_grid(collector=collector, first_day=date(2025, 2, 28), last_day=date(2025, 3, 6))
    assert grid["days"][0] == date(2025, 2, 28) and len(grid["days"]) == 7
    cells = dict(grid["rows"])
    # (stored, expected, no_data, quarantined): before the beginning date nothing is expected,
    # the outage is no data, deleted rows are missing, today counts closed hours only.
    assert cells["BTCUSDT"] == [(0, 0, 0, 0), (24, 24, 0, 0), (19, 19, 5, 0), (20, 24, 0, 0),
                                (23, 24, 0, 1), (12, 12, 0, 0), (0, 0, 0, 0)]
    assert cells["NEWUSDT"] == [(0, 0, 0, 0), (0, 0, 24, 0), (0, 0, 24, 0), (12, 12, 12, 0),
                                (24, 24, 0, 0), (12, 12, 0, 0), (0, 0, 0, 0)]


def test_a_day_in_detail_lists_its_gaps_no_data_and_quarantined_rows(covered):
    collector = covered
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 3))
    assert day["missing"] == [(utc(2025, 3, 3, 10), utc(2025, 3, 3, 14))] and day["missing_slots"] == 4
    assert (day["stored"], day["expected"]) == (20, 24)
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 4))
    assert day["missing"] == [(utc(2025, 3, 4, 1), utc(2025, 3, 4, 2))]  # the quarantined hour
    assert day["quarantined_count"] == 1 and day["quarantined"][0].rule == "negative_volume"
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 2))
    assert day["no_data"] == [(utc(2025, 3, 2, 3), utc(2025, 3, 2, 8))] and day["missing"] == []


@pytest.mark.django_db(transaction=True)
def test_many_symbols_are_counted_on_several_connections_with_the_same_result(monkeypatch):
    names = [f"S{i:02d}USDT" for i in range(20)]
    collector = CollectorFactory(slug="many", config={"interval": "1h"}, symbols=names,
                                 beginning_date=date(2025, 1, 1))
    h = 3_600_000
    t0 = int(utc(2025, 1, 1).timestamp() * 1000)
    for k, name in enumerate(names):  # symbol k has k + 1 candles on 2025-01-02
        rows = [(t0 + (24 + i) * h, "1", "1", "1", "1", "1", t0 + (25 + i) * h - 1, "1", 1, "1", "1")
                for i in range(k + 1)]
        upsert_candles(collector_id=collector.pk, symbol=name, interval="1h", rows=rows)
    kwargs = dict(collector=collector, first_day=date(2025, 1, 1), last_day=date(2025, 1, 3),
                  now=utc(2025, 2, 1))
    parallel = services.coverage_grid(**kwargs)
    monkeypatch.setattr(services, "DAY_COUNT_THREADS", 1)
    assert parallel == services.coverage_grid(**kwargs)
    assert [cells[1][0] for _, cells in parallel["rows"]] == list(range(1, 21))
