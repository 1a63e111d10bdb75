"""Operational reports for GET /api/admin/performance/ and /api/admin/system/info."""

import os
import platform
import time
from datetime import timedelta

import django
import psutil
from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.status import Stat
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from collectors.models import CollectionRun, Collector, RunSymbol


def performance_report(*, hours: int = 24) -> dict:
    """Runs finished in the last `hours`: average wall time and success/error rates; database
    round trip measured now; upstream latency from the request histogram; this process's
    memory and the machine's CPU."""
    since = timezone.now() - timedelta(hours=hours)
    runs = list(CollectionRun.objects.filter(finished_at__gte=since, started_at__isnull=False)
                .values_list("status", "started_at", "finished_at"))
    durations = [(f - s).total_seconds() for _, s, f in runs]
    bad = sum(status in (CollectionRun.FAILED, CollectionRun.PARTIAL) for status, _, _ in runs)
    good = sum(status == CollectionRun.COMPLETE for status, _, _ in runs)  # cancelled: neither
    totals = RunSymbol.objects.filter(finished_at__gte=since).aggregate(records=Sum("records"),
                                                                         requests=Sum("requests"))
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    database_ms = (time.perf_counter() - began) * 1000
    return {
        "window_hours": hours, "runs": len(runs),
        "avg_collection_time": round(sum(durations) / len(durations), 3) if durations else None,
        "success_rate": round(good / len(runs), 4) if runs else None,
        "error_rate": round(bad / len(runs), 4) if runs else None,
        "records": totals["records"] or 0, "requests": totals["requests"] or 0,
        "database_latency": round(database_ms, 3), "api_latency": _upstream_latency_ms(),
        "memory_usage_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "cpu_usage_percent": psutil.cpu_percent(interval=0.1),
        "units": {"avg_collection_time": "s", "database_latency": "ms", "api_latency": "ms"},
    }


def _upstream_latency_ms() -> float | None:
    """Mean upstream request latency from the histogram (this machine's processes when
    PROMETHEUS_MULTIPROC_DIR is set, else this process's), or None before any request."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry = REGISTRY
    total = count = 0.0
    for family in registry.collect():
        if family.name == "collector_upstream_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return round(total / count * 1000, 3) if count else None


def system_info() -> dict:
    """Versions, database, broker, the worker clusters seen and what is collected."""
    broker = get_broker()
    clusters = [{"cluster_id": str(s.cluster_id), "host": s.host, "status": s.status, "workers": len(s.workers),
                 "uptime_seconds": round(s.uptime()), "task_queue": s.task_q_size}
                for s in Stat.get_all(broker=broker)]
    records = dict(RunSymbol.objects.values_list("run__collector__slug").annotate(n=Sum("records")).order_by())
    runs = dict(CollectionRun.objects.values_list("collector__slug").annotate(n=Count("id")).order_by())
    return {
        "service": "collectors", "version": settings.VERSION,
        "python": platform.python_version(), "django": django.get_version(),
        "database": {"engine": connection.vendor, "version": _database_version()},
        "broker": "redis" if settings.REDIS_URL else "database (django-q2 ORM broker)",
        "worker_clusters": clusters, "worker_name": settings.WORKER_NAME, "pid": os.getpid(),
        "collectors": [{"slug": c.slug, "kind": c.kind, "enabled": c.enabled, "runs": runs.get(c.slug, 0),
                        "records_collected": records.get(c.slug) or 0}
                       for c in Collector.objects.order_by("slug")],
    }


def _database_version() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()" if connection.vendor == "sqlite" else "SELECT VERSION()")
        return str(cursor.fetchone()[0])
