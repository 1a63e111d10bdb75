"""Prometheus metrics (names and meanings in the README).

What the database knows is derived from it at scrape time, so the figures are right with any
number of worker processes on any number of machines. Only what a process alone sees — the
upstream requests by endpoint and status and their latency — is counted in-process; set
PROMETHEUS_MULTIPROC_DIR (the same directory for the web server and the workers of a machine)
and prometheus_client's multiprocess mode sums them over that machine's processes.
"""

import time

from django.conf import settings
from django.db.models import Count, Sum
from django_q.brokers import get_broker
from django_q.status import Stat
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from backfills.models import BackfillChunk, BackfillJob
from collectors.models import CircuitBreaker, CollectionRun, Collector, RateWindow, RunSymbol
from quality.models import QualitySnapshot

UPSTREAM_REQUESTS = Counter("collector_upstream_requests_total", "HTTP requests sent to upstreams.",
                            ["upstream", "endpoint", "status"])
UPSTREAM_SECONDS = Histogram("collector_upstream_request_duration_seconds", "Upstream request latency.",
                             ["upstream", "endpoint"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def observe_upstream(upstream: str, endpoint: str, status: str, seconds: float):
    UPSTREAM_REQUESTS.labels(upstream, endpoint, status).inc()
    UPSTREAM_SECONDS.labels(upstream, endpoint).observe(seconds)


class DatabaseCollector:
    """Collection metrics computed from the shared database at each scrape."""

    def describe(self):
        return []

    def collect(self):
        slugs = dict(Collector.objects.values_list("pk", "slug"))
        runs = CounterMetricFamily("collector_runs", "Collection runs by collector, mode and status.",
                                   labels=["collector", "mode", "status"])
        for cid, mode, status, n in CollectionRun.objects.values_list("collector", "mode", "status").annotate(
                n=Count("id")).order_by():
            runs.add_metric([slugs.get(cid, str(cid)), mode, status], n)
        yield runs

        durations = GaugeMetricFamily("collector_last_run_duration_seconds",
                                      "Wall time of each collector's last finished run.", labels=["collector"])
        for cid in slugs:
            last = CollectionRun.objects.filter(collector_id=cid, finished_at__isnull=False,
                                                started_at__isnull=False).order_by("-finished_at").first()
            if last:
                durations.add_metric([slugs[cid]], (last.finished_at - last.started_at).total_seconds())
        yield durations

        totals = {name: CounterMetricFamily(f"collector_{name}", help_, labels=["collector", "origin"])
                  for name, help_ in (("requests", "Upstream requests made by runs and backfills."),
                                      ("records", "Rows stored by runs and backfills."),
                                      ("invalid_records", "Rows quarantined by the quality rules."),
                                      ("duplicate_records", "Fetched rows identical to stored ones."),
                                      ("revisions", "Stored rows the source changed."),
                                      ("throttled_seconds", "Time spent waiting for the weight budget or "
                                                            "an open circuit breaker."))}
        items = CounterMetricFamily("collector_items", "Symbols of runs and chunks of backfills by status.",
                                    labels=["collector", "origin", "status"])
        for origin, model, owner in (("run", RunSymbol, "run__collector"), ("backfill", BackfillChunk,
                                                                              "job__collector")):
            rows = model.objects.values(owner).annotate(
                requests=Sum("requests"), records=Sum("records"), invalid_records=Sum("invalid"),
                duplicate_records=Sum("duplicates"), revisions=Sum("revisions"),
                throttled_seconds=Sum("throttled_seconds")).order_by()
            for row in rows:
                for name, family in totals.items():
                    family.add_metric([slugs.get(row[owner], "?"), origin], row[name] or 0)
            for cid, status, n in model.objects.values_list(owner, "status").annotate(n=Count("id")).order_by():
                items.add_metric([slugs.get(cid, "?"), origin, status], n)
        yield from totals.values()
        yield items

        active = GaugeMetricFamily("collector_active", "Runs and backfill jobs queued or running.",
                                   labels=["collector", "kind"])
        for cid, n in CollectionRun.objects.active().values_list("collector").annotate(n=Count("id")).order_by():
            active.add_metric([slugs.get(cid, "?"), "run"], n)
        for cid, n in BackfillJob.objects.filter(status__in=BackfillJob.ACTIVE).values_list("collector").annotate(
                n=Count("id")).order_by():
            active.add_metric([slugs.get(cid, "?"), "backfill"], n)
        yield active

        now = time.time()
        used = GaugeMetricFamily("collector_rate_weight_used", "Request weight used in the current window.",
                                 labels=["upstream"])
        remaining = GaugeMetricFamily("collector_rate_weight_remaining", "Request weight left in the window.",
                                      labels=["upstream"])
        limit = GaugeMetricFamily("collector_rate_weight_limit", "The shared weight budget per window.",
                                  labels=["upstream"])
        for key in RateWindow.objects.values_list("key", flat=True):
            state = RateWindow.state(key, limit=settings.EXCHANGE_WEIGHT_BUDGET,
                                     window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS, now=now)
            used.add_metric([key], state["used"])
            remaining.add_metric([key], state["remaining"])
            limit.add_metric([key], state["limit"])
        yield from (used, remaining, limit)

        breaker = GaugeMetricFamily("collector_circuit_breaker_state",
                                    "1 for the state each upstream's breaker is in.", labels=["upstream", "state"])
        opened = CounterMetricFamily("collector_circuit_breaker_opened", "Times each breaker opened.",
                                     labels=["upstream"])
        for key, state, times in CircuitBreaker.objects.values_list("key", "state", "times_opened"):
            for name, _ in CircuitBreaker.STATES:
                breaker.add_metric([key, name], 1.0 if name == state else 0.0)
            opened.add_metric([key], times)
        yield from (breaker, opened)

        yield from self._quality(slugs)
        yield from self._queue()

    def _quality(self, slugs):
        fresh = GaugeMetricFamily("collector_data_freshness_seconds",
                                  "Age of the last stored candle's close, from the latest quality snapshot.",
                                  labels=["collector", "symbol"])
        complete = GaugeMetricFamily("collector_data_completeness_ratio",
                                     "Stored / expected candles, from the latest quality snapshot.",
                                     labels=["collector", "symbol"])
        age = GaugeMetricFamily("collector_quality_snapshot_age_seconds", "Age of the latest quality snapshot.",
                                labels=["collector"])
        now = time.time()
        for cid, slug in slugs.items():
            snapshot = QualitySnapshot.objects.filter(collector_id=cid).order_by("-taken_at").first()
            if snapshot is None:
                continue
            age.add_metric([slug], now - snapshot.taken_at.timestamp())
            for row in snapshot.report.get("symbols", []):
                if row.get("freshness_seconds") is not None:
                    fresh.add_metric([slug, row["symbol"]], row["freshness_seconds"])
                if row.get("completeness_ratio") is not None:  # events have no expected count
                    complete.add_metric([slug, row["symbol"]], row["completeness_ratio"])
        yield from (fresh, complete, age)

    def _queue(self):
        broker = get_broker()
        depth = GaugeMetricFamily("collector_queue_depth", "Tasks waiting in the django-q2 queue.")
        clusters = GaugeMetricFamily("collector_worker_clusters", "Live django-q2 clusters (qcluster processes).")
        try:
            depth.add_metric([], broker.queue_size())
        except Exception:  # a broker that cannot tell must not break the scrape
            pass
        clusters.add_metric([], len(Stat.get_all(broker=broker)))
        yield from (depth, clusters)


DATABASE_REGISTRY = CollectorRegistry(auto_describe=False)
DATABASE_REGISTRY.register(DatabaseCollector())
