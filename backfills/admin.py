"""Admin: create a backfill with its estimate shown first, watch jobs, cancel and retry."""

from datetime import datetime, time as dtime, timezone as dt_timezone

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from backfills import services
from backfills.models import BackfillJob, EmptyRange, MissingRange
from collectors import services as collect
from collectors.models import Collector
from config.admin import ReadOnlyAdmin, progress_bar, refusal_message
from config.errors import InputError, NotActive, UpstreamUnavailable


@admin.register(EmptyRange)
class EmptyRangeAdmin(ReadOnlyAdmin):
    """Ranges the exchange answered with no data: not asked again, not counted as missing."""

    list_display = ["symbol", "series", "start", "end", "collector", "updated_at"]
    list_filter = ["collector", "series"]
    search_fields = ["^symbol"]


@admin.register(MissingRange)
class MissingRangeAdmin(ReadOnlyAdmin):
    """Ranges a run or backfill could not fetch: the next gap_fill fetches them (then they go)."""

    list_display = ["symbol", "series", "start", "end", "collector", "reason", "recorded_at"]
    list_filter = ["collector", "series"]
    search_fields = ["^symbol"]


class BackfillForm(forms.Form):
    collector = forms.ModelChoiceField(Collector.objects.all())
    start_date = forms.DateField(required=False, help_text="UTC; default: the collector's beginning date.")
    end_date = forms.DateField(required=False, help_text="UTC, inclusive; default: the end of yesterday.")
    symbols = forms.CharField(required=False, help_text="Comma-separated; default: all of the collector's.")
    force = forms.BooleanField(required=False, help_text="Fetch and overwrite even where data exists.")

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        symbols = [s for s in (data["symbols"] or "").replace(" ", "").split(",") if s]
        day = lambda d, t: datetime.combine(d, t, tzinfo=dt_timezone.utc) if d else None  # noqa: E731
        return {"collector": data["collector"], "start": day(data["start_date"], dtime.min),
                "end": day(data["end_date"], dtime.max), "symbols": symbols or None, "force": data["force"]}


@admin.register(BackfillJob)
class BackfillJobAdmin(admin.ModelAdmin):
    list_display = ["id", "collector", "status", "progress_column", "range", "force", "created_by", "created_at"]
    list_filter = ["status", "collector"]
    readonly_fields = ["collector", "status", "start", "end", "symbols", "force", "estimated_records",
                       "estimated_requests", "created_by", "error", "created_at", "started_at", "finished_at"]
    change_form_template = "admin/backfills/backfilljob/change_form.html"

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.is_active)

    @admin.display(description="progress")
    def progress_column(self, obj):
        progress = obj.progress()
        # format_html escapes every argument to a string first: format the number before.
        return format_html("{} <small>{}/{} chunks, {} records</small>",
                           progress_bar(progress["percent"], obj.status), progress["chunks_done"],
                           progress["chunks_total"], f"{progress['records']:,}")

    @admin.display(description="range")
    def range(self, obj):
        return f"{obj.start:%Y-%m-%d %H:%M} → {obj.end:%Y-%m-%d %H:%M}"

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BackfillForm(request.POST or None)
        estimate = None
        if request.method == "POST" and form.is_valid():
            kwargs = form.service_kwargs()
            try:
                kwargs["symbols"] = collect.symbols_validate(collector=kwargs["collector"], symbols=kwargs["symbols"])
                if "_start" in request.POST:
                    job, _ = services.backfill_create(created_by=f"admin:{request.user.get_username()}", **kwargs)
                    messages.success(request, f"Backfill {job.pk} started.")
                    return redirect(reverse("admin:backfills_backfilljob_change", args=[job.pk]))
                estimate = services.backfill_estimate(**kwargs)
            except InputError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            except UpstreamUnavailable as error:
                form.add_error(None, error.detail)
        context = {**self.admin_site.each_context(request), "form": form, "estimate": estimate,
                   "opts": self.model._meta, "title": "New backfill"}
        return TemplateResponse(request, "admin/backfills/backfilljob/add.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        if request.method == "POST" and job is not None:
            if not request.user.has_perm("backfills.add_backfilljob"):
                raise PermissionDenied
            try:
                if "_cancel" in request.POST:
                    services.backfill_cancel(job=job)
                    messages.success(request, f"Backfill {job.pk} cancelled; data already stored stays.")
                elif "_retry_failed" in request.POST:
                    count = services.backfill_retry_failed(job=job)
                    messages.success(request, f"Retrying {count} chunk(s) of backfill {job.pk}.")
            except NotActive as error:
                refusal_message(request, error)
            return redirect(request.path)
        extra = {"job": job, "progress": job.progress() if job else None,
                 "per_symbol": job.symbol_progress() if job else [],
                 "events": job.events.order_by("-id")[:200] if job else [],
                 "refresh": bool(job and job.is_active), "show_save": False,
                 "show_save_and_continue": False}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})
