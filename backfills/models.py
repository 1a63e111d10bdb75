"""The ledgers of ranges: what the source answered as empty (not listed yet, delisted, outages),
what runs and backfills could not fetch; backfill jobs and their chunks."""

from django.db import models
from django.db.models import Count, Q, Sum
from django.utils import timezone

from collectors.db import atomic_retry
from collectors.models import Job, WorkItem
from collectors.times import merge


class RangeQuerySet(models.QuerySet):
    def of(self, collector_id, symbol, series):
        return self.filter(collector_id=collector_id, symbol=symbol, series=series)

    def overlapping(self, start, end):
        return self.filter(start__lt=end, end__gt=start)


class SymbolRange(models.Model):
    """[start, end) of one symbol's series of a collector: what the ledgers below are made of."""

    symbol = models.CharField(max_length=32)
    series = models.CharField(max_length=16, blank=True, help_text="Candle interval, if any.")
    start = models.DateTimeField()
    end = models.DateTimeField()

    objects = RangeQuerySet.as_manager()

    class Meta:
        abstract = True
        # collector_id, not collector: no join (nor a lock, in FOR UPDATE) on the collector row.
        ordering = ["collector_id", "symbol", "series", "start"]

    def __str__(self):
        return f"{self.symbol} {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M}"

    @classmethod
    def ranges(cls, *, collector_id, symbol, series, start, end):
        """The ledger's ranges of the symbol within [start, end), clipped and merged."""
        rows = cls.objects.of(collector_id, symbol, series).overlapping(start, end)
        return merge((max(r.start, start), min(r.end, end)) for r in rows)


class EmptyRange(SymbolRange):
    """[start, end) for which the source was asked and answered that no data exists."""

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE,
                                  related_name="empty_ranges")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(SymbolRange.Meta):
        verbose_name = "range the exchange had no data for"
        verbose_name_plural = "ranges the exchange had no data for"
        indexes = [models.Index(fields=["collector", "symbol", "series", "start"])]

    @classmethod
    def record(cls, *, collector_id, symbol, series, ranges):
        """Add ranges to the ledger, merged with touching ones so it stays one row per hole."""
        ranges = merge(ranges)
        if ranges:
            atomic_retry(cls._merge_in, collector_id, symbol, series, ranges)

    @classmethod
    def _merge_in(cls, collector_id, symbol, series, ranges):
        mine = cls.objects.of(collector_id, symbol, series)
        lo, hi = ranges[0][0], ranges[-1][1]
        # Locks only this symbol's touching rows, in index order: no join (Meta.ordering names
        # collector_id, not the collector, whose row every page's inserts hold a shared lock on
        # for their foreign key: two pages upgrading that lock deadlocked), and at READ
        # COMMITTED no gap locks, so pages of other symbols never wait here. Touching rows
        # (end == lo or start == hi) merge too, hence lte/gte.
        touching = list(mine.filter(start__lte=hi, end__gte=lo).order_by("start").select_for_update())
        merged = merge(ranges + [(r.start, r.end) for r in touching])
        mine.filter(pk__in=[r.pk for r in touching]).delete()
        cls.objects.bulk_create(cls(collector_id=collector_id, symbol=symbol, series=series,
                                    start=s, end=e) for s, e in merged)



class MissingRange(SymbolRange):
    """[start, end) that a run or backfill could not fetch (failed after retries, left when
    the upstream or the database was down, cancelled): gap_fill fetches it again, even after
    the last stored candle. Written when the item finishes; forgotten by the fetch that leaves
    no hole in it (collectors.services)."""

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE,
                                  related_name="missing_ranges")
    reason = models.CharField(max_length=300, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta(SymbolRange.Meta):
        verbose_name = "range not fetched (gap_fill fetches it)"
        verbose_name_plural = "ranges not fetched (gap_fill fetches them)"
        indexes = [models.Index(fields=["collector", "symbol", "series", "start"])]

    @classmethod
    def record(cls, *, collector_id, symbol, series, ranges, reason=""):
        """Add ranges; rows they cover are replaced (a range failing again is one row). No
        locking read: the delete locks only the rows it removes."""
        ranges = merge(ranges)
        mine = cls.objects.of(collector_id, symbol, series)
        for start, end in ranges:
            mine.filter(start__gte=start, end__lte=end).delete()
        cls.objects.bulk_create(cls(collector_id=collector_id, symbol=symbol, series=series, start=s,
                                    end=e, reason=reason[:300]) for s, e in ranges)


class BackfillJob(Job):
    """A planned history fill: a collector's symbols over a date range, split into chunks."""

    noun = "backfill"

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="backfills")
    start = models.DateTimeField(help_text="First open time wanted (UTC).")
    end = models.DateTimeField(help_text="Fetch up to here, exclusive (UTC).")
    symbols = models.JSONField(default=list)
    force = models.BooleanField(default=False, help_text="Fetch and overwrite even where data exists.")
    estimated_records = models.PositiveBigIntegerField(default=0)
    estimated_requests = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=120, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True,
                                  help_text="The API request that created it: find all its log lines by it.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"Backfill {self.pk} ({self.collector.slug}, {self.status})"

    def progress(self, now=None) -> dict:
        """Chunks and records done of total, percent (by estimated records), rate and ETA."""
        unfinished = BackfillChunk.UNFINISHED
        agg = self.chunks.aggregate(
            total=Count("id"), done=Count("id", filter=~Q(status__in=unfinished)),
            failed=Count("id", filter=Q(status__in=[BackfillChunk.FAILED, BackfillChunk.PARTIAL])),
            records=Sum("records"), requests=Sum("requests"),
            done_estimate=Sum("estimated_records", filter=~Q(status__in=unfinished)))
        records = agg["records"] or 0
        total_estimate = self.estimated_records
        percent = (100.0 * (agg["done_estimate"] or 0) / total_estimate if total_estimate
                   else (100.0 if agg["total"] == agg["done"] else 0.0))
        elapsed = (((self.finished_at or now or timezone.now()) - self.started_at).total_seconds()
                   if self.started_at else 0.0)
        rate = records / elapsed if elapsed > 0 else 0.0
        left = max(total_estimate - (agg["done_estimate"] or 0), 0)
        return {"chunks_done": agg["done"], "chunks_total": agg["total"], "chunks_failed": agg["failed"],
                "records": records, "records_total": total_estimate, "requests": agg["requests"] or 0,
                "percent": round(min(percent, 100.0), 1), "records_per_second": round(rate, 1),
                "eta_seconds": round(left / rate, 1) if rate and self.is_active else None}

    def symbol_progress(self) -> list[dict]:
        """Per symbol: chunks done of total, records, requests and failed chunks."""
        rows = (self.chunks.values("symbol").order_by("symbol").annotate(
            chunks_total=Count("id"),
            chunks_done=Count("id", filter=~Q(status__in=BackfillChunk.UNFINISHED)),
            records=Sum("records"), requests=Sum("requests"),
            failed=Count("id", filter=Q(status__in=[BackfillChunk.FAILED, BackfillChunk.PARTIAL]))))
        return [{**r, "records": r["records"] or 0, "requests": r["requests"] or 0,
                 "percent": round(100.0 * r["chunks_done"] / r["chunks_total"], 1)} for r in rows]


class BackfillChunk(WorkItem):
    """One symbol over one time span of a backfill; claimed and fetched by one worker."""

    parent_active = {"job__status__in": BackfillJob.ACTIVE}
    job = models.ForeignKey(BackfillJob, on_delete=models.CASCADE, related_name="chunks")
    start = models.DateTimeField()
    end = models.DateTimeField()
    estimated_records = models.PositiveIntegerField(default=0)
    estimated_requests = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["job_id", "symbol", "start"]
        indexes = [models.Index(fields=["job", "status"])]

    def __str__(self):
        return f"{self.symbol} {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} ({self.status})"
