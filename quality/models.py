"""Rows that broke a validation rule: kept with the rule and the raw payload, never as data."""

from django.db import models


class QuarantinedRow(models.Model):
    collector = models.ForeignKey("collectors.Collector", on_delete=models.CASCADE, related_name="quarantined")
    symbol = models.CharField(max_length=32)
    series = models.CharField(max_length=16, blank=True)
    open_time = models.DateTimeField(null=True, blank=True)
    rule = models.CharField(max_length=40, db_index=True)
    payload = models.JSONField()
    run = models.ForeignKey("collectors.CollectionRun", null=True, blank=True, on_delete=models.SET_NULL)
    backfill = models.ForeignKey("backfills.BackfillJob", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["collector", "symbol", "open_time"])]

    def __str__(self):
        return f"{self.symbol} {self.open_time} {self.rule}"


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
