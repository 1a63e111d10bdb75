"""Rows that broke a validation rule: kept with the rule and the raw payload, never as data."""

from django.db import models

from collectors.models import Job


class QuarantinedRow(models.Model):
    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="quarantined")
    symbol = models.CharField(max_length=32)
    series = models.CharField(max_length=16, blank=True)
    open_time = models.DateTimeField(null=True, blank=True)
    rule = models.CharField(max_length=40, db_index=True)
    payload = models.JSONField()
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True,
                                   help_text="Of rule and payload, for events: quarantined once however often seen.")
    run = models.ForeignKey("collectors.CollectionRun", null=True, blank=True, on_delete=models.SET_NULL)
    backfill = models.ForeignKey("backfills.BackfillJob", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["collector", "symbol", "open_time"])]

    def __str__(self):
        return f"{self.symbol} {self.open_time or ''} {self.rule}".replace("  ", " ")


class Revision(models.Model):
    """A stored candle the exchange now serves with other values: history changed."""

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="revisions")
    symbol = models.CharField(max_length=32)
    series = models.CharField(max_length=16, blank=True)
    open_time = models.DateTimeField()
    changes = models.JSONField(help_text='{"field": ["stored", "now served"], ...}')
    run = models.ForeignKey("collectors.CollectionRun", null=True, blank=True, on_delete=models.SET_NULL)
    backfill = models.ForeignKey("backfills.BackfillJob", null=True, blank=True, on_delete=models.SET_NULL)
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["collector", "symbol", "open_time"])]

    def __str__(self):
        return f"{self.symbol} {self.open_time} {', '.join(self.changes)}"


class QualitySnapshot(models.Model):
    """A collector's data-quality report as it was at `taken_at` (the trend; old ones pruned)."""

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField()
    score = models.FloatField(help_text="data_quality_score, 0-100")
    completeness = models.FloatField(null=True, blank=True,
                                     help_text="stored / expected, 0-1; none for events (a feed has no expected count)")
    freshness_seconds = models.BigIntegerField(null=True, blank=True)
    total_records = models.BigIntegerField()
    invalid_records = models.BigIntegerField()
    duplicate_records = models.BigIntegerField()
    revisions = models.BigIntegerField()
    gaps = models.BigIntegerField()
    compute_seconds = models.FloatField()
    report = models.JSONField(help_text="the report as GET /api/admin/data-quality/ served it")

    class Meta:
        ordering = ["-taken_at"]
        indexes = [models.Index(fields=["collector", "-taken_at"])]
        get_latest_by = "taken_at"

    def __str__(self):
        return f"{self.collector} {self.taken_at:%Y-%m-%d %H:%M} score {self.score}"


class DriftAudit(Job):
    """Re-fetch a random sample of stored candles and compare: does the source still agree?"""

    noun = "audit"
    # An audit is never partial, nor cancelled.
    STATUSES = [(s, s) for s in (Job.QUEUED, Job.RUNNING, Job.COMPLETE, Job.FAILED)]

    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="audits")
    status = models.CharField(max_length=16, choices=STATUSES, default=Job.QUEUED, db_index=True)
    sample_size = models.PositiveIntegerField()
    sampled = models.PositiveIntegerField(default=0, help_text="stored candles compared")
    differing = models.PositiveIntegerField(default=0, help_text="candles whose values changed at the source")
    unavailable = models.PositiveIntegerField(default=0, help_text="sampled candles the source no longer serves")
    differences = models.JSONField(default=list, blank=True,
                                   help_text='[{"symbol", "open_time", "field", "stored", "source"}, ...]')
    requests = models.PositiveIntegerField(default=0)
    triggered_by = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"audit {self.pk} of {self.collector} ({self.status})"
