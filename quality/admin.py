from django.contrib import admin

from collectors.admin import ReadOnlyAdmin
from quality.models import QuarantinedRow, Revision
from quality.rules import RULES


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(ReadOnlyAdmin):
    list_display = ["symbol", "open_time", "rule", "rule_meaning", "collector", "run", "backfill", "created_at"]
    list_filter = ["rule", "collector"]
    search_fields = ["^symbol"]
    readonly_fields = ["collector", "symbol", "series", "open_time", "rule", "payload", "run", "backfill",
                       "created_at"]

    @admin.display(description="meaning")
    def rule_meaning(self, obj):
        return RULES.get(obj.rule, "")


@admin.register(Revision)
class RevisionAdmin(ReadOnlyAdmin):
    """Candles the exchange changed after we stored them (the new values are stored)."""

    list_display = ["symbol", "open_time", "changed_fields", "collector", "run", "backfill", "detected_at"]
    list_filter = ["collector"]
    search_fields = ["^symbol"]
    readonly_fields = ["collector", "symbol", "series", "open_time", "changes", "run", "backfill", "detected_at"]

    @admin.display(description="changed")
    def changed_fields(self, obj):
        return ", ".join(f"{k}: {v[0]} → {v[1]}" for k, v in obj.changes.items())
