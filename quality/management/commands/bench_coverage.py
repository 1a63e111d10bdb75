"""Benchmark: the admin coverage map of N symbols x D days of hourly candles, server-side
(grid query + SVG, and the whole admin page), checked against the holes the benchmark made."""

import random
import statistics
import time
from datetime import datetime, timedelta, timezone

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from backfills.models import EmptyRange
from collectors.bench import MIDDLE, TAIL, batched, insert_sql, make_holes, peak_rss_mb, reset_peak_rss, stored_indices
from collectors.models import Candle, Collector
from quality.charts import coverage_svg
from quality.models import QuarantinedRow
from quality.services import coverage_grid

SLUG = "bench-coverage"
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(hours=1)


class Command(BaseCommand):
    help = "Time the coverage map (grid + SVG + admin page) over symbols x days of hourly candles."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", type=int, default=100)
        parser.add_argument("--days", type=int, default=330)
        parser.add_argument("--repeat", type=int, default=5)
        parser.add_argument("--keep", action="store_true", help="Leave the data for the next run.")

    def handle(self, *args, symbols, days, repeat, keep, **options):
        if symbols < 1 or days < 2 or repeat < 1:
            raise CommandError("Need --symbols >= 1, --days >= 2 and --repeat >= 1.")
        slots = days * 24
        names = [f"MAP{i:03d}USDT" for i in range(1, symbols + 1)]
        holes = make_holes(symbols=symbols, slots=slots, holes_per_symbol=20)
        # The first tenth of the symbols were listed late: the exchange had no data before.
        listed = {name: (i + 1) * 7 * 24 if i < symbols // 10 else 0 for i, name in enumerate(names)}
        fingerprint = f"Benchmark coverage: {symbols} x {days} d from {START:%Y-%m-%d}"
        collector = Collector.objects.filter(slug=SLUG).first()
        if not (collector and collector.name == fingerprint):
            collector = self._fill(collector, names, slots, holes, listed, fingerprint)
        else:
            self.stdout.write(f"Reusing the candles of an earlier run ({fingerprint}).")
        try:
            self._measure(collector, names, days, slots, holes, listed, repeat)
        finally:
            if not keep:
                Candle.objects.filter(collector=collector).delete()
                collector.delete()

    def _fill(self, collector, names, slots, holes, listed, fingerprint):
        if collector:
            Candle.objects.filter(collector=collector).delete()
            collector.delete()
        collector = Collector.objects.create(
            slug=SLUG, name="Benchmark coverage: filling", kind="binance_klines", enabled=False,
            config={"base_url": "http://127.0.0.1:9", "interval": "1h"}, symbols=names,
            beginning_date=START.date())
        opens = [(START + i * STEP).strftime("%Y-%m-%d %H:%M:%S") for i in range(slots)]
        sql, began, written = insert_sql(), time.monotonic(), 0
        for name, symbol_holes in zip(names, holes, strict=False):
            present = (i for i in stored_indices(symbol_holes, slots) if i >= listed[name])
            for chunk in batched(present, 20_000):
                params = [(collector.pk, name, "1h", opens[i], *MIDDLE, opens[i][:14] + "59:59.999000", *TAIL)
                          for i in chunk]
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.executemany(sql, params)
                written += len(params)
            if listed[name]:
                EmptyRange.objects.create(collector=collector, symbol=name, series="1h", start=START,
                                          end=START + listed[name] * STEP)
        rng = random.Random(7)
        QuarantinedRow.objects.bulk_create(
            QuarantinedRow(collector=collector, symbol=rng.choice(names), series="1h",
                           open_time=START + rng.randrange(slots) * STEP, rule="negative_volume", payload=[])
            for _ in range(300))
        collector.name = fingerprint
        collector.save(update_fields=["name"])
        self.stdout.write(f"Filled {written:,} candles in {time.monotonic() - began:.1f} s "
                          f"({len(names)} symbols, {sum(map(len, holes)):,} holes, "
                          f"{sum(1 for v in listed.values() if v)} late listings, 300 quarantined rows).")
        return collector

    def _measure(self, collector, names, days, slots, holes, listed, repeat):
        first, last = START.date(), START.date() + timedelta(days=days - 1)
        now = START + timedelta(days=days + 1)
        grid_s, svg_s, page_s = [], [], []
        reset_peak_rss()
        for _ in range(repeat):
            t0 = time.perf_counter()
            grid = coverage_grid(collector=collector, first_day=first, last_day=last, now=now)
            t1 = time.perf_counter()
            svg = coverage_svg(grid, day_url="/x/SYMBOL/0000-00-00/")
            t2 = time.perf_counter()
            grid_s.append(t1 - t0)
            svg_s.append(t2 - t1)
        page_s, size = self._page(collector, last, days, repeat)
        stored = sum(c[0] for _, cells in grid["rows"] for c in cells)
        missing = sum(c[1] - c[0] for _, cells in grid["rows"] for c in cells)
        no_data = sum(c[2] for _, cells in grid["rows"] for c in cells)
        made_missing = sum(b - max(a, listed[n]) for n, h in zip(names, holes, strict=True)
                           for a, b in h if b > listed[n])
        rows = Candle.objects.filter(collector=collector).count()
        med = statistics.median
        self.stdout.write(
            f"Database: {connection.vendor}; {len(names)} symbols x {days} days = {len(names) * days:,} cells "
            f"over {rows:,} candles\n"
            f"Coverage grid (SQL): median {med(grid_s) * 1000:.0f} ms (min {min(grid_s) * 1000:.0f}, "
            f"max {max(grid_s) * 1000:.0f}) of {repeat}\n"
            f"SVG: median {med(svg_s) * 1000:.0f} ms, {len(svg):,} bytes, {svg.count('<rect'):,} rectangles\n"
            f"Admin page (request to response, through the test client): median {med(page_s) * 1000:.0f} ms, "
            f"{size:,} bytes\nPeak RSS {peak_rss_mb():.0f} MB")
        problems = []
        if stored != rows:
            problems.append(f"grid counts {stored:,} stored candles, the table has {rows:,}")
        if missing != made_missing:
            problems.append(f"grid counts {missing:,} missing candles, the benchmark made {made_missing:,}")
        if no_data != sum(listed.values()):
            problems.append(f"grid counts {no_data:,} no-data slots, the ledger has {sum(listed.values()):,}")
        if problems:
            raise CommandError("Check FAILED: " + "; ".join(problems))
        self.stdout.write(f"Check passed: stored, missing ({missing:,}) and no-data ({no_data:,}) slots match.")

    def _page(self, collector, last, days, repeat):
        user, _ = get_user_model().objects.get_or_create(
            username="bench-coverage", defaults={"is_staff": True, "is_superuser": True})
        client = Client()
        client.force_login(user)
        url = reverse("admin:quality_coverage", args=[collector.pk]) + f"?end={last}&days={days}"
        times = []
        try:
            for _ in range(repeat):
                t0 = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise CommandError(f"admin page answered {response.status_code}")
        finally:
            user.delete()
        return times, len(response.content)
