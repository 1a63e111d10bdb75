import structlog
from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_save

from collectors.db import retry_statement

# Modules that load models (ours, django_q's signals) are imported in the functions below:
# Django imports apps.py before any model can be loaded.


class CollectorsConfig(AppConfig):
    name = "collectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_q.signals import post_spawn  # loads django_q's models (see above)

        import config.security  # noqa: F401 (registers the system checks of unsafe settings)
        from collectors.models import Collector  # see above

        post_spawn.connect(recover_on_worker_start, dispatch_uid="collectors.recover_on_worker_start")
        connection_created.connect(limit_statement_time, dispatch_uid="collectors.limit_statement_time")
        connection_created.connect(retry_lock_errors, dispatch_uid="collectors.retry_lock_errors")
        post_save.connect(sync_schedule, sender=Collector, dispatch_uid="collectors.sync_schedule")
        post_delete.connect(sync_schedule, sender=Collector, dispatch_uid="collectors.drop_schedule")


def sync_schedule(sender, instance, **kwargs):
    """Saving, disabling or deleting a collector (admin, API, shell) updates its schedule."""
    from collectors.services import schedule_sync  # loads models (see above)

    if kwargs.get("raw"):  # loaddata: leave schedules to `manage.py sync_schedules`
        return
    if "created" not in kwargs:  # deleted
        instance.enabled = False
    schedule_sync(collector=instance)


def limit_statement_time(sender, connection, **kwargs):
    """QUERY_TIMEOUT on MariaDB (max_statement_time, seconds) or MySQL (max_execution_time, ms,
    SELECTs only); SQLite gets it as its lock timeout in settings."""
    if connection.vendor != "mysql" or not settings.QUERY_TIMEOUT:
        return
    with connection.cursor() as cursor:
        try:
            cursor.execute("SET SESSION max_statement_time = %s", [settings.QUERY_TIMEOUT])
        except Exception:  # MySQL, not MariaDB
            cursor.execute("SET SESSION max_execution_time = %s", [int(settings.QUERY_TIMEOUT * 1000)])


def retry_lock_errors(sender, connection, **kwargs):
    """Every statement run in autocommit mode is retried on a deadlock or lock timeout
    (collectors.db.retry_statement); transactions are retried whole by their owners."""
    if retry_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(retry_statement)


def recover_on_worker_start(sender, proc_name, **kwargs):
    """A worker that starts (e.g. after a kill -9 and restart) hands abandoned work out at once
    instead of waiting for the scheduled sweep. django-q2 closes inherited DB connections
    before it spawns workers, so this runs on a fresh connection."""
    from collectors.tasks import runs_recover  # loads models (see above)

    try:
        runs_recover()
    except Exception:  # recovery must never stop a worker from starting
        structlog.get_logger(__name__).exception("recover_on_worker_start_failed")
