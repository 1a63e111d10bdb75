from django.contrib import admin

from backfills.models import EmptyRange


@admin.register(EmptyRange)
class EmptyRangeAdmin(admin.ModelAdmin):
    """Ranges the exchange answered with no data: not asked again, not counted as missing."""

    list_display = ["symbol", "series", "start", "end", "collector", "updated_at"]
    list_filter = ["collector", "series"]
    search_fields = ["^symbol"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
