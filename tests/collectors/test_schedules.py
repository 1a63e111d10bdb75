"""Collectors' cron schedules as django-q2 schedules: kept in step, skipped while busy, running alone."""

import io
import time
from datetime import datetime, timedelta, timezone

import pytest
from croniter import croniter
from django.core.management import call_command
from django.db import connection
from django_q.models import Schedule

from collectors import services
from collectors.models import CollectionRun, RunEvent
from tests.e2e import start_qcluster, wait_for
from tests.factories import CollectorFactory, RunFactory


def schedule_of(collector):
    return Schedule.objects.filter(name=f"collector:{collector.slug}").first()


@pytest.mark.django_db
def test_the_schedule_follows_the_collector_through_edits_disabling_and_deletion(api):
    collector = CollectorFactory(slug="cron", schedule="0 */6 * * *", symbols=["BTCUSDT"])
    first = schedule_of(collector)
    assert (first.func, first.cron, first.args, first.repeats) == (
        "collectors.tasks.run_scheduled", "0 */6 * * *", f"({collector.pk},)", -1)
    assert croniter.match("0 */6 * * *", first.next_run) and first.next_run > datetime.now(timezone.utc)
    collector.name = "renamed"
    collector.save()
    assert schedule_of(collector).next_run == first.next_run  # unchanged cron: same next run
    assert api.patch("/api/admin/collectors/cron/", {"schedule": "*/5 * * * *"}, format="json").status_code == 200
    assert schedule_of(collector).cron == "*/5 * * * *"
    assert api.get("/api/admin/collectors/cron/").json()["next_run"] == \
        schedule_of(collector).next_run.isoformat().replace("+00:00", "Z")
    bad = api.patch("/api/admin/collectors/cron/", {"schedule": "every day"}, format="json")
    assert bad.status_code == 400 and "schedule" in bad.json()
    api.patch("/api/admin/collectors/cron/", {"enabled": False}, format="json")
    assert schedule_of(collector) is None and api.get("/api/admin/collectors/cron/").json()["next_run"] is None
    api.patch("/api/admin/collectors/cron/", {"enabled": True}, format="json")
    assert schedule_of(collector) is not None
    api.patch("/api/admin/collectors/cron/", {"schedule": ""}, format="json")
    assert schedule_of(collector) is None
    api.patch("/api/admin/collectors/cron/", {"schedule": "0 * * * *"}, format="json")
    collector.delete()
    assert not Schedule.objects.filter(name__startswith="collector:").exists()


@pytest.mark.django_db
def test_sync_schedules_rebuilds_idempotently_and_drops_orphans():
    collector = CollectorFactory(slug="a", schedule="0 * * * *", symbols=["BTCUSDT"])
    Schedule.objects.filter(name="collector:a").delete()  # lost, e.g. a restored database
    Schedule.objects.create(name="collector:gone", func="collectors.tasks.run_scheduled", args="(999,)",
                            schedule_type=Schedule.CRON, cron="0 * * * *")
    out = io.StringIO()
    call_command("sync_schedules", stdout=out)
    assert "1 collector schedule(s) in place, 1 orphaned one(s) removed" in out.getvalue()
    assert list(Schedule.objects.filter(name__startswith="collector:").values_list("name", flat=True)) == [
        "collector:a"]
    call_command("sync_schedules", stdout=io.StringIO())
    assert schedule_of(collector).cron == "0 * * * *"


@pytest.mark.django_db
def test_changed_settings_reach_the_system_schedules_at_the_next_sync(settings):
    # The migrations created them with the defaults (as on a real install's first migrate).
    system = lambda name: Schedule.objects.get(name=name)  # noqa: E731
    assert system("quality: drift audits").cron == "30 3 * * *"
    assert system("quality: snapshot reports").minutes == 15
    call_command("sync_schedules", stdout=io.StringIO())
    kept = system("quality: drift audits").next_run  # unchanged: its next run stays

    settings.AUDIT_SCHEDULE = "15 1 * * 1"
    settings.QUALITY_SNAPSHOT_INTERVAL_MINUTES = 5
    settings.ALERT_CHECK_INTERVAL_MINUTES = 2
    out = io.StringIO()
    call_command("sync_schedules", stdout=out)

    assert "system schedules: 0 created, 3 updated, 2 unchanged" in out.getvalue()
    audits = system("quality: drift audits")
    assert audits.cron == "15 1 * * 1" and audits.next_run != kept
    assert (audits.next_run.weekday(), audits.next_run.hour, audits.next_run.minute) == (0, 1, 15)
    assert system("quality: snapshot reports").minutes == 5
    assert system("collectors: alert on stale data and error rate").minutes == 2
    Schedule.objects.filter(name="collectors: recover abandoned runs").delete()  # lost: made again
    call_command("sync_schedules", stdout=out)
    assert system("collectors: recover abandoned runs").func == "collectors.tasks.runs_recover"


@pytest.mark.django_db
def test_a_scheduled_run_is_a_forward_run_and_is_skipped_while_the_last_one_runs(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    busy = RunFactory(collector=collector, status=CollectionRun.RUNNING)
    assert services.run_scheduled(collector_id=collector.pk) is None
    skipped = RunEvent.objects.get(event="scheduled_run_skipped")
    assert skipped.run_id == busy.pk and "still running" in skipped.fields["reason"]
    busy.status = CollectionRun.COMPLETE
    busy.save()
    run = services.run_scheduled(collector_id=collector.pk)
    assert (run.mode, run.triggered_by) == ("forward", "schedule")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite",
                    reason="minutes of wall clock; the scheduling is the same on every database")
def test_a_one_minute_schedule_collects_every_minute_under_qcluster_and_stops_when_disabled(emulator, tmp_path):
    collector = CollectorFactory(slug="every-minute", config={"base_url": emulator.url, "interval": "1m"},
                                 symbols=["BTCUSDT"], schedule="* * * * *",
                                 beginning_date=(datetime.now(timezone.utc) - timedelta(days=1)).date())
    # Due now, so the first run comes at django-q2's next scheduler pass (every 30 s), not in a minute.
    Schedule.objects.filter(name="collector:every-minute").update(next_run=datetime.now(timezone.utc))
    worker = start_qcluster(tmp_path)
    try:
        def scheduled_runs():
            return list(CollectionRun.objects.filter(collector=collector, triggered_by="schedule").order_by("id"))

        wait_for(lambda: len(scheduled_runs()) >= 2, timeout=150, what="two scheduled runs", interval=1)
        runs = scheduled_runs()
        assert all(r.mode == "forward" for r in runs)
        wait_for(lambda: not any(r.is_active for r in scheduled_runs()), timeout=60, what="the runs to end")
        first, second = scheduled_runs()[:2]
        assert (first.status, second.status) == ("complete", "complete")
        assert second.created_at - first.created_at >= timedelta(seconds=20)
        collector.enabled = False
        collector.save()
        count = len(scheduled_runs())
        # Past the next minute and the scheduler pass after it: nothing more starts.
        time.sleep(62 - datetime.now(timezone.utc).second + 31)
        assert len(scheduled_runs()) == count
    finally:
        worker.stop()
