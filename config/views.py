"""Health, readiness, the landing page and JSON error pages."""

import time

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.shortcuts import redirect
from django.utils import timezone

STARTED = time.monotonic()


def _database_ok() -> bool:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def health(request):
    """Liveness plus database. Never depends on an upstream exchange being up."""
    from collectors.models import CollectionRun

    db_ok = _database_ok()
    body = {"status": "healthy" if db_ok else "unhealthy", "timestamp": timezone.now().isoformat(),
            "service": "collectors", "version": settings.VERSION,
            "uptime_seconds": round(time.monotonic() - STARTED, 1), "database_connected": db_ok,
            "last_collection": None, "last_successful_collection": None, "collection_errors": None}
    if db_ok:
        last = CollectionRun.objects.exclude(finished_at=None).order_by("-finished_at").first()
        good = (CollectionRun.objects.filter(status=CollectionRun.COMPLETE)
                .order_by("-finished_at").first())
        body["last_collection"] = last.finished_at.isoformat() if last else None
        body["last_successful_collection"] = good.finished_at.isoformat() if good else None
        body["collection_errors"] = CollectionRun.objects.filter(
            status=CollectionRun.FAILED, finished_at__gte=timezone.now() - timezone.timedelta(hours=24)).count()
    return JsonResponse(body, status=200 if db_ok else 503)


def ready(request):
    """Readiness: the database answers, the cache works and every migration is applied."""
    checks = {"database": _database_ok(), "migrations": False, "cache": False}
    if checks["database"]:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        checks["migrations"] = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    try:
        cache.set("ready-probe", 1, 5)
        checks["cache"] = cache.get("ready-probe") == 1
    except Exception:
        pass
    ok = all(checks.values())
    return JsonResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                        status=200 if ok else 503)


def home(request):
    return redirect("admin:index")


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Internal error; it has been logged."}, status=500)
