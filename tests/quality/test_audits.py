"""Drift audits: a random sample of stored candles re-fetched and compared with the source."""

import random

import pytest

from backfills import services as backfills
from collectors import services
from collectors.models import Candle
from quality import services as quality, tasks
from quality.models import DriftAudit
from tests.factories import CollectorFactory
from tests.quality.conftest import ms, utc

pytestmark = pytest.mark.django_db


@pytest.fixture
def collector(emulator):
    collector = CollectorFactory(slug="a", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=utc(2025, 1, 1), end=utc(2025, 1, 10, 23))
    services.run_start(run_id=run.pk, inline=True)
    return collector


def test_an_audit_of_every_stored_candle_finds_exactly_the_revised_ones(api, emulator, collector):
    revised = [("BTCUSDT", utc(2025, 1, 2, 7), {"close": "12345.67000000"}),
               ("ETHUSDT", utc(2025, 1, 9, 23), {"volume": "1.00000000", "trades": 7})]
    emulator.configure(revisions={f"{s}:{ms(t)}": changes for s, t, changes in revised})
    stored = {t: c for t, c in Candle.objects.filter(symbol="BTCUSDT").values_list("open_time", "close")}
    response = api.post("/api/admin/audits/", {"collector": "a", "sample_size": 480}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "started"
    audit_id = response.json()["audit_id"]
    quality.audit_run(audit_id=audit_id)  # what the worker does with the queued task
    body = api.get(f"/api/admin/audits/{audit_id}/").json()
    assert (body["status"], body["sampled"], body["differing"], body["unavailable"]) == ("complete", 480, 2, 0)
    # 240 candles per symbol fit in one page each: the sample costs two requests, not 480.
    assert body["requests"] == 2
    assert sorted((d["symbol"], d["open_time"], d["field"], d["source"]) for d in body["differences"]) == [
        ("BTCUSDT", "2025-01-02T07:00:00Z", "close", "12345.67000000"),
        ("ETHUSDT", "2025-01-09T23:00:00Z", "trades", "7"),
        ("ETHUSDT", "2025-01-09T23:00:00Z", "volume", "1.00000000")]
    close = [d for d in body["differences"] if d["field"] == "close"][0]
    assert close["stored"] == format(stored[utc(2025, 1, 2, 7)], "f")
    # An audit reports; it does not change the data (a force backfill would, and records revisions).
    assert Candle.objects.get(symbol="BTCUSDT", open_time=utc(2025, 1, 2, 7)).close == stored[utc(2025, 1, 2, 7)]


def test_a_sample_is_distinct_stored_candles_and_skips_the_gaps(collector):
    Candle.objects.filter(symbol="ETHUSDT").delete()
    Candle.objects.filter(symbol="BTCUSDT", open_time__lt=utc(2025, 1, 9)).delete()  # 48 left
    sample = quality.audit_sample(collector=collector, size=30, rng=random.Random(1))
    assert list(sample) == ["BTCUSDT"] and len(sample["BTCUSDT"]) == len(set(sample["BTCUSDT"])) == 30
    assert all(t >= utc(2025, 1, 9) for t in sample["BTCUSDT"])
    everything = quality.audit_sample(collector=collector, size=500, rng=random.Random(2))
    assert len(everything["BTCUSDT"]) == 48  # never more than there is


def test_an_unreachable_source_fails_the_audit_with_the_reason(emulator, collector):
    emulator.configure(error_rate=1.0, error_statuses=[500])
    collector.max_retries = 0
    collector.save()
    audit = quality.audit_start(collector=collector, sample_size=5, triggered_by="tests", enqueue=False)
    audit = quality.audit_run(audit_id=audit.pk)
    assert audit.status == DriftAudit.FAILED and "500" in audit.error and audit.finished_at


def test_an_audit_runs_once_even_when_delivered_twice(collector):
    audit = quality.audit_start(collector=collector, sample_size=5, triggered_by="tests", enqueue=False)
    first = quality.audit_run(audit_id=audit.pk)
    DriftAudit.objects.filter(pk=audit.pk).update(sampled=0)
    assert quality.audit_run(audit_id=audit.pk).sampled == 0 and first.sampled == 5


@pytest.mark.parametrize("payload, field", [
    ({"collector": "nope"}, "collector"), ({"collector": "a", "sample_size": 0}, "sample_size"),
    ({"collector": "a", "sample_size": "x"}, "sample_size"), ({"collector": "a", "size": 3}, "size")])
def test_bad_audit_requests_are_400s_naming_the_field(api, collector, payload, field):
    response = api.post("/api/admin/audits/", payload, format="json")
    assert response.status_code == 400 and field in response.json()


def test_an_unknown_audit_is_a_json_404(api, db):
    response = api.get("/api/admin/audits/999/")
    assert response.status_code == 404 and response.json()["detail"]


def test_a_small_sample_of_sparse_data_is_drawn_from_stored_candles_only(collector):
    odd = [t for t in Candle.objects.filter(symbol="BTCUSDT").values_list("open_time", flat=True) if t.hour % 2]
    Candle.objects.filter(symbol="BTCUSDT", open_time__in=odd).delete()
    stored = set(Candle.objects.filter(symbol="BTCUSDT").values_list("open_time", flat=True))
    sample = quality.audit_sample(collector=collector, size=20, rng=random.Random(3))
    drawn = [("BTCUSDT", t) for t in sample.get("BTCUSDT", [])] + [("ETHUSDT", t) for t in sample["ETHUSDT"]]
    assert len(drawn) == len(set(drawn)) == 20
    assert all(t in stored for s, t in drawn if s == "BTCUSDT") and sample.get("BTCUSDT")


def test_one_revision_is_found_by_the_audit_then_stored_and_counted_by_an_overlapping_fetch(api, emulator, collector):
    changed = utc(2025, 1, 5, 12)
    emulator.configure(revisions={f"BTCUSDT:{ms(changed)}": {"low": "0.01000000"}})
    audit = quality.audit_start(collector=collector, sample_size=1000, triggered_by="tests", enqueue=False)
    tasks.audit_execute(audit.pk)  # the worker's entry point
    audit.refresh_from_db()
    assert (audit.differing, [d["field"] for d in audit.differences]) == (1, ["low"])
    job, _ = backfills.backfill_create(collector=collector, start=utc(2025, 1, 5), end=utc(2025, 1, 6),
                                       symbols=["BTCUSDT"], force=True, created_by="tests")
    backfills.backfill_start(job_id=job.pk, inline=True)
    assert job.chunks.get().revisions == 1
    assert format(Candle.objects.get(symbol="BTCUSDT", open_time=changed).low, "f") == "0.01000000"
    assert api.get("/api/admin/data-quality/?collector=a&live=true").json()["revisions"] == 1
    again = quality.audit_start(collector=collector, sample_size=1000, triggered_by="tests", enqueue=False)
    assert quality.audit_run(audit_id=again.pk).differing == 0  # the source and the data agree again


def test_the_schedule_audits_every_enabled_collector_with_data(collector, django_capture_on_commit_callbacks):
    CollectorFactory(slug="empty", symbols=["BTCUSDT"])
    CollectorFactory(slug="off", enabled=False, symbols=["BTCUSDT"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ids = tasks.audits_scheduled()
    assert [DriftAudit.objects.get(pk=i).collector.slug for i in ids] == ["a"] and len(callbacks) == 1
    assert DriftAudit.objects.get().triggered_by == "schedule"
