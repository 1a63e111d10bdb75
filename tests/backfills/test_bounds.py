"""Bounded work per request: a backfill plan is counted, not built, and a too large one is
refused before anything big exists; chunks are only materialised for an accepted job."""

import time
import tracemalloc
from datetime import date, datetime, timedelta, timezone

import pytest
from django.urls import reverse

from backfills import services
from backfills.models import BackfillChunk, BackfillJob
from collectors import storage
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
HOUR_MS = 3_600_000


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def ms(moment):
    return int(moment.timestamp() * 1000)


def store_hours(collector, symbol, hours):
    """Store hourly candles at these hour offsets from 2024-01-01 (constant prices)."""
    base = ms(utc(2024, 1, 1))
    rows = [(base + h * HOUR_MS, "1.0", "1.0", "1.0", "1.0", "1.0", base + (h + 1) * HOUR_MS - 1,
             "1.0", 1, "0.5", "0.5") for h in hours]
    storage.upsert_candles(collector_id=collector.pk, symbol=symbol, interval="1h", rows=rows)


def test_the_estimate_of_500_symbols_x_50_years_of_1s_candles_is_a_fast_400_with_flat_memory(api):
    symbols = [f"S{i:03d}USDT" for i in range(500)]
    CollectorFactory(slug="secs", config={"base_url": "http://127.0.0.1:9", "interval": "1s"},
                     symbols=symbols, beginning_date=date(1975, 1, 1))
    body = {"collector": "secs", "start_date": "1975-01-01", "end_date": "2024-12-31"}
    for url in ("/api/admin/backfills/estimate/", "/api/admin/backfills/"):
        tracemalloc.start()
        began = time.perf_counter()
        response = api.post(url, body, format="json")
        elapsed = time.perf_counter() - began
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert response.status_code == 400, response.content
        message = response.json()["start_date"][0]
        assert "S000USDT alone needs 157,793 chunks" in message and "50,000" in message
        assert "BACKFILL_MAX_CHUNKS" in message and "Narrow the range" in message
        # Before the fix: ~1.8 GB and minutes (a killed worker). Bounds kept generous on purpose.
        assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MB"
        assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert BackfillJob.objects.count() == 0 and BackfillChunk.objects.count() == 0


def test_many_symbols_over_the_chunk_limit_are_refused_naming_symbols(api, settings):
    settings.BACKFILL_BATCH_SIZE = 2000  # 2000 hours: 5 chunks per symbol for 2024
    settings.BACKFILL_MAX_CHUNKS = 12
    CollectorFactory(slug="h", symbols=["AUSDT", "BUSDT", "CUSDT"])
    body = {"collector": "h", "start_date": "2024-01-01", "end_date": "2024-12-31"}
    two = api.post("/api/admin/backfills/estimate/", {**body, "symbols": ["AUSDT", "BUSDT"]}, format="json")
    assert two.status_code == 200 and two.json()["chunks"] == 10
    for url in ("/api/admin/backfills/estimate/", "/api/admin/backfills/"):
        response = api.post(url, body, format="json")
        assert response.status_code == 400, response.content
        message = response.json()["symbols"][0]
        assert "the first 3 of the 3 symbols already need 15 chunks" in message
        assert "at most 12 chunks" in message and "fewer symbols" in message
    assert BackfillJob.objects.count() == 0


def test_the_admin_form_names_the_field_of_a_too_large_backfill(operator, settings):
    settings.BACKFILL_MAX_CHUNKS = 3
    collector = CollectorFactory(symbols=["BTCUSDT"], beginning_date=date(2020, 1, 1))
    page = operator.post(reverse("admin:backfills_backfilljob_add"),
                         {"collector": collector.pk, "start_date": "2020-01-01", "end_date": "2024-12-31",
                          "symbols": "", "_start": "1"}).content.decode()
    assert "BTCUSDT alone needs 5 chunks" in page and BackfillJob.objects.count() == 0


@pytest.mark.parametrize("batch", [1000, 2000, 10_000])
def test_counted_totals_equal_the_chunks_that_are_built(batch, settings):
    settings.BACKFILL_BATCH_SIZE = batch
    collector = CollectorFactory(config={"base_url": "http://127.0.0.1:9", "interval": "1h"})
    span, grain = services._chunk_span(collector), collector.grain
    ranges = [(utc(2024, 1, 1), utc(2024, 1, 1, 1)), (utc(2024, 1, 3), utc(2024, 4, 19, 5)),
              (utc(2024, 5, 1), utc(2024, 5, 1) + span), (utc(2024, 6, 1), utc(2024, 6, 1) + 3 * span),
              (utc(2024, 9, 1, 0, 30), utc(2025, 2, 1, 2, 15))]  # one not on the hour grid
    built = list(services._plan_chunks(collector, "X", ranges))
    assert services._plan_totals(ranges, span=span, grain=grain, page=collector.source_class.page_size) == (
        len(built), sum(c["records"] for c in built), sum(c["requests"] for c in built))


def test_a_symbol_with_many_holes_lists_the_first_hundred_and_counts_them_all(api, settings):
    collector = CollectorFactory(slug="holes", symbols=["BTCUSDT"], beginning_date=date(2024, 1, 1))
    store_hours(collector, "BTCUSDT", range(0, 300, 2))  # a hole after every stored hour
    estimate = api.post("/api/admin/backfills/estimate/", {
        "collector": "holes", "start_date": "2024-01-01", "end_date": "2024-01-13"}, format="json").json()
    (row,) = estimate["symbols"]
    assert row["missing_ranges_total"] == 149 + 1  # odd hours 1-297, then hours 299-311
    assert len(row["missing_ranges"]) == services.MISSING_RANGES_SHOWN == 100
    assert row["missing_ranges"][0] == {"start": "2024-01-01T01:00:00Z", "end": "2024-01-01T02:00:00Z"}
    assert row["records"] == estimate["estimated_records"] == 13 * 24 - 150
    assert row["chunks"] == estimate["chunks"] == 150


def test_an_accepted_job_gets_every_planned_chunk_inserted_in_batches(settings, monkeypatch):
    settings.BACKFILL_BATCH_SIZE = 1000
    monkeypatch.setattr(services, "CREATE_BATCH", 7)
    collector = CollectorFactory(symbols=["BTCUSDT", "ETHUSDT"], beginning_date=date(2024, 1, 1))
    store_hours(collector, "ETHUSDT", range(24 * 10, 24 * 20))  # 10 days stored: two ranges
    job, estimate = services.backfill_create(collector=collector, start=utc(2024, 1, 1),
                                             end=utc(2024, 12, 31, 23, 59, 59), created_by="t")
    chunks = list(job.chunks.order_by("symbol", "start").values_list("symbol", "start", "end"))
    assert len(chunks) == estimate["chunks"] == 9 + 1 + 9  # 8,784 hours; ETH: 240 + 8,304 hours
    assert sum(job.chunks.values_list("estimated_records", flat=True)) == estimate["estimated_records"]
    eth = [c[1:] for c in chunks if c[0] == "ETHUSDT"]
    assert eth[0] == (utc(2024, 1, 1), utc(2024, 1, 11)) and eth[1][0] == utc(2024, 1, 21)
    assert all(end - start <= timedelta(hours=1000) for _, start, end in chunks)


def test_the_gaps_report_lists_at_most_a_thousand_ranges_per_symbol_and_counts_them_all(api, monkeypatch):
    monkeypatch.setattr(services, "GAPS_RANGES_SHOWN", 40)
    collector = CollectorFactory(slug="gappy", symbols=["BTCUSDT"], beginning_date=date(2024, 1, 1))
    store_hours(collector, "BTCUSDT", range(0, 300, 2))
    (row,) = api.get("/api/admin/gaps/?collector=gappy&start=2024-01-01&end=2024-01-13").json()["symbols"]
    assert len(row["missing"]) == 40 and row["missing_ranges_total"] == 150
    assert row["missing_candles"] == 13 * 24 - 150 and row["no_data"] == [] and row["no_data_ranges_total"] == 0
