"""django-q2 task entry points: ids in, one service call each (delivered at least once)."""

from collectors.models import Collector
from quality import services


def audit_execute(audit_id: int):
    services.audit_run(audit_id=audit_id)


def audits_scheduled():
    """Scheduled (AUDIT_SCHEDULE): a drift audit of every enabled collector with data."""
    return services.audits_scheduled()


def snapshots_take():
    """Scheduled (every QUALITY_SNAPSHOT_INTERVAL_MINUTES): quality snapshots, then retention."""
    return services.snapshots_take_all()


def snapshot_collector(collector_id: int):
    """After a run or backfill: the collector's quality snapshot, with the new data."""
    collector = Collector.objects.filter(pk=collector_id).first()
    if collector is not None:
        services.snapshot_take(collector=collector)
