"""Benchmark: collect N symbols x D days of 1h candles from the emulator through real
qcluster workers into the configured database, then run it again (everything skipped)."""

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import requests
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from backfills.models import EmptyRange
from collectors import services
from collectors.bench import allow_local_emulator, free_port, tree_rss, wait_for_emulator
from collectors.emulator import DEFAULT_SYMBOLS
from collectors.models import Candle, CollectionRun, Collector


class Command(BaseCommand):
    help = "Measure end-to-end collection speed (rows/s, requests, wall time, worker memory)."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", type=int, default=100)
        parser.add_argument("--days", type=int, default=330)
        parser.add_argument("--workers", type=int, default=settings.Q_WORKERS)

    def handle(self, *args, symbols, days, workers, **options):
        allow_local_emulator()
        names = [s for s in DEFAULT_SYMBOLS if s.endswith("USDT") and s != "NEWCOINUSDT"][:symbols]
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        end = start + timedelta(days=days) - timedelta(seconds=1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "Q_WORKERS": str(workers), "LOG_LEVEL": "warning"}
        emulator = subprocess.Popen([sys.executable, "manage.py", "run_exchange_emulator", "--port", str(port)],
                                    env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        collector, _ = Collector.objects.update_or_create(
            slug="bench-1h", defaults={"name": "Benchmark", "kind": "binance_klines",
                                       "config": {"base_url": url, "interval": "1h"}, "symbols": names,
                                       "beginning_date": date(2025, 1, 1), "enabled": True})
        self.stdout.write(f"Resetting {collector.slug}: deleting its candles ...")
        Candle.objects.filter(collector=collector).delete()
        EmptyRange.objects.filter(collector=collector).delete()
        collector.runs.all().delete()
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], env=env,
                                  stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_emulator(url)
            db = f"{connection.vendor} {connection.settings_dict['NAME']}"
            self.stdout.write(f"Database: {db}; workers: {workers}; weight budget "
                              f"{settings.EXCHANGE_WEIGHT_BUDGET}/{settings.EXCHANGE_WEIGHT_WINDOW_SECONDS}s")
            expected = len(names) * days * 24
            for label in ("first run", "second run"):
                requests.post(f"{url}/_emulator/reset", timeout=5)
                run, wall, peak_worker, peak_total = self._run(collector, start, end, worker)
                stats = requests.get(f"{url}/_emulator/stats", timeout=5).json()
                progress = run.progress()
                stored = Candle.objects.filter(collector=collector).count()
                self.stdout.write(
                    f"{label}: {run.status}, {progress['records']:,} candles in {wall:.1f} s = "
                    f"{progress['records'] / wall:,.0f} candles/s; {sum(stats['klines_by_symbol'].values())} "
                    f"klines requests; peak RSS per worker {peak_worker:.0f} MB, whole cluster "
                    f"{peak_total:.0f} MB; stored {stored:,}/{expected:,}")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            os.killpg(emulator.pid, signal.SIGTERM)
            emulator.wait(10)

    def _run(self, collector, start, end, worker):
        began = time.monotonic()
        run = services.run_trigger(collector=collector, mode="backward", start=start, end=end,
                                   triggered_by="bench")
        peak_worker = peak_total = 0.0
        while True:
            rss = tree_rss(worker.pid)
            peak_worker, peak_total = max(peak_worker, max(rss, default=0.0)), max(peak_total, sum(rss))
            run.refresh_from_db()
            if run.status not in CollectionRun.ACTIVE:
                return run, time.monotonic() - began, peak_worker, peak_total
            time.sleep(0.2)
