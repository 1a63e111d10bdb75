"""Admin: collectors with collect-now actions, live runs, API keys, candles (read-only)."""

from datetime import datetime, timezone as dt_timezone

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from collectors import services
from collectors.models import (
    Alert,
    ApiKey,
    Article,
    Candle,
    CircuitBreaker,
    CollectionRun,
    Collector,
    RateWindow,
    RunSymbol,
)
from config.admin import ReadOnlyAdmin, progress_bar, refusal_message
from config.errors import InputError, NotActive, RunConflict
from quality.services import audit_start

admin.site.unregister(APIKey)  # the library's own model; we use ApiKey (with a scope)


def stored_rows_link(collector: Collector) -> tuple[str, str]:
    """(admin URL, name) of the rows an event collector stored: its source's model's list."""
    model = apps.get_model(collector.source_class.model)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?collector__id__exact={collector.pk}", str(model._meta.verbose_name_plural)


def _collect_action(mode):
    def action(modeladmin, request, queryset):
        for collector in queryset:
            try:
                run = services.run_trigger(collector=collector, mode=mode,
                                           triggered_by=f"admin:{request.user.get_username()}")
            except RunConflict as conflict:
                messages.warning(request, format_html(
                    'Not started: <a href="{}">run {}</a> of {} is already {}.',
                    reverse("admin:collectors_collectionrun_change", args=[conflict.run.pk]),
                    conflict.run.pk, collector.slug, conflict.run.status))
            except InputError as error:
                refusal_message(request, error, prefix=f"Not started for {collector.slug}: ")
            else:
                messages.success(request, format_html(
                    '<a href="{}">Run {}</a> of {} ({}) queued.',
                    reverse("admin:collectors_collectionrun_change", args=[run.pk]), run.pk,
                    collector.slug, mode))

    action.__name__ = f"collect_{mode}"
    action.short_description = f"Collect now: {mode.replace('_', ' ')}"
    return action


class CollectorForm(forms.ModelForm):
    class Meta:
        model = Collector
        fields = "__all__"
        widgets = {"config": forms.Textarea(attrs={"rows": 4, "cols": 80}),
                   "symbols": forms.Textarea(attrs={"rows": 3, "cols": 80})}


@admin.register(Collector)
class CollectorAdmin(admin.ModelAdmin):
    form = CollectorForm
    # The kind is in the filter; without its column the quality links fit beside the sidebar.
    list_display = ["slug", "name", "interval", "symbol_rule", "enabled", "schedule", "next_run", "last_run",
                    "quality"]
    list_filter = ["kind", "enabled"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    actions = [_collect_action(m) for m in services.MODES] + ["audit_drift"]

    @admin.action(description="Audit drift: re-fetch a random sample of stored candles and compare")
    def audit_drift(self, request, queryset):
        for collector in queryset:
            try:
                audit = audit_start(collector=collector, sample_size=settings.AUDIT_SAMPLE_SIZE,
                                    triggered_by=f"admin:{request.user.get_username()}")
            except InputError as error:
                refusal_message(request, error)
                continue
            messages.success(request, format_html(
                '<a href="{}">Audit {}</a> of {} queued ({} candles).',
                reverse("admin:quality_driftaudit_change", args=[audit.pk]), audit.pk, collector.slug,
                audit.sample_size))

    def changelist_view(self, request, extra_context=None):
        self._next_runs = services.schedule_next_runs()  # one query for the whole list
        return super().changelist_view(request, extra_context)

    @admin.display(description="next run (UTC)")
    def next_run(self, obj):
        when = getattr(self, "_next_runs", {}).get(obj.slug)
        return when.strftime("%Y-%m-%d %H:%M") if when else "—"

    @admin.display(description="quality")
    def quality(self, obj):
        if obj.grain is None:  # events: no expected count per day; browse the rows instead
            url, label = stored_rows_link(obj)
            return format_html('<a href="{}">report</a> · <a href="{}">{}</a>',
                               reverse("admin:quality_report", args=[obj.pk]), url, label)
        return format_html('<a href="{}">report</a> · <a href="{}">coverage</a>',
                           reverse("admin:quality_report", args=[obj.pk]),
                           reverse("admin:quality_coverage", args=[obj.pk]))

    @admin.display(description="interval")
    def interval(self, obj):
        return obj.config.get("interval", "—")

    @admin.display(description="symbols")
    def symbol_rule(self, obj):
        if obj.symbols:
            names = ", ".join(obj.symbols)
            return f"{len(obj.symbols)}: {names[:36]}{'…' if len(names) > 36 else ''}"  # keeps the row narrow
        return f"top {obj.config.get('top_n')} {obj.config.get('quote_asset', '')}"

    @admin.display(description="last run")
    def last_run(self, obj):
        run = obj.runs.first()
        if run is None:
            return "—"
        return format_html('<a href="../collectionrun/{}/change/">#{} {} ({})</a>',
                           run.pk, run.pk, run.mode, run.status)


class RunSymbolInline(admin.TabularInline):
    model = RunSymbol
    extra = 0
    can_delete = False
    fields = ["symbol", "status", "records", "invalid", "duplicates", "revisions", "requests", "retries",
              "throttled_seconds", "missing_ranges", "error", "attempts", "started_at", "finished_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CollectionRun)
class CollectionRunAdmin(admin.ModelAdmin):
    list_display = ["id", "collector", "mode", "status", "progress_column", "records",
                    "triggered_by", "created_at", "duration"]
    list_filter = ["status", "mode", "collector"]
    search_fields = ["=id", "collector__slug", "triggered_by", "symbols__symbol"]
    date_hierarchy = "created_at"
    readonly_fields = ["collector", "mode", "status", "start", "end", "requested_symbols",
                       "triggered_by", "task_id", "error", "created_at", "started_at",
                       "finished_at", "progress_column", "records"]
    inlines = [RunSymbolInline]
    actions = ["cancel_runs"]
    change_form_template = "admin/collectors/collectionrun/change_form.html"
    change_list_template = "admin/collectors/collectionrun/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("collector").with_progress()

    def has_add_permission(self, request):
        return False  # runs are started from a collector's actions, the API or a schedule

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Workers are writing for an active run; cancel it first (stored data stays either way).
        return super().has_delete_permission(request, obj) and not (obj and obj.is_active)

    @admin.display(description="progress")
    def progress_column(self, obj):
        progress = obj.progress()
        return format_html("{} <small>{}/{} symbols</small>",
                           progress_bar(progress["percent"], obj.status),
                           progress["symbols_done"], progress["symbols_total"])

    @admin.display(description="records")
    def records(self, obj):
        return f"{obj.progress()['records']:,}"

    @admin.display(description="duration")
    def duration(self, obj):
        seconds = obj.elapsed_seconds
        return "—" if seconds is None else f"{seconds:,.1f} s"

    @admin.action(description="Cancel selected runs (stored data stays)")
    def cancel_runs(self, request, queryset):
        for run in queryset.filter(status__in=CollectionRun.ACTIVE):
            try:
                services.run_cancel(run=run)
            except NotActive as error:  # it finished between the list and the click
                refusal_message(request, error)
            else:
                messages.success(request, f"Run {run.pk} cancelled.")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if request.method == "POST" and "_cancel_run" in request.POST and run is not None:
            if not request.user.has_perm("collectors.change_collectionrun"):
                raise PermissionDenied
            if run.is_active:
                try:
                    services.run_cancel(run=run)
                except NotActive as error:  # it finished since the page was shown
                    refusal_message(request, error)
                else:
                    messages.success(request, f"Run {run.pk} cancelled; data already stored stays.")
            return redirect(request.path)
        still_working = bool(run and run.symbols.filter(status=RunSymbol.RUNNING).exists())
        extra_context = {**(extra_context or {}), "run_active": bool(run and run.is_active),
                         "events": run.events.order_by("-id")[:200] if run else [],
                         "refresh": bool(run and (run.is_active or still_working)),
                         "show_save": False, "show_save_and_continue": False}
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        active = CollectionRun.objects.active().exists()
        return super().changelist_view(request, {**(extra_context or {}), "runs_active": active})


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    list_display = [*APIKeyModelAdmin.list_display, "scope"]
    list_filter = ["scope", "revoked"]


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
                    "trades", "collector"]
    list_filter = ["collector", "interval"]
    search_fields = ["^symbol"]  # prefix match: BTC finds BTCUSDT and uses the index
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is slow
    list_per_page = 100
    ordering = ["-open_time"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Candle._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return False  # stored data is removed by retention jobs, not by hand


@admin.register(Article)
class ArticleAdmin(ReadOnlyAdmin):
    """News read by rss_news collectors, each article once (by guid, else link)."""

    list_display = ["published", "headline", "source", "author_names", "collector"]
    list_display_links = ["published"]  # the title links to the article itself
    list_filter = [("collector", admin.RelatedOnlyFieldListFilter), "source"]
    search_fields = ["title", "=guid"]
    date_hierarchy = "published_at"
    list_per_page = 100

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Article._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser  # a deleted article comes back with the next gap_fill run

    @admin.display(description="title", ordering="title")
    def headline(self, obj):
        title = obj.title[:140] or obj.guid[:140]
        return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>', obj.url, title) \
            if obj.url else title

    @admin.display(description="published (UTC)", ordering="published_at")
    def published(self, obj):
        return obj.published_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="authors")
    def author_names(self, obj):
        return ", ".join(obj.authors)


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    """One per upstream, shared by every worker; "Close" lets requests flow again at once."""

    list_display = ["key", "state", "failures", "opened_at", "next_probe", "times_opened", "last_error",
                    "updated_at"]
    actions = ["close_breakers"]

    @admin.display(description="next probe (UTC)")
    def next_probe(self, obj):
        return obj.next_probe_at.strftime("%Y-%m-%d %H:%M:%S") if obj.next_probe_at else "—"

    @admin.action(description="Close: let requests through again now")
    def close_breakers(self, request, queryset):
        queryset.update(state=CircuitBreaker.CLOSED, failures=0, open_until=0, probe_until=0)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """What was sent to ALERT_WEBHOOK_URL (or suppressed as a repeat, or failed to send)."""

    list_display = ["created_at", "kind", "severity", "summary", "status", "attempts", "last_error"]
    list_filter = ["kind", "status"]
    search_fields = ["summary", "key"]


@admin.register(RateWindow)
class RateWindowAdmin(ReadOnlyAdmin):
    """The weight budget each upstream shares across all workers, as it stands now: a run that
    waits here is being polite, not stuck (its symbols count the seconds as throttled)."""

    list_display = ["key", "used_now", "remaining_now", "limit", "resets_in", "blocked"]

    def _state(self, obj):
        """The row's budget state, computed once per row (each column reads it)."""
        if not hasattr(obj, "_budget"):
            obj._budget = RateWindow.state(obj.key, limit=settings.EXCHANGE_WEIGHT_BUDGET,
                                           window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS)
        return obj._budget

    @admin.display(description="weight used")
    def used_now(self, obj):
        return self._state(obj)["used"]

    @admin.display(description="remaining")
    def remaining_now(self, obj):
        return self._state(obj)["remaining"]

    @admin.display(description="budget per window")
    def limit(self, obj):
        return self._state(obj)["limit"]

    @admin.display(description="resets in (s)")
    def resets_in(self, obj):
        return self._state(obj)["resets_in_seconds"]

    @admin.display(description="blocked until (429/418)")
    def blocked(self, obj):
        until = self._state(obj)["blocked_until"]
        return datetime.fromtimestamp(until, tz=dt_timezone.utc).strftime("%H:%M:%S UTC") if until else "—"
