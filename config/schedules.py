"""The service's own periodic tasks (django-q2 schedules), declared here and upserted by name by
`manage.py sync_schedules`, which every documented way to start the service runs (deploy/dev/
run.sh, the container entrypoint, the systemd unit). Their intervals come from settings read at
that moment, so a changed RUN_RECOVERY_INTERVAL_MINUTES, ALERT_CHECK_INTERVAL_MINUTES,
QUALITY_SNAPSHOT_INTERVAL_MINUTES or AUDIT_SCHEDULE takes effect at the next start. (The data
migrations that first created them stay, for installs that migrate before they sync.)

Per-collector schedules are collectors.services.schedule_sync's; tasks are named by dotted path
so this module imports no app."""

from datetime import datetime, timedelta

from croniter import croniter
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule


def system_schedules() -> list[dict]:
    """Each schedule's name and fields, as the settings say now."""
    return [
        {"name": "collectors: recover abandoned runs", "func": "collectors.tasks.runs_recover",
         "schedule_type": "I", "minutes": settings.RUN_RECOVERY_INTERVAL_MINUTES},
        {"name": "collectors: alert on stale data and error rate", "func": "collectors.tasks.alerts_check",
         "schedule_type": "I", "minutes": settings.ALERT_CHECK_INTERVAL_MINUTES},
        {"name": "collectors: drop old run events and alerts", "func": "collectors.tasks.housekeeping",
         "schedule_type": "H"},
        {"name": "quality: snapshot reports", "func": "quality.tasks.snapshots_take",
         "schedule_type": "I", "minutes": settings.QUALITY_SNAPSHOT_INTERVAL_MINUTES},
        {"name": "quality: drift audits", "func": "quality.tasks.audits_scheduled",
         "schedule_type": "C", "cron": settings.AUDIT_SCHEDULE},
    ]


def _first_run(spec: dict, now: datetime) -> datetime:
    """When a new or changed schedule first runs: its next cron time, one interval from now,
    an hour from now (hourly); not at once, as django-q2 would."""
    if spec["schedule_type"] == "C":
        return croniter(spec["cron"], now).get_next(datetime)
    return now + timedelta(minutes=spec.get("minutes") or 60)


def system_schedules_sync(*, now: datetime | None = None) -> dict:
    """Create or update each system schedule by name; one whose fields already match keeps its
    next run. Returns {"created": n, "updated": n, "unchanged": n}."""
    now = now or timezone.now()
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for spec in system_schedules():
        fields = {"func": spec["func"], "schedule_type": spec["schedule_type"], "repeats": -1,
                  "minutes": spec.get("minutes"), "cron": spec.get("cron")}
        current = Schedule.objects.filter(name=spec["name"]).first()
        if current is not None and all(getattr(current, k) == v for k, v in fields.items()):
            counts["unchanged"] += 1
            continue
        Schedule.objects.update_or_create(name=spec["name"], defaults={**fields, "next_run": _first_run(spec, now)})
        counts["created" if current is None else "updated"] += 1
    return counts
