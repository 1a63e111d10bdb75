"""Admin: quarantined rows, revisions, snapshots and audits; the per-collector quality report
and coverage map (custom views under the snapshots' admin URLs)."""

from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from collectors import services as collect, times
from collectors.admin import stored_rows_link
from collectors.models import Collector
from config.admin import ReadOnlyAdmin, refusal_message
from config.errors import InputError, RunConflict
from quality import services
from quality.charts import coverage_svg, legend_html, trend_svg
from quality.models import DriftAudit, QualitySnapshot, QuarantinedRow, Revision
from quality.rules import RULES

MAP_DAYS = 330  # default width of the coverage map, in days
EARLIEST, LATEST = times.EARLIEST.date(), times.LATEST.date()  # the days a map may show


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(ReadOnlyAdmin):
    list_display = ["symbol", "open_time", "rule", "rule_meaning", "collector", "run", "backfill", "created_at"]
    list_filter = ["rule", "collector"]
    search_fields = ["^symbol"]
    readonly_fields = ["collector", "symbol", "series", "open_time", "rule", "payload", "run", "backfill",
                       "created_at"]

    @admin.display(description="meaning")
    def rule_meaning(self, obj):
        return RULES.get(obj.rule) or getattr(obj.collector.source_class, "rules", {}).get(obj.rule, "")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("collector")


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


@admin.register(DriftAudit)
class DriftAuditAdmin(ReadOnlyAdmin):
    """Start one from the collectors list (action "Audit drift")."""

    list_display = ["id", "collector", "status", "sample_size", "sampled", "differing", "unavailable",
                    "requests", "triggered_by", "created_at", "finished_at"]
    list_filter = ["status", "collector"]
    readonly_fields = ["collector", "status", "sample_size", "sampled", "differing", "unavailable", "requests",
                       "triggered_by", "error", "created_at", "started_at", "finished_at", "difference_table"]
    exclude = ["differences"]

    @admin.display(description="differences (stored → source now)")
    def difference_table(self, obj):
        if not obj.differences:
            return "none" if obj.status == DriftAudit.COMPLETE else "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (d["symbol"], d["open_time"], d["field"], d["stored"], d["source"]) for d in obj.differences[:500]))
        return format_html("<table><tr><th>symbol</th><th>open time (UTC)</th><th>field</th><th>stored</th>"
                           "<th>source now</th></tr>{}</table>", rows)


@admin.register(QualitySnapshot)
class QualitySnapshotAdmin(ReadOnlyAdmin):
    list_display = ["collector", "taken_at", "score", "completeness", "freshness_seconds", "gaps",
                    "invalid_records", "revisions", "compute_seconds", "report_link"]
    list_filter = ["collector"]
    date_hierarchy = "taken_at"
    exclude = ["report"]

    @admin.display(description="")
    def report_link(self, obj):
        return format_html('<a href="{}">report</a> · <a href="{}">coverage</a>',
                           reverse("admin:quality_report", args=[obj.collector_id]),
                           reverse("admin:quality_coverage", args=[obj.collector_id]))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("report/<int:collector_id>/", view(self.report_view), name="quality_report"),
            path("coverage/<int:collector_id>/", view(self.coverage_view), name="quality_coverage"),
            # path: a symbol (a feed's name) may hold '/', sent encoded and decoded before matching.
            path("coverage/<int:collector_id>/<path:symbol>/<str:day>/", view(self.coverage_day_view),
                 name="quality_coverage_day"),
        ] + super().get_urls()

    def _collector(self, request, collector_id):
        if not request.user.has_perm("collectors.view_collector"):
            raise PermissionDenied
        return get_object_or_404(Collector, pk=collector_id)

    def _context(self, request, collector, title, **extra):
        return {**self.admin_site.each_context(request), "title": title, "collector": collector,
                "opts": self.model._meta, **extra}

    def report_view(self, request, collector_id):
        """The data-quality report (a current snapshot, else live), its trend, and actions."""
        collector = self._collector(request, collector_id)
        if request.method == "POST":
            if not request.user.has_perm("collectors.change_collector"):
                raise PermissionDenied
            snapshot = services.snapshot_take(collector=collector)
            messages.success(request, f"Snapshot taken in {snapshot.compute_seconds:.1f} s.")
            return redirect(request.path)
        report = services.quality_report_served(collector=collector, live=request.GET.get("live") == "1")
        since = timezone.now() - timedelta(days=settings.DATA_RETENTION_DAYS)
        points = list(collector.snapshots.filter(taken_at__gte=since).order_by("taken_at")
                      .values_list("taken_at", "score", "completeness"))
        rows_url, rows_label = stored_rows_link(collector) if collector.grain is None else ("", "")
        return TemplateResponse(request, "admin/quality/report.html", self._context(
            request, collector, f"Data quality: {collector.slug}", report=report,
            rows_url=rows_url, rows_label=rows_label,
            trend=mark_safe(trend_svg(points[-500:])), audits=collector.audits.all()[:5]))

    def _no_coverage(self, request, collector):
        messages.info(request, collect.no_series_message(collector=collector, what="coverage maps"))
        return redirect("admin:quality_report", collector.pk)

    def coverage_view(self, request, collector_id):
        """Symbol x day grid of the last MAP_DAYS days (or ?days=, ?end=)."""
        collector = self._collector(request, collector_id)
        if collector.grain is None:
            return self._no_coverage(request, collector)
        try:
            last = date.fromisoformat(request.GET["end"]) if request.GET.get("end") else timezone.now().date()
            days = min(max(int(request.GET.get("days", MAP_DAYS)), 1), 3660)
        except ValueError:
            raise Http404("end must be a date (2025-01-31) and days a number") from None
        if not EARLIEST <= last < LATEST or last - timedelta(days=days - 1) < EARLIEST:
            raise Http404("The map covers 1970-01-01 to 2099-12-31.")
        grid = services.coverage_grid(collector=collector, first_day=last - timedelta(days=days - 1), last_day=last)
        day_url = reverse("admin:quality_coverage_day", args=[collector.pk, "SYMBOL", "0000-00-00"])
        return TemplateResponse(request, "admin/quality/coverage.html", self._context(
            request, collector, f"Coverage: {collector.slug}", days=days, last=last,
            earlier=last - timedelta(days=days), later=last + timedelta(days=days),
            map=mark_safe(coverage_svg(grid, day_url=day_url)), legend=mark_safe(legend_html()),
            symbols=len(grid["rows"])))

    def coverage_day_view(self, request, collector_id, symbol, day):
        """One cell: its gaps, no-data ranges and quarantined rows; POST starts a gap fill."""
        collector = self._collector(request, collector_id)
        if collector.grain is None:
            return self._no_coverage(request, collector)
        try:
            day = date.fromisoformat(day)
        except ValueError:
            raise Http404("not a date") from None
        if not EARLIEST <= day < LATEST:
            raise Http404("The map covers 1970-01-01 to 2099-12-31.")
        if request.method == "POST":
            if not request.user.has_perm("collectors.change_collector"):
                raise PermissionDenied
            return self._gap_fill(request, collector, symbol, day)
        detail = services.coverage_day(collector=collector, symbol=symbol, day=day)
        return TemplateResponse(request, "admin/quality/coverage_day.html", self._context(
            request, collector, f"{symbol} on {day} ({collector.slug})", detail=detail,
            map_url=reverse("admin:quality_coverage", args=[collector.pk]) + f"?end={day + timedelta(days=30)}"))

    def _gap_fill(self, request, collector, symbol, day):
        midnight = datetime.combine(day, time(0), tzinfo=dt_timezone.utc)
        try:
            run = collect.run_trigger(collector=collector, mode="gap_fill", start=midnight,
                                      end=midnight + timedelta(days=1, seconds=-1), symbols=[symbol],
                                      triggered_by=f"admin:{request.user.get_username()}")
        except RunConflict as conflict:
            messages.warning(request, f"Not started: run {conflict.run.pk} of {collector.slug} is already "
                                      f"{conflict.run.status}.")
            return redirect(request.path)
        except InputError as error:
            refusal_message(request, error, prefix="Not started: ")
            return redirect(request.path)
        messages.success(request, f"Gap fill of {symbol} on {day} queued as run {run.pk}.")
        return redirect("admin:collectors_collectionrun_change", run.pk)
