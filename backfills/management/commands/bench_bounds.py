"""Work per request, bounded: what the backfill plan and the CSV export cost at their limits.

1. The estimate of a plan far over BACKFILL_MAX_CHUNKS (500 symbols x 50 years of 1s candles):
   time and peak memory until it is refused.
2. The estimate and the creation of a large accepted plan (100 symbols x 5 years of 1m).
3. A CSV export of --csv-rows candles through the API view: rows/s (EXPORT_MAX_ROWS is set
   from this and the web server's timeout).
Everything it creates is deleted again.
"""

import time
import tracemalloc
from datetime import date, datetime, timezone
from unittest import mock

from django.conf import settings
from django.core.management.base import BaseCommand
from django.test import Client, override_settings

from backfills import services
from collectors import storage
from collectors.models import ApiKey, Candle, Collector


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def measured(fn, *, trace=True):
    """(result or raised exception, seconds, peak MB) of fn(), under tracemalloc if `trace`
    (which slows Python down a few times: timings that matter are taken without it)."""
    if trace:
        tracemalloc.start()
    began = time.perf_counter()
    try:
        result = fn()
    except services.PlanTooLarge as error:
        result = error
    seconds = time.perf_counter() - began
    if not trace:
        return result, seconds, None
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


class Command(BaseCommand):
    help = "Measure the backfill plan's and the CSV export's cost at their limits."

    def add_arguments(self, parser):
        parser.add_argument("--csv-rows", type=int, default=300_000)

    def handle(self, *args, csv_rows, **options):
        Collector.objects.filter(slug__startswith="bench-bounds").delete()
        try:
            self.plans()
            self.export(csv_rows)
        finally:
            Collector.objects.filter(slug__startswith="bench-bounds").delete()
            ApiKey.objects.filter(name="bench-bounds").delete()

    def plans(self):
        huge = Collector.objects.create(
            slug="bench-bounds-1s", name="bench", kind="binance_klines", beginning_date=date(1975, 1, 1),
            config={"base_url": "https://api.binance.com", "interval": "1s"},
            symbols=[f"S{i:03d}USDT" for i in range(500)])
        error, seconds, peak = measured(lambda: services.backfill_estimate(
            collector=huge, start=utc(1975, 1, 1), end=utc(2024, 12, 31)))
        self.stdout.write(f"estimate 500 symbols x 50 years of 1s: refused ({error.field}) in "
                          f"{seconds * 1000:.0f} ms, peak {peak * 1024:.0f} KiB "
                          f"(BACKFILL_MAX_CHUNKS={settings.BACKFILL_MAX_CHUNKS:,})")

        big = Collector.objects.create(
            slug="bench-bounds-1m", name="bench", kind="binance_klines", beginning_date=date(2020, 1, 1),
            config={"base_url": "https://api.binance.com", "interval": "1m"},
            symbols=[f"S{i:03d}USDT" for i in range(100)])
        window = {"collector": big, "start": utc(2020, 1, 1), "end": utc(2024, 12, 31, 23, 59)}
        estimate, seconds, _ = measured(lambda: services.backfill_estimate(**window), trace=False)
        _, _, peak = measured(lambda: services.backfill_estimate(**window))
        self.stdout.write(f"estimate 100 symbols x 5 years of 1m: {estimate['chunks']:,} chunks, "
                          f"{estimate['estimated_records']:,} candles, {seconds:.2f} s, peak {peak:.1f} MB")
        with mock.patch.object(services, "_enqueue_job"):  # recorded, not run
            (job, _), seconds, _ = measured(lambda: services.backfill_create(created_by="bench", **window),
                                            trace=False)
        self.stdout.write(f"create the same job: {job.chunks.count():,} chunks stored in {seconds:.2f} s")

    def export(self, rows):
        collector = Collector.objects.create(
            slug="bench-bounds-csv", name="bench", kind="binance_klines", beginning_date=date(2020, 1, 1),
            config={"base_url": "https://api.binance.com", "interval": "1m"}, symbols=["BTCUSDT"])
        base = 1_577_836_800_000
        for i in range(0, rows, 10_000):
            storage.upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1m", rows=[
                (base + k * 60_000, "7195.24000000", "7196.25000000", "7183.14000000", "7186.68000000",
                 "51.64281200", base + k * 60_000 + 59_999, "371033.17655818", 493, "19.46522000",
                 "139844.98744745") for k in range(i, min(i + 10_000, rows))])
        assert Candle.objects.filter(collector=collector).count() == rows
        _, key = ApiKey.objects.create_key(name="bench-bounds", scope=ApiKey.ADMIN)
        with self.settings_patch(API_RATE_LIMIT_PER_MINUTE=0, EXPORT_MAX_ROWS=max(rows, settings.EXPORT_MAX_ROWS)):
            began = time.perf_counter()
            response = Client().get(f"/api/admin/candles/?collector={collector.slug}&format=csv",
                                    HTTP_X_API_KEY=key)
            size = lines = 0
            for part in response.streaming_content:
                size += len(part)
                lines += part.count(b"\n")
            seconds = time.perf_counter() - began
        self.stdout.write(f"CSV export: {lines - 1:,} rows, {size / 2**20:.1f} MB in {seconds:.1f} s = "
                          f"{(lines - 1) / seconds:,.0f} rows/s (EXPORT_MAX_ROWS={settings.EXPORT_MAX_ROWS:,})")

    @staticmethod
    def settings_patch(**values):
        return override_settings(**values)
