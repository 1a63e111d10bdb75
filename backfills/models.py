"""The ledger of ranges the source answered as empty (not listed yet, delisted, outages)."""

from django.db import models, transaction

from backfills.ranges import merge


class EmptyRangeQuerySet(models.QuerySet):
    def of(self, collector_id, symbol, series):
        return self.filter(collector_id=collector_id, symbol=symbol, series=series)

    def overlapping(self, start, end):
        return self.filter(start__lt=end, end__gt=start)


class EmptyRange(models.Model):
    """[start, end) for which the source was asked and answered that no data exists."""

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE,
                                  related_name="empty_ranges")
    symbol = models.CharField(max_length=32)
    series = models.CharField(max_length=16, blank=True, help_text="Candle interval, if any.")
    start = models.DateTimeField()
    end = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    objects = EmptyRangeQuerySet.as_manager()

    class Meta:
        ordering = ["collector", "symbol", "series", "start"]
        verbose_name = "range the exchange had no data for"
        verbose_name_plural = "ranges the exchange had no data for"
        indexes = [models.Index(fields=["collector", "symbol", "series", "start"])]

    def __str__(self):
        return f"{self.symbol} {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M}"

    @classmethod
    def record(cls, *, collector_id, symbol, series, ranges):
        """Add ranges to the ledger, merged with touching ones so it stays one row per hole."""
        ranges = merge(ranges)
        if not ranges:
            return
        with transaction.atomic():
            mine = cls.objects.of(collector_id, symbol, series)
            lo, hi = ranges[0][0], ranges[-1][1]
            # Touching rows (end == lo or start == hi) merge too, hence lte/gte.
            touching = list(mine.filter(start__lte=hi, end__gte=lo).select_for_update())
            merged = merge(ranges + [(r.start, r.end) for r in touching])
            mine.filter(pk__in=[r.pk for r in touching]).delete()
            cls.objects.bulk_create(cls(collector_id=collector_id, symbol=symbol, series=series,
                                        start=s, end=e) for s, e in merged)

    @classmethod
    def ranges(cls, *, collector_id, symbol, series, start, end):
        rows = cls.objects.of(collector_id, symbol, series).overlapping(start, end)
        return [(max(r.start, start), min(r.end, end)) for r in rows.order_by("start")]
