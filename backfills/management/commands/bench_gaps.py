"""Benchmark: find the missing ranges of N symbols x M hourly candles with stored_gaps, and
check them against the holes the benchmark made. With --keep the data stays for the next run."""

import hashlib
import statistics
import time
from contextlib import nullcontext
from datetime import date, datetime, timedelta, timezone

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from backfills.gaps import stored_gaps
from collectors import storage
from collectors.bench import (
    MIDDLE,
    TAIL,
    batched,
    insert_sql,
    make_holes,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    stored_indices,
)
from collectors.models import Candle, Collector

SLUG = "bench-gaps"
START = datetime(2014, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(hours=1)
HOUR_MS = 3_600_000


class Command(BaseCommand):
    help = ("Measure gap analysis (backfills.gaps.stored_gaps) over many hourly candles with "
            "known holes, and fail unless the gaps found are exactly those holes.")

    def add_arguments(self, parser):
        parser.add_argument("--symbols", type=int, default=100)
        parser.add_argument("--candles", type=int, default=10_000_000,
                            help="Hour slots in all, split evenly over the symbols; the holes are "
                                 "left out, so slightly fewer rows are stored.")
        parser.add_argument("--holes-per-symbol", type=int, default=200,
                            help="Average; each symbol gets a seeded random count (half to 1.5x).")
        parser.add_argument("--keep", action="store_true",
                            help="Leave the collector and its candles, so the next run reuses them.")
        parser.add_argument("--refill", action="store_true",
                            help="Delete and write the candles again even if they match.")
        parser.add_argument("--fill-method", choices=["insert", "upsert"], default="insert",
                            help="insert: cursor executemany of a plain INSERT; upsert: "
                                 "collectors.storage.upsert_candles.")
        parser.add_argument("--batch", type=int, default=20_000,
                            help="Rows per executemany, each batch one transaction.")

    def handle(self, *args, symbols, candles, holes_per_symbol, keep, refill, fill_method, batch,
               **options):
        if symbols < 1 or candles < symbols or batch < 1:
            raise CommandError("Need --symbols >= 1, --candles >= --symbols and --batch >= 1.")
        slots = candles // symbols
        names = [f"BENCH{i:03d}USDT" for i in range(1, symbols + 1)]
        holes = make_holes(symbols=symbols, slots=slots, holes_per_symbol=holes_per_symbol)
        expected_rows = symbols * slots - sum(b - a for h in holes for a, b in h)
        digest = hashlib.sha256(repr((names, slots, holes)).encode()).hexdigest()[:16]
        fingerprint = f"Benchmark gaps: {symbols} x {slots} h from {START:%Y-%m-%d}, holes {digest}"
        db = f"{connection.vendor} {connection.settings_dict['NAME']}"
        self.stdout.write(f"Database: {db}; {symbols} symbols x {slots:,} h "
                          f"({slots / 24 / 365.25:.1f} years) from {START:%Y-%m-%d}; "
                          f"{sum(map(len, holes)):,} holes, {symbols * slots - expected_rows:,} h missing; "
                          f"{expected_rows:,} rows to store")

        collector = Collector.objects.filter(slug=SLUG).first()
        reuse = False
        if collector and not refill and collector.name == fingerprint and collector.symbols == names:
            began = time.monotonic()
            stored = Candle.objects.filter(collector=collector).count()
            reuse = stored == expected_rows
            self.stdout.write(f"Found {stored:,} rows from an earlier run with the same parameters "
                              f"(counted in {time.monotonic() - began:.1f} s): "
                              f"{'reusing them' if reuse else 'refilling'}")
        if not reuse:
            collector = self._fill(collector, names, slots, holes, expected_rows, fill_method, batch)
            collector.name = fingerprint  # only now: an interrupted fill is never reused
            collector.save(update_fields=["name"])

        failed = self._analyse(collector, names, slots, holes)
        self._report_size(collector)
        if keep:
            self.stdout.write(f"Kept collector {SLUG!r} and its candles (--keep); the next run reuses them.")
        else:
            began = time.monotonic()
            self._delete(collector, names)
            collector.delete()
            self.stdout.write(f"Deleted collector {SLUG!r} and its candles in {time.monotonic() - began:.1f} s "
                              f"(--keep leaves them for the next run; deleting does not shrink the file).")
        if failed:
            raise CommandError(failed)

    def _fill(self, collector, names, slots, holes, expected_rows, method, batch):
        defaults = {"name": "Benchmark gaps: filling (incomplete)", "kind": "binance_klines",
                    "config": {"base_url": "http://127.0.0.1:9", "interval": "1h"},
                    "symbols": names, "beginning_date": date(2014, 1, 1), "enabled": False}
        if collector:
            began = time.monotonic()
            self._delete(collector, set(names) | set(collector.symbols or []))
            self.stdout.write(f"Deleted the earlier candles of {SLUG!r} in {time.monotonic() - began:.1f} s")
        collector, _ = Collector.objects.update_or_create(slug=SLUG, defaults=defaults)
        opens = [(START + i * STEP).strftime("%Y-%m-%d %H:%M:%S") for i in range(slots)]
        closes = [text[:14] + "59:59.999000" for text in opens]  # open + 1 h - 1 ms
        start_ms = int(START.timestamp() * 1000)
        sql = insert_sql()
        cid, written, build_s, db_s = collector.pk, 0, 0.0, 0.0
        self.stdout.write(f"Filling with {method} in batches of {batch:,} rows ...")
        began = time.monotonic()
        for n, (name, symbol_holes) in enumerate(zip(names, holes, strict=False), 1):
            for chunk in batched(stored_indices(symbol_holes, slots), batch):
                t0 = time.monotonic()
                if method == "insert":
                    params = [(cid, name, "1h", opens[i], *MIDDLE, closes[i], *TAIL) for i in chunk]
                else:
                    params = [(start_ms + i * HOUR_MS, *MIDDLE, start_ms + i * HOUR_MS + HOUR_MS - 1, *TAIL)
                              for i in chunk]
                t1 = time.monotonic()
                with transaction.atomic():
                    if method == "insert":
                        with connection.cursor() as cursor:
                            cursor.executemany(sql, params)
                    else:
                        storage.upsert_candles(collector_id=cid, symbol=name, interval="1h", rows=params)
                t2 = time.monotonic()
                build_s, db_s, written = build_s + t1 - t0, db_s + t2 - t1, written + len(params)
            if n % 10 == 0 or n == len(names):
                wall = time.monotonic() - began
                self.stdout.write(f"  {n}/{len(names)} symbols, {written:,} rows, {written / wall:,.0f} rows/s")
                self.stdout.flush()
        wall = time.monotonic() - began
        self.stdout.write(f"Fill: {written:,} rows in {wall:.1f} s = {written / wall:,.0f} rows/s "
                          f"({method}, {batch:,}-row batches; building parameters {build_s:.1f} s, "
                          f"database {db_s:.1f} s); peak RSS so far {peak_rss_mb():.0f} MB")
        if written != expected_rows:
            raise CommandError(f"wrote {written:,} rows, expected {expected_rows:,}")
        return collector

    def _delete(self, collector, names):
        """One symbol per statement: one DELETE of millions of rows is slow and huge to undo."""
        for name in sorted(names):
            with transaction.atomic():
                Candle.objects.filter(collector=collector, symbol=name).delete()
        Candle.objects.filter(collector=collector).delete()

    def _analyse(self, collector, names, slots, holes) -> str:
        """Time stored_gaps per symbol over the full range; return a failure message or ''."""
        end = START + slots * STEP
        captured = []

        def capture(execute, sql, params, many, context):
            captured.append((sql, params))
            return execute(sql, params, many, context)

        rss_before, process_peak = rss_mb(), peak_rss_mb()
        peak_reset = reset_peak_rss()  # also resets ru_maxrss, hence process_peak above
        timings, mismatches, found = [], [], 0
        began = time.monotonic()
        for n, (name, symbol_holes) in enumerate(zip(names, holes, strict=False)):
            t0 = time.perf_counter()
            with connection.execute_wrapper(capture) if n == 0 else nullcontext():
                gaps = stored_gaps(collector_id=collector.pk, symbol=name, series="1h",
                                   start=START, end=end, step=STEP)
            timings.append(time.perf_counter() - t0)
            found += len(gaps)
            expected = [(START + a * STEP, START + b * STEP) for a, b in symbol_holes]
            if gaps != expected:
                mismatches.append((name, expected, gaps))
        wall = time.monotonic() - began
        slowest = names[timings.index(max(timings))]
        peak = peak_rss_mb()
        during = f"{peak:.0f} MB" if peak_reset else "unknown (peak counter not resettable)"
        p90 = statistics.quantiles(timings, n=10, method="inclusive")[-1] if len(timings) > 1 else timings[0]
        self.stdout.write(
            f"Gap analysis: {len(names)} symbols in {wall:.2f} s; per symbol p50 "
            f"{statistics.median(timings) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, "
            f"max {max(timings) * 1000:.1f} ms ({slowest}); {found:,} gaps found")
        self.stdout.write(f"RSS: {rss_before:.0f} MB before the analysis, {rss_mb():.0f} MB after, peak "
                          f"during it {during}; process peak {max(process_peak, peak):.0f} MB")
        if captured:
            self._explain(*captured[0])
        if not mismatches:
            self.stdout.write(f"Check passed: the gaps found are exactly the {found:,} holes made.")
            return ""
        lines = [f"Check FAILED: {len(mismatches)} of {len(names)} symbols differ from the holes made."]
        for name, expected, gaps in mismatches[:5]:
            missed = sorted(set(expected) - set(gaps))
            extra = sorted(set(gaps) - set(expected))
            lines.append(f"  {name}: {len(expected)} holes made, {len(gaps)} gaps found; not found "
                         f"{_fmt(missed)}; not made {_fmt(extra)}")
        self.stdout.write("\n".join(lines))
        return lines[0]

    def _explain(self, sql, params):
        prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
        with connection.cursor() as cursor:
            cursor.execute(prefix + sql, params)
            columns = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        self.stdout.write("Query plan of stored_gaps:")
        for row in rows:
            if connection.vendor == "sqlite":
                self.stdout.write(f"  {row[-1]}")
            else:
                self.stdout.write("  " + ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)
                                                   if v is not None))

    def _report_size(self, collector):
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("PRAGMA page_size")
                page = cursor.fetchone()[0]
                cursor.execute("PRAGMA page_count")
                pages = cursor.fetchone()[0]
                cursor.execute("PRAGMA freelist_count")
                free = cursor.fetchone()[0]
                self.stdout.write(f"Database size: {page * pages / 2**20:,.0f} MB in pages "
                                  f"({free * page / 2**20:,.0f} MB free) for the whole SQLite file")
            elif connection.vendor == "mysql":
                cursor.execute("SELECT data_length, index_length, data_free, table_rows FROM "
                               "information_schema.tables WHERE table_schema = DATABASE() "
                               "AND table_name = 'collectors_candle'")
                data, index, free, rows = cursor.fetchone()
                self.stdout.write(f"Table size (InnoDB estimate): data {data / 2**20:,.0f} MB + indexes "
                                  f"{index / 2**20:,.0f} MB ({free / 2**20:,.0f} MB free), about {rows:,} rows")
        total = Candle.objects.count()
        mine = Candle.objects.filter(collector=collector).count()
        self.stdout.write(f"collectors_candle holds {total:,} rows, {mine:,} of them {SLUG!r}")


def _fmt(ranges, limit=3):
    text = ", ".join(f"[{s:%Y-%m-%d %H:%M}, {e:%Y-%m-%d %H:%M})" for s, e in ranges[:limit])
    return f"{text}{' …' if len(ranges) > limit else ''}" if ranges else "none"
