"""Backfills end to end through the API and the shared engine, against the emulator."""

from datetime import datetime, timezone

import pytest

from backfills import services
from backfills.models import BackfillChunk, BackfillJob, EmptyRange
from collectors import engine, services as collect
from collectors.emulator import kline
from collectors.models import Candle, CollectionRun
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
HOUR_MS = 3_600_000


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def ms(moment):
    return int(moment.timestamp() * 1000)


def klines_requests(emulator):
    return sum(emulator.stats()["klines_by_symbol"].values())


def run_inline(job_id):
    services.backfill_start(job_id=job_id, inline=True)
    return BackfillJob.objects.get(pk=job_id)


def stored_times(collector, symbol):
    return [ms(t) for t in Candle.objects.filter(collector=collector, symbol=symbol)
            .order_by("open_time").values_list("open_time", flat=True)]


@pytest.fixture
def collector(emulator, settings):
    settings.BACKFILL_BATCH_SIZE = 2000
    return CollectorFactory(slug="bf", config={"base_url": emulator.url, "interval": "1h"},
                            symbols=["BTCUSDT", "ETHUSDT", "NEWCOINUSDT"])


def test_a_half_present_range_fetches_only_the_missing_half_exactly_as_estimated(api, emulator, collector):
    collect.run_start(run_id=collect.run_trigger(
        collector=collector, mode="backward", start=utc(2024, 1, 1), end=utc(2024, 6, 30, 23),
        symbols=["BTCUSDT", "ETHUSDT"], triggered_by="tests", enqueue=False).pk, inline=True)
    body = {"collector": "bf", "start_date": "2024-01-01", "end_date": "2024-12-31",
            "symbols": ["BTCUSDT", "ETHUSDT"]}
    estimate = api.post("/api/admin/backfills/estimate/", body, format="json").json()
    half = (utc(2025, 1, 1) - utc(2024, 7, 1)).days * 24
    assert estimate["estimated_records"] == 2 * half
    assert [s["missing_ranges"] for s in estimate["symbols"]] == [
        [{"start": "2024-07-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}]] * 2
    assert BackfillJob.objects.count() == 0  # an estimate starts nothing
    emulator.reset_stats()
    created = api.post("/api/admin/backfills/", body, format="json")
    assert created.status_code == 202, created.content
    assert created.json()["estimated_records"] == estimate["estimated_records"]
    assert created.json()["end_date"] == "2024-12-31T23:59:59Z" and created.json()["end"] == "2025-01-01T00:00:00Z"
    job = run_inline(created.json()["backfill_id"])
    assert job.status == BackfillJob.COMPLETE
    assert job.progress()["records"] == estimate["estimated_records"]
    assert klines_requests(emulator) == estimate["estimated_requests"] == job.progress()["requests"]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert stored_times(collector, symbol) == list(range(ms(utc(2024, 1, 1)), ms(utc(2025, 1, 1)), HOUR_MS))
    row = Candle.objects.filter(symbol="ETHUSDT", open_time=utc(2024, 11, 5, 7)).get()
    assert format(row.close, "f") == kline("ETHUSDT", "1h", ms(row.open_time))[4]


def test_a_symbol_listed_mid_range_costs_one_request_for_the_empty_part_then_none(api, emulator, collector):
    body = {"collector": "bf", "start_date": "2024-01-01", "end_date": "2025-06-10",
            "symbols": ["NEWCOINUSDT"]}
    job = run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    listing = utc(2025, 6, 1)
    assert job.status == BackfillJob.COMPLETE
    assert klines_requests(emulator) == 1 + 1  # the listing probe, then one page of 240 candles
    assert job.chunks.filter(status="skipped").count() == job.chunks.count() - 1
    assert [(r.start, r.end) for r in EmptyRange.objects.all()] == [(utc(2024, 1, 1), listing)]
    emulator.reset_stats()
    again = run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    assert again.status == BackfillJob.COMPLETE and again.chunks.count() == 0
    assert klines_requests(emulator) == 0


def test_an_exchange_outage_is_not_requested_again_by_a_second_backfill(api, emulator, collector):
    emulator.configure(outages=[[ms(utc(2024, 3, 3)), ms(utc(2024, 3, 4, 12))]])
    body = {"collector": "bf", "start_date": "2024-03-01", "end_date": "2024-03-10", "symbols": ["BTCUSDT"]}
    run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    assert len(stored_times(collector, "BTCUSDT")) == 10 * 24 - 36
    emulator.reset_stats()
    estimate = api.post("/api/admin/backfills/estimate/", body, format="json").json()
    assert estimate["estimated_requests"] == 0
    job = run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    assert job.status == BackfillJob.COMPLETE and klines_requests(emulator) == 0


def test_force_refetches_and_overwrites_a_range_that_is_present(api, emulator, collector):
    body = {"collector": "bf", "start_date": "2024-03-01", "end_date": "2024-03-02", "symbols": ["BTCUSDT"]}
    run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    Candle.objects.filter(symbol="BTCUSDT", open_time=utc(2024, 3, 1, 5)).update(close="1.00000000")
    emulator.reset_stats()
    job = run_inline(api.post("/api/admin/backfills/", {**body, "force": True}, format="json").json()["backfill_id"])
    assert job.status == BackfillJob.COMPLETE and klines_requests(emulator) == 1
    row = Candle.objects.get(symbol="BTCUSDT", open_time=utc(2024, 3, 1, 5))
    assert format(row.close, "f") == kline("BTCUSDT", "1h", ms(utc(2024, 3, 1, 5)))[4]
    assert Candle.objects.count() == 48


def test_retry_failed_refetches_only_the_failed_chunks(api, emulator, collector):
    collector.max_retries = 0
    collector.save()
    body = {"collector": "bf", "start_date": "2024-01-01", "end_date": "2024-12-31", "symbols": ["BTCUSDT"]}
    job_id = api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"]
    real = engine.upsert_candles
    calls = []

    def fail_from_third_page(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            emulator.configure(error_rate=1.0)
        return real(**kwargs)

    engine.upsert_candles = fail_from_third_page
    try:
        job = run_inline(job_id)
    finally:
        engine.upsert_candles = real
    assert job.status == BackfillJob.PARTIAL
    done_before = dict(job.chunks.filter(status="complete").values_list("pk", "requests"))
    assert done_before and job.chunks.exclude(status="complete").exists()
    emulator.configure(error_rate=0.0)
    retried = api.post(f"/api/admin/backfills/{job_id}/retry-failed/")
    assert retried.status_code == 202 and retried.json()["chunks"] == job.chunks.exclude(status="complete").count()
    assert api.post(f"/api/admin/backfills/{job_id}/retry-failed/").status_code == 409  # running again
    for chunk in BackfillChunk.objects.filter(job_id=job_id, status="pending"):
        services.chunk_collect(chunk_id=chunk.pk)
    job.refresh_from_db()
    assert job.status == BackfillJob.COMPLETE
    assert dict(job.chunks.filter(pk__in=done_before).values_list("pk", "requests")) == done_before
    assert all(c.attempts == 1 for c in job.chunks.filter(pk__in=done_before))
    assert stored_times(collector, "BTCUSDT") == list(range(ms(utc(2024, 1, 1)), ms(utc(2025, 1, 1)), HOUR_MS))


def test_cancel_stops_a_backfill_and_keeps_what_was_stored(api, emulator, collector):
    body = {"collector": "bf", "start_date": "2024-01-01", "end_date": "2024-12-31", "symbols": ["BTCUSDT"]}
    job_id = api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"]
    BackfillJob.objects.filter(pk=job_id).update(status="running")
    first = BackfillChunk.objects.filter(job_id=job_id).order_by("start").first()
    services.chunk_collect(chunk_id=first.pk)
    assert api.post(f"/api/admin/backfills/{job_id}/cancel/").status_code == 200
    assert api.post(f"/api/admin/backfills/{job_id}/cancel/").status_code == 409
    assert BackfillJob.objects.get(pk=job_id).status == "cancelled"
    assert set(BackfillChunk.objects.filter(job_id=job_id).exclude(pk=first.pk)
               .values_list("status", flat=True)) == {"cancelled"}
    assert Candle.objects.count() == 2000
    detail = api.get(f"/api/admin/backfills/{job_id}/").json()
    assert detail["progress"]["chunks_done"] == detail["progress"]["chunks_total"]
    assert detail["per_symbol"][0]["records"] == 2000


def test_bad_backfill_input_is_a_400_naming_the_field(api, collector):
    cases = [({"collector": "nope"}, "collector"), ({"collector": "bf", "start_date": "soon"}, "start_date"),
             ({"collector": "bf", "symbols": ["DOGEUSDT"]}, "symbols"),
             ({"collector": "bf", "start_date": "2024-02-01", "end_date": "2024-01-01"}, "end_date"),
             ({"collector": "bf", "force": "maybe"}, "force"), ({"collector": "bf", "sybmols": []}, "sybmols")]
    for body, field in cases:
        for url in ("/api/admin/backfills/", "/api/admin/backfills/estimate/"):
            response = api.post(url, body, format="json")
            assert response.status_code == 400 and field in response.json(), (url, body, response.content)


def test_retry_failed_of_a_run_starts_a_run_for_only_the_failed_symbols(api, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "NOSUCHCOIN"])
    run = collect.run_trigger(collector=collector, mode="backward", start=utc(2025, 1, 1),
                              end=utc(2025, 1, 2), triggered_by="tests", enqueue=False)
    collect.run_start(run_id=run.pk, inline=True)
    response = api.post(f"/api/admin/runs/{run.pk}/retry-failed/")
    assert response.status_code == 202
    retry = CollectionRun.objects.get(pk=response.json()["run_id"])
    assert retry.requested_symbols == ["NOSUCHCOIN"] and (retry.start, retry.end) == (run.start, run.end)
    assert api.post(f"/api/admin/runs/{run.pk}/retry-failed/").status_code == 409  # retry is active


def test_gaps_api_keeps_missing_apart_from_what_the_exchange_had_no_data_for(api, emulator, collector):
    emulator.configure(outages=[[ms(utc(2025, 6, 3, 4)), ms(utc(2025, 6, 3, 9))]])
    body = {"collector": "bf", "start_date": "2025-05-01", "end_date": "2025-06-10", "symbols": ["NEWCOINUSDT"]}
    run_inline(api.post("/api/admin/backfills/", body, format="json").json()["backfill_id"])
    Candle.objects.filter(symbol="NEWCOINUSDT", open_time__gte=utc(2025, 6, 5),
                          open_time__lt=utc(2025, 6, 5, 3)).delete()
    report = api.get("/api/admin/gaps/?collector=bf&symbol=NEWCOINUSDT&start=2025-05-01&end=2025-06-10").json()
    (row,) = report["symbols"]
    assert row["missing"] == [{"start": "2025-06-05T00:00:00Z", "end": "2025-06-05T03:00:00Z"}]
    assert row["missing_candles"] == 3
    assert row["no_data"] == [{"start": "2025-05-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
                              {"start": "2025-06-03T04:00:00Z", "end": "2025-06-03T09:00:00Z"}]
    assert api.get("/api/admin/gaps/?collector=nope").status_code == 400
