"""Benchmark: read F news feeds of N entries each from the emulator into the configured
database through the engine (inline), then read them again unchanged (304s) and whole
(gap_fill: every entry parsed and found stored)."""

import resource
import time
from datetime import date

from django.core.management.base import BaseCommand
from django.db import connection

from collectors import services
from collectors.bench import allow_local_emulator
from collectors.emulator import ExchangeEmulator
from collectors.models import Article, Collector
from quality.models import QuarantinedRow


class Command(BaseCommand):
    help = "Measure news collection speed (articles/s, requests, wall time, peak memory)."

    def add_arguments(self, parser):
        parser.add_argument("--feeds", type=int, default=20)
        parser.add_argument("--items", type=int, default=500, help="Entries per feed (the emulator's window).")

    def handle(self, *args, feeds, items, **options):
        allow_local_emulator()
        emulator = ExchangeEmulator(now_ms=1_763_640_000_000, feed_items=items).start()
        try:
            urls = [f"{emulator.url}/feeds/{'markets.rss' if i % 2 else 'research.atom'}?edition={i}"
                    for i in range(feeds)]
            Collector.objects.filter(slug="bench-news").delete()
            collector = Collector(slug="bench-news", name="News benchmark", kind="rss_news", schedule="",
                                  config={"feeds": urls}, beginning_date=date(2025, 1, 1))
            collector.full_clean()
            collector.save()
            self.stdout.write(f"Database: {connection.vendor} {connection.settings_dict['NAME']}; "
                              f"{feeds} feeds x {items} entries (RSS and Atom, half each)")
            for label, mode in (("first read", "forward"), ("unchanged", "forward"), ("read whole", "gap_fill")):
                emulator.reset_stats()
                began = time.perf_counter()
                run = services.run_trigger(collector=collector, mode=mode, triggered_by="bench", enqueue=False)
                services.run_start(run_id=run.pk, inline=True)
                wall = time.perf_counter() - began
                run.refresh_from_db()
                done = run.symbols.values_list("records", "invalid", "duplicates")
                records, invalid, seen = (sum(column) for column in zip(*done, strict=True))
                read = records + invalid + seen
                self.stdout.write(
                    f"{label} ({mode}): {run.status}, {read:,} entries read ({records:,} stored, {invalid:,} "
                    f"quarantined, {seen:,} already stored) in {wall:.2f} s = {read / wall:,.0f} entries/s; "
                    f"{emulator.stats()['requests']} requests; peak RSS "
                    f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
            self.stdout.write(f"Stored: {Article.objects.filter(collector=collector).count():,} articles, "
                              f"{QuarantinedRow.objects.filter(collector=collector).count():,} quarantined")
        finally:
            emulator.stop()
