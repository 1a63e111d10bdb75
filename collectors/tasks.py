"""django-q2 task entry points: ids in, one service call each (delivered at least once)."""

from backfills import services as backfills
from collectors import alerts, engine, services


def run_execute(run_id: int):
    services.run_start(run_id=run_id)


def run_symbol_execute(run_symbol_id: int):
    services.run_symbol_collect(run_symbol_id=run_symbol_id)


def run_scheduled(collector_id: int):
    """A collector's cron schedule (see services.schedule_sync)."""
    services.run_scheduled(collector_id=collector_id)


def runs_recover():
    """Scheduled, and at every worker start: re-queue work of dead workers, each app's own
    (collection runs' symbols, backfill chunks; a new kind of job adds its recovery here);
    returns how many items were sent again. The queue is looked at once, before either sends
    anything: what the first re-queues must not hide the second's orphans."""
    queue_empty = engine.queue_is_empty()
    return (services.runs_recover(queue_empty=queue_empty)
            + backfills.backfills_recover(queue_empty=queue_empty))


def alert_send(alert_id: int):
    alerts.alert_send(alert_id=alert_id)


def alerts_check():
    """Scheduled (every ALERT_CHECK_INTERVAL_MINUTES): stale data and the error rate."""
    return alerts.alerts_check()


def housekeeping():
    """Scheduled hourly: drop run events and alerts older than DATA_RETENTION_DAYS."""
    return services.retention_prune()
