"""The coverage grid: stored vs expected per symbol and day, no-data apart, quarantine marked."""

from datetime import date, datetime, timezone

import pytest

from collectors import services
from collectors.models import Candle
from quality.services import coverage_day, coverage_grid
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 5, 12, 0, 30, tzinfo=timezone.utc)


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def ms(moment):
    return int(moment.timestamp() * 1000)


@pytest.fixture
def collector(emulator, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    emulator.configure(outages=[[ms(utc(2025, 3, 2, 3)), ms(utc(2025, 3, 2, 8))]],
                       symbols=["BTCUSDT", "NEWUSDT"], listings={"NEWUSDT": ms(utc(2025, 3, 3, 12))},
                       invalid_rows={f"BTCUSDT:{ms(utc(2025, 3, 4, 1))}": "negative_volume"})
    collector = CollectorFactory(slug="c", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "NEWUSDT"], beginning_date=date(2025, 3, 1))
    run = services.run_trigger(collector=collector, mode="forward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    Candle.objects.filter(symbol="BTCUSDT", open_time__gte=utc(2025, 3, 3, 10),
                          open_time__lt=utc(2025, 3, 3, 14)).delete()
    return collector


def test_each_cell_counts_stored_expected_no_data_and_quarantined(collector):
    grid = coverage_grid(collector=collector, first_day=date(2025, 2, 28), last_day=date(2025, 3, 6))
    assert grid["days"][0] == date(2025, 2, 28) and len(grid["days"]) == 7
    cells = dict(grid["rows"])
    # (stored, expected, no_data, quarantined): before the beginning date nothing is expected,
    # the outage is no data, deleted rows are missing, today counts closed hours only.
    assert cells["BTCUSDT"] == [(0, 0, 0, 0), (24, 24, 0, 0), (19, 19, 5, 0), (20, 24, 0, 0),
                                (23, 24, 0, 1), (12, 12, 0, 0), (0, 0, 0, 0)]
    assert cells["NEWUSDT"] == [(0, 0, 0, 0), (0, 0, 24, 0), (0, 0, 24, 0), (12, 12, 12, 0),
                                (24, 24, 0, 0), (12, 12, 0, 0), (0, 0, 0, 0)]


def test_a_day_in_detail_lists_its_gaps_no_data_and_quarantined_rows(collector):
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 3))
    assert day["missing"] == [(utc(2025, 3, 3, 10), utc(2025, 3, 3, 14))] and day["missing_slots"] == 4
    assert (day["stored"], day["expected"]) == (20, 24)
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 4))
    assert day["missing"] == [(utc(2025, 3, 4, 1), utc(2025, 3, 4, 2))]  # the quarantined hour
    assert day["quarantined_count"] == 1 and day["quarantined"][0].rule == "negative_volume"
    day = coverage_day(collector=collector, symbol="BTCUSDT", day=date(2025, 3, 2))
    assert day["no_data"] == [(utc(2025, 3, 2, 3), utc(2025, 3, 2, 8))] and day["missing"] == []
