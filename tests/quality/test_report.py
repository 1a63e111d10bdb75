"""The data-quality report, computed on the real database from what the engine stored."""

from datetime import date, datetime, timezone

import pytest

from collectors import services
from collectors.models import Candle
from tests.factories import CollectorFactory
from tests.quality.conftest import ms, utc

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 1, 0, 0, 30, tzinfo=timezone.utc)  # the report's window ends 2025-03-01 00:00


@pytest.fixture
def collector(emulator):
    collector = CollectorFactory(slug="q", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT"], beginning_date=date(2025, 2, 20))
    return collector


def collect(collector):
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               end=utc(2025, 2, 28, 23, 59, 59))
    services.run_start(run_id=run.pk, inline=True)


def report(api, **params):
    query = "&".join(f"{k}={v}" for k, v in {"collector": "q", **params}.items())
    response = api.get(f"/api/admin/data-quality/?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_completeness_is_exactly_one_across_an_outage_and_drops_exactly_when_rows_go(api, emulator, collector,
                                                                                    monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)  # the whole test lives at NOW
    emulator.configure(outages=[[ms(utc(2025, 2, 24, 3)), ms(utc(2025, 2, 24, 8))]])
    collect(collector)
    body = report(api)
    btc = {s["symbol"]: s for s in body["symbols"]}["BTCUSDT"]
    assert (btc["records"], btc["expected"], btc["no_data_records"]) == (9 * 24 - 5, 9 * 24 - 5, 5)
    assert btc["completeness_ratio"] == 1.0 and body["completeness_ratio"] == 1.0
    assert btc["gaps"] == 0 and btc["freshness_seconds"] == 30 and btc["is_fresh"]
    Candle.objects.filter(symbol="BTCUSDT", open_time__gte=utc(2025, 2, 26), open_time__lt=utc(2025, 2, 26, 4)).delete()
    Candle.objects.filter(symbol="BTCUSDT", open_time=utc(2025, 2, 21, 9)).delete()
    btc = {s["symbol"]: s for s in report(api)["symbols"]}["BTCUSDT"]
    assert btc["records"] == 211 - 5 and btc["completeness_ratio"] == round((211 - 5) / 211, 6)
    assert (btc["gaps"], btc["missing_records"]) == (2, 5)
    assert report(api)["completeness_ratio"] == round((2 * 211 - 5) / (2 * 211), 6)


def test_quarantined_rows_are_counted_exactly_in_the_report(api, emulator, collector, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)  # the whole test lives at NOW
    emulator.configure(invalid_rows={f"ETHUSDT:{ms(utc(2025, 2, 22, 5))}": "high_below_low",
                                     f"ETHUSDT:{ms(utc(2025, 2, 23, 6))}": "negative_volume",
                                     f"BTCUSDT:{ms(utc(2025, 2, 25, 7))}": "negative_volume"})
    collect(collector)
    body = report(api)
    assert (body["total_records"], body["valid_records"], body["invalid_records"]) == (432, 429, 3)
    assert body["data_quality_score"] == round(100 * 429 / 432, 2)
    assert body["validation_errors"][0].startswith("negative_volume:") and body["validation_errors"][0].endswith("(2)")
    eth = report(api, symbol="ETHUSDT")
    assert [s["symbol"] for s in eth["symbols"]] == ["ETHUSDT"]
    assert (eth["symbols"][0]["invalid_records"], eth["symbols"][0]["missing_records"]) == (2, 2)
    assert api.get("/api/admin/data-quality/?collector=nope").status_code == 400
