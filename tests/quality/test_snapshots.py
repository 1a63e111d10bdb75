"""Quality snapshots: scheduled, served while still true, pruned after DATA_RETENTION_DAYS."""

from datetime import date, datetime, timedelta, timezone

import pytest
from croniter import croniter
from django.utils import timezone as tz
from django_q.models import Schedule

from collectors import services
from collectors.models import Candle
from quality import services as quality
from quality.models import DriftAudit, QualitySnapshot
from tests.factories import CollectorFactory
from tests.quality.conftest import utc

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 1, 0, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch):
    now = [NOW]
    monkeypatch.setattr("django.utils.timezone.now", lambda: now[0])
    return now


@pytest.fixture
def collector(emulator, clock):
    collector = CollectorFactory(slug="q", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT"], beginning_date=date(2025, 2, 27))
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    return collector


def report(api, **params):
    query = "&".join(f"{k}={v}" for k, v in {"collector": "q", **params}.items())
    response = api.get(f"/api/admin/data-quality/?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_snapshot_is_served_while_it_is_the_truth_and_live_figures_otherwise(api, collector, settings, clock):
    assert report(api)["source"] == "live"  # no snapshot yet
    snapshot = quality.snapshot_take(collector=collector)
    assert (snapshot.total_records, snapshot.completeness, snapshot.gaps) == (48, 1.0, 0)
    body = report(api)
    assert body["source"] == "snapshot" and body["computed_at"] == "2025-03-01T00:00:30Z"
    assert body["total_records"] == 48 and body["symbols"][0]["records"] == 48
    # Rows deleted behind its back do not show in the snapshot, but do live and per symbol.
    Candle.objects.filter(open_time__lt=utc(2025, 2, 27, 3)).delete()
    assert report(api)["total_records"] == 48
    assert report(api, live="true")["total_records"] == 45
    assert report(api, symbol="BTCUSDT")["source"] == "live"
    # A run that finished after the snapshot makes it stale.
    clock[0] = NOW + timedelta(seconds=5)
    run = services.run_trigger(collector=collector, mode="gap_fill", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    assert report(api)["source"] == "live" and report(api)["total_records"] == 48
    # So does age.
    quality.snapshot_take(collector=collector)
    assert report(api)["source"] == "snapshot"
    settings.QUALITY_SNAPSHOT_MAX_AGE_SECONDS = 1
    clock[0] = NOW + timedelta(seconds=7)
    assert report(api)["source"] == "live"


def test_scheduled_snapshots_cover_enabled_collectors_and_retention_prunes(collector, settings):
    CollectorFactory(slug="off", enabled=False, symbols=["BTCUSDT"])
    settings.DATA_RETENTION_DAYS = 30
    old = quality.snapshot_take(collector=collector, now=NOW - timedelta(days=31))
    kept = quality.snapshot_take(collector=collector, now=NOW - timedelta(days=29))
    audit = quality.audit_start(collector=collector, sample_size=1, triggered_by="tests", enqueue=False)
    DriftAudit.objects.filter(pk=audit.pk).update(status="complete", created_at=NOW - timedelta(days=31))
    assert quality.snapshots_take_all() == 1
    left = set(QualitySnapshot.objects.values_list("pk", flat=True))
    assert old.pk not in left and kept.pk in left and len(left) == 2
    assert not DriftAudit.objects.exists()
    assert QualitySnapshot.objects.latest().taken_at == NOW


def test_migrate_schedules_the_snapshots_and_the_audits(settings):
    names = dict(Schedule.objects.values_list("name", "func"))
    assert names["quality: snapshot reports"] == "quality.tasks.snapshots_take"
    assert names["quality: drift audits"] == "quality.tasks.audits_scheduled"
    assert Schedule.objects.get(name="quality: drift audits").cron == settings.AUDIT_SCHEDULE


def test_the_first_scheduled_audit_waits_for_its_cron_time(settings):
    audits = Schedule.objects.get(name="quality: drift audits")  # django-q2 would start it at once
    assert audits.next_run > tz.now() and croniter.match(settings.AUDIT_SCHEDULE, audits.next_run)
