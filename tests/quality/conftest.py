"""A collector whose coverage has every kind of cell (see `covered`)."""

from datetime import date, datetime, timezone

import pytest

from collectors import services
from collectors.models import Candle
from tests.factories import CollectorFactory

COVERED_NOW = datetime(2025, 3, 5, 12, 0, 30, tzinfo=timezone.utc)


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def ms(moment):
    return int(moment.timestamp() * 1000)


@pytest.fixture
def covered(emulator, monkeypatch):
    """Collector "c" at COVERED_NOW, from 2025-03-01: BTCUSDT with a 5-hour exchange outage on
    03-02, 4 hours deleted on 03-03 and a quarantined candle on 03-04; NEWUSDT listed 03-03 12:00."""
    monkeypatch.setattr("django.utils.timezone.now", lambda: COVERED_NOW)
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


