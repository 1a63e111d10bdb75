"""Benchmark: one backfill of N symbols x D days of 1h candles run by one qcluster, then by two
qclusters sharing a Redis broker (as if on two machines), from an emulator with network latency
and a weight budget too high to matter; prints both runs and the speedup."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import override_settings
from django_q.conf import Conf
from django_q.status import Stat

from backfills import services
from backfills.models import BackfillJob, EmptyRange
from collectors.bench import allow_local_emulator, free_port, tree_rss, wait_for_emulator
from collectors.emulator import DEFAULT_SYMBOLS
from collectors.models import Candle, Collector

REDIS_URL = "redis://127.0.0.1:6379/14"  # a db of its own: flushed at each run
END = datetime(2025, 1, 1, tzinfo=timezone.utc)  # the backfill ends here; --days goes back from it
BUDGET = 1_000_000  # weight per minute, exchange and service: far above what a run can use
BATCH = 2000  # candles per chunk = 2 pages: many chunks to share between the clusters
NAMES = ("bench-a", "bench-b")  # WORKER_NAME of each cluster: the prefix of claimed_by


class Command(BaseCommand):
    help = "Measure how a backfill scales from one qcluster to two sharing a Redis broker."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", type=int, default=20)
        parser.add_argument("--days", type=int, default=730)
        parser.add_argument("--workers", type=int, default=2, help="Q_WORKERS per cluster.")
        parser.add_argument("--latency-ms", type=float, default=40.0,
                            help="Delay the emulator adds to each answer (network latency).")
        parser.add_argument("--redis", dest="redis_url", default=REDIS_URL)
        parser.add_argument("--timeout", type=float, default=240.0, help="Seconds a run may take.")

    def handle(self, *args, symbols, days, workers, latency_ms, redis_url, timeout, **options):
        allow_local_emulator()
        if settings.REDIS_URL != redis_url:
            _reexec_with(redis_url)
        _flush(redis_url)
        logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        names = [s for s in DEFAULT_SYMBOLS if s.endswith("USDT") and s != "NEWCOINUSDT"][:symbols]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        emulator = _spawn(["run_exchange_emulator", "--port", str(port), "--slow-ms", str(latency_ms),
                           "--weight-limit", str(BUDGET)], os.environ, logs / "emulator.log")
        collector, _ = Collector.objects.update_or_create(
            slug="bench-scale-1h", defaults={
                "name": "Scale-out benchmark", "kind": "binance_klines", "symbols": names,
                "config": {"base_url": url, "interval": "1h"}, "enabled": True,
                "beginning_date": (END - timedelta(days=days)).date(), "schedule": ""})
        env = {**os.environ, "REDIS_URL": redis_url, "Q_WORKERS": str(workers), "LOG_LEVEL": "warning",
               "EXCHANGE_WEIGHT_BUDGET": str(BUDGET), "BACKFILL_BATCH_SIZE": str(BATCH)}
        expected = len(names) * days * 24
        try:
            wait_for_emulator(url)
            self.stdout.write(f"Database: {connection.vendor} {connection.settings_dict['NAME']}; broker "
                              f"{redis_url}; {len(names)} symbols x {days} days = {expected:,} candles; "
                              f"{workers} workers per cluster; latency {latency_ms:.0f} ms; logs in {logs}")
            walls, failures = {}, []
            # This process plans the chunks: the same batch size and budget as the clusters.
            with override_settings(BACKFILL_BATCH_SIZE=BATCH, EXCHANGE_WEIGHT_BUDGET=BUDGET):
                for clusters in (1, 2):
                    self._reset(collector, url, redis_url)
                    figures = self._run(collector, days, clusters, env, logs, timeout)
                    figures["expected"] = expected
                    walls[clusters] = figures["wall"]
                    failures += self._report(clusters, figures, workers)
            self.stdout.write(f"speedup (wall 1 cluster / wall 2 clusters): {walls[1] / walls[2]:.2f}x"
                              + (" (not comparable: a run failed)" if failures else ""))
        finally:
            _stop(emulator)
        if failures:
            raise CommandError("; ".join(failures))

    def _reset(self, collector, url, redis_url):
        """A fresh collector, broker and emulator counters (nothing may be skipped or queued)."""
        self.stdout.write(f"Resetting {collector.slug}: deleting its candles, ranges, runs, backfills ...")
        Candle.objects.filter(collector=collector).delete()
        EmptyRange.objects.filter(collector=collector).delete()
        collector.runs.all().delete()
        collector.backfills.all().delete()
        _flush(redis_url)
        requests.post(f"{url}/_emulator/reset", timeout=5).raise_for_status()

    def _run(self, collector, days, clusters, env, logs, timeout) -> dict:
        procs = [_spawn(["qcluster"], {**env, "WORKER_NAME": name}, logs / f"{clusters}-clusters-{name}.log")
                 for name in NAMES[:clusters]]
        try:
            _wait_until_up(procs)
            began = time.monotonic()
            job, _ = services.backfill_create(collector=collector, start=END - timedelta(days=days),
                                              end=END - timedelta(seconds=1), created_by="bench_scale")
            peak_worker, peak_cluster = _poll(job, procs, began + timeout)
            wall = time.monotonic() - began
        finally:
            for proc in procs:
                _stop(proc)
        url = collector.config["base_url"]
        stats = requests.get(f"{url}/_emulator/stats", timeout=5).json()
        chunks = job.chunks.all()
        return {"job": job, "wall": wall, "stored": Candle.objects.filter(collector=collector).count(),
                "sent": sum(stats["klines_by_symbol"].values()), "chunks": chunks.count(),
                "claimed": Counter(c.split(":")[0] for c in chunks.values_list("claimed_by", flat=True)),
                "retried": chunks.filter(attempts__gt=1).count(), "peak_worker": peak_worker,
                "peak_cluster": peak_cluster, "logs": [_log_levels(p.log_path) for p in procs]}

    def _report(self, clusters, f, workers) -> list[str]:
        job, label = f["job"], f"{clusters} cluster{'s' if clusters > 1 else ''}"
        beyond = f["sent"] - job.estimated_requests
        claimed = ", ".join(f"{name} {n}" for name, n in sorted(f["claimed"].items()))
        logs = "; ".join(f"{name}: {counts or 'empty'}" for name, counts in zip(NAMES, f["logs"], strict=False))
        self.stdout.write(
            f"{label} x {workers} workers: {job.status} in {f['wall']:.1f} s; stored {f['stored']:,}/"
            f"{f['expected']:,} = {f['stored'] / f['wall']:,.0f} candles/s; klines requests {f['sent']} "
            f"(estimate {job.estimated_requests}, {max(beyond, 0)} beyond it); chunks {f['chunks']}, "
            f"claimed {claimed}; attempts > 1: {f['retried']}\n    peak RSS per worker "
            f"{f['peak_worker']:.0f} MB, per cluster {' + '.join(f'{m:.0f}' for m in f['peak_cluster'])} MB; "
            f"log lines {logs}")
        failures = []
        if job.is_active:
            failures.append(f"{label}: backfill {job.pk} still {job.status} after {f['wall']:.0f} s (--timeout)")
        elif job.status != BackfillJob.COMPLETE:
            failures.append(f"{label}: backfill {job.pk} ended {job.status}: {job.error}")
        if f["stored"] != f["expected"]:
            failures.append(f"{label}: stored {f['stored']:,} candles, expected {f['expected']:,}")
        return failures


def _reexec_with(redis_url):
    """The broker and cache are chosen when the settings load (REDIS_URL) and django-q2 reads
    them at import, so this process, which enqueues the job, starts itself again with REDIS_URL
    set: simpler and sturdier than patching settings afterwards, and works from make or by hand."""
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "REDIS_URL": redis_url})


def _flush(redis_url):
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).flushdb()
    except redis.RedisError as error:
        raise CommandError(f"Redis is not reachable at {redis_url} ({error}): start redis-server, "
                           "or pass --redis URL.") from None


def _spawn(args, env, log_path) -> subprocess.Popen:
    """manage.py ARGS in its own process group, its output kept in log_path."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    return proc


def _stop(proc, timeout=30):
    """SIGTERM to the main process only (a group-wide SIGTERM can hang qcluster), then the group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _wait_until_up(procs, timeout=60):
    """Until every cluster reports itself idle to the broker: timing starts with all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise CommandError(f"qcluster exited with {proc.returncode}; see {proc.log_path}")
        up = {s.pid for s in Stat.get_all() if s.status in (Conf.IDLE, Conf.WORKING)}
        if all(proc.pid in up for proc in procs):
            return
        time.sleep(0.2)
    raise CommandError(f"qclusters did not start within {timeout} s; see {procs[0].log_path}")


def _poll(job, procs, deadline) -> tuple[float, list[float]]:
    """Wait for the job to finish, sampling memory: peak RSS of one process, and of each cluster."""
    peak_worker, peak_cluster = 0.0, [0.0] * len(procs)
    while True:
        for i, proc in enumerate(procs):
            rss = tree_rss(proc.pid)
            peak_worker = max(peak_worker, *rss, 0.0)
            peak_cluster[i] = max(peak_cluster[i], sum(rss))
        job.refresh_from_db()
        if not job.is_active or time.monotonic() > deadline:
            return peak_worker, peak_cluster
        time.sleep(0.2)


def _log_levels(path) -> dict:
    """Lines of a cluster's log by level (it logs warnings and errors; other = not JSON)."""
    counts = Counter()
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            counts[json.loads(line).get("level", "other")] += 1
        except (ValueError, AttributeError):
            counts["other"] += 1
    return dict(counts)
