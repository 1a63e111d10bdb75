from django.apps import AppConfig


class CollectorsConfig(AppConfig):
    name = "collectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_q.signals import post_spawn

        post_spawn.connect(recover_on_worker_start, dispatch_uid="collectors.recover_on_worker_start")


def recover_on_worker_start(sender, proc_name, **kwargs):
    """A worker that starts (e.g. after a kill -9 and restart) hands abandoned work out at once
    instead of waiting for the scheduled sweep. django-q2 closes inherited DB connections
    before it spawns workers, so this runs on a fresh connection."""
    import structlog

    from collectors.services import work_recover

    try:
        work_recover()
    except Exception:  # recovery must never stop a worker from starting
        structlog.get_logger(__name__).exception("recover_on_worker_start_failed")
