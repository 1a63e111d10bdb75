"""The run workflow: trigger a run, spread its symbols over the workers, sum up its outcome,
cancel, retry, recover runs of dead workers; the per-collector schedules.

Fetching is the engine's (collectors.engine): a run's symbol is one work item of it.
"""

import re
from datetime import datetime, timedelta

import structlog
from croniter import croniter
from django.apps import apps as django_apps
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django_q.models import Schedule

from collectors import engine
from collectors.alerts import alert_raise
from collectors.models import MODES, Alert, Candle, CollectionRun, Collector, RunEvent, RunSymbol
from collectors.sources import SourceError
from config.errors import InputError, RunConflict

log = structlog.get_logger(__name__)

SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")


def _enqueue(task: str, *args, **kwargs) -> str:
    return engine.enqueue_task(f"collectors.tasks.{task}", *args, **kwargs)


def collector_resolve(*, slug: str | None) -> Collector:
    """The collector named by slug, or the only enabled one when no slug is given."""
    if slug:
        try:
            return Collector.objects.get(slug=slug)
        except Collector.DoesNotExist:
            slugs = list(Collector.objects.values_list("slug", flat=True))
            raise InputError("collector", f"Unknown collector {slug!r}.", choices=slugs) from None
    enabled = list(Collector.objects.filter(enabled=True))
    if len(enabled) == 1:
        return enabled[0]
    slugs = [c.slug for c in enabled]
    raise InputError("collector", "Name the collector: "
                       + (f"{len(slugs)} are enabled." if slugs else "none is enabled."), choices=slugs)


def no_series_message(*, collector: Collector, what: str) -> str:
    return (f"Collector {collector.slug} ({collector.kind}) collects events, not interval data: {what} "
            f"apply to candle collectors only. Runs read its sources again (backward, gap_fill).")


def series_required(*, collector: Collector, what: str):
    """Refuse, naming the collector, what only makes sense for a series of periods (candles)."""
    if collector.grain is None:
        raise InputError("collector", no_series_message(collector=collector, what=what))


def symbol_known(*, collector: Collector, symbol: str) -> bool:
    """One of the collector's symbols, or one it has stored rows of."""
    if symbol in collector.symbols:
        return True
    if collector.grain is not None:
        return Candle.objects.filter(collector=collector, symbol=symbol).exists()
    source = collector.source_class
    return django_apps.get_model(source.model).objects.filter(
        collector=collector, **{source.symbol_field: symbol}).exists()


def symbols_validate(*, collector: Collector, symbols: list[str] | None,
                     field: str = "symbols") -> list[str] | None:
    """Requested symbols, upper-cased; each well-formed, once, and one of the collector's
    (refusals name `field`: the request's name for them)."""
    if symbols is None:
        return None
    symbols = [s.strip().upper() for s in symbols]
    if not symbols:
        raise InputError(field, "Give at least one symbol, or leave symbols out for all.")
    malformed = [s for s in symbols if not SYMBOL_RE.match(s)]
    if malformed:
        raise InputError(field, f"Not a symbol: {malformed[0][:40]!r}.")
    if len(set(symbols)) != len(symbols):
        raise InputError(field, "Symbols must not repeat.")
    if collector.symbols:
        unknown = [s for s in symbols if s not in collector.symbols]
        if unknown:
            raise InputError(field, f"Not a symbol of {collector.slug}: {', '.join(unknown)[:200]}.",
                               choices=collector.symbols)
    return symbols


def run_trigger(*, collector: Collector, mode: str, start: datetime | None = None,
                end: datetime | None = None, symbols: list[str] | None = None,
                triggered_by: str, now: datetime | None = None, enqueue: bool = True) -> CollectionRun:
    """Create a queued run and hand it to the workers once the transaction commits."""
    now = now or timezone.now()
    if mode not in MODES:
        raise InputError("mode", f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    if start and end and end < start:
        raise InputError("end_date", "end_date is before start_date.")
    if start and start > now:
        raise InputError("start_date", "start_date is in the future.")
    symbols = symbols_validate(collector=collector, symbols=symbols)
    if not collector.enabled:
        raise InputError("collector", f"Collector {collector.slug} is disabled.")
    with transaction.atomic():
        # The row lock (MySQL) or the IMMEDIATE transaction (SQLite) serialises triggers, so
        # two at once give one run and one conflict.
        Collector.objects.select_for_update().get(pk=collector.pk)
        active = collector.runs.active().order_by("-id").first() or _stopping_run(collector, now)
        if active:
            raise RunConflict(active)
        run = CollectionRun.objects.create(collector=collector, mode=mode, start=start, end=end,
                                           requested_symbols=symbols or [], triggered_by=triggered_by,
                                           request_id=engine.current_request_id())
        if enqueue:
            transaction.on_commit(lambda: _enqueue_run(run.pk))
    log.info("run_triggered", run_id=run.pk, collector=collector.slug, mode=mode, by=triggered_by)
    return run


def _stopping_run(collector: Collector, now: datetime) -> CollectionRun | None:
    """A cancelled run whose symbol is still fetching (it stops after its page): a new run now
    would plan around what that symbol is about to store or record as missing."""
    alive = now - timedelta(seconds=settings.RUN_LEASE_SECONDS)
    item = (RunSymbol.objects.filter(run__collector=collector, status=RunSymbol.RUNNING, heartbeat_at__gte=alive)
            .select_related("run").first())
    return item.run if item else None


def _enqueue_run(run_id: int):
    task_id = _enqueue("run_execute", run_id, task_name=f"run-{run_id}", group=f"run-{run_id}")
    CollectionRun.objects.filter(pk=run_id).update(task_id=task_id or "")


def run_start(*, run_id: int, inline: bool = False, on_symbol_done=None):
    """Resolve the run's symbols, mark it running and spread the symbols over the workers.

    Safe to call twice (django-q2 delivers at least once): symbols already created are kept.
    With inline=True the symbols are collected here, one after another (manage.py collect).
    """
    run = CollectionRun.objects.select_related("collector").filter(pk=run_id).first()
    if run is None or not run.is_active:
        return run  # deleted, finished or cancelled meanwhile: nothing to do
    with engine.log_context(run_id=run.pk, collector=run.collector.slug, request_id=run.request_id):
        return _run_start(run, inline=inline, on_symbol_done=on_symbol_done)


def _run_start(run, *, inline, on_symbol_done):
    collector = run.collector
    if not run.symbols.exists():
        try:
            symbols = run.requested_symbols or collector.symbols or engine.source_for(collector).list_symbols()
        except SourceError as error:
            run.mark_finished(CollectionRun.FAILED, error=f"Could not list symbols: {error}")
            return run
        RunSymbol.objects.bulk_create([RunSymbol(run=run, symbol=s) for s in symbols],
                                      ignore_conflicts=True)
    run.mark_running()
    log.info("run_started", run_id=run.pk, collector=collector.slug, mode=run.mode,
             symbols=run.symbols.count())
    pending = list(run.symbols.filter(status=RunSymbol.PENDING).values_list("pk", flat=True))
    if inline:
        for pk in pending:
            run_symbol_collect(run_symbol_id=pk)
            if on_symbol_done:
                on_symbol_done(RunSymbol.objects.get(pk=pk))
    else:
        _enqueue_symbols(run, pending)
    run_finish_if_done(run_id=run.pk)
    return run


def _enqueue_symbols(run, pks):
    for pk in RunSymbol.mark_enqueued(pks):  # a run_execute delivered twice sends no task twice
        _enqueue("run_symbol_execute", pk, group=f"run-{run.pk}")


def run_symbol_collect(*, run_symbol_id: int, now: datetime | None = None):
    """Collect one symbol of a run: claim it, fetch what is missing, record the outcome."""
    item = RunSymbol.objects.select_related("run__collector").filter(pk=run_symbol_id).first()
    if item is None or not item.claim(lease_seconds=settings.RUN_LEASE_SECONDS):
        return item  # deleted, done, cancelled, or alive in another worker
    run = item.run
    with engine.log_context(run_id=run.pk, collector=run.collector.slug, symbol=item.symbol, request_id=run.request_id):
        return _run_symbol_collect(item, now=now)


def _run_symbol_collect(item: RunSymbol, *, now: datetime | None):
    run, collector = item.run, item.run.collector
    now = now or timezone.now()
    outcome = engine.item_collect(
        item=item, collector=collector, origin={"run_id": run.pk}, crashed_event="symbol_crashed",
        plan=lambda: engine.plan_ranges(collector=collector, symbol=item.symbol, mode=run.mode,
                                        start=run.start, end=run.end, now=now),
        use_validators=run.mode == "forward", is_cancelled=run.was_cancelled)
    if outcome is None:
        return item  # another worker has it now and will finish it
    status, error = outcome
    log.info("symbol_finished", status=status, error=error or None)
    run_finish_if_done(run_id=run.pk)
    runs_recover(run_id=run.pk)
    return item


def run_finish_if_done(*, run_id: int) -> CollectionRun | None:
    """Close the run once no symbol is pending or running; its status sums up the symbols'."""
    run = CollectionRun.objects.get(pk=run_id)
    if not run.is_active or run.status == CollectionRun.QUEUED:
        return run
    counts = dict(run.symbols.values_list("status").annotate(n=Count("id")))
    outcome = RunSymbol.outcome(counts)
    if outcome is None:
        return run
    status, bad = outcome
    not_complete = ", ".join(f"{counts[s]} {s}" for s in (RunSymbol.FAILED, RunSymbol.PARTIAL, RunSymbol.CANCELLED)
                             if counts.get(s))
    error = f"{bad} of {sum(counts.values())} symbols not complete: {not_complete}." if bad else ""
    if run.mark_finished(status, error=error):
        log.info("run_finished", run_id=run.pk, status=status, **{k: v for k, v in counts.items()})
        engine.snapshot_after(collector_id=run.collector_id)
        if status == CollectionRun.FAILED:
            alert_raise(kind="run_failed", key=f"run_failed:{run.pk}",
                        summary=f"Run {run.pk} of {run.collector.slug} ({run.mode}) failed: {error}",
                        details={"run_id": run.pk, "collector": run.collector.slug, "mode": run.mode,
                                 "symbols": counts, "errors": dict(run.symbols.exclude(error="")
                                                                   .values_list("symbol", "error")[:20])})
    return run


def run_retry_failed(*, run: CollectionRun, triggered_by: str) -> CollectionRun:
    """A new run of the same mode and range for only the symbols that failed, were partial or
    were cancelled; what succeeded is not touched (and would be skipped anyway)."""
    if run.is_active:
        raise RunConflict(run)
    retry = [RunSymbol.FAILED, RunSymbol.PARTIAL, RunSymbol.CANCELLED]
    symbols = list(run.symbols.filter(status__in=retry).values_list("symbol", flat=True))
    if not symbols:
        raise InputError("run", f"Run {run.pk} has no failed, partial or cancelled symbols to retry.")
    return run_trigger(collector=run.collector, mode=run.mode, start=run.start, end=run.end,
                       symbols=symbols, triggered_by=f"{triggered_by} (retry of run {run.pk})")


def run_cancel(*, run: CollectionRun, now: datetime | None = None) -> CollectionRun:
    """Stop a queued or running run; symbols in flight stop after their current page and keep
    the rest as missing; symbols not started keep the run's whole window as missing, so a
    later gap_fill fetches what the run would have (only its holes)."""
    run.cancel()
    log.info("run_cancelled", run_id=run.pk)
    window = run_window(run=run, now=now or timezone.now())
    if window:
        never_started = run.symbols.filter(status=RunSymbol.CANCELLED, started_at__isnull=True)
        engine.cancelled_missing(items=never_started, collector=run.collector, ranges=lambda item: [window])
    return run


def run_window(*, run: CollectionRun, now: datetime) -> tuple[datetime, datetime] | None:
    """[lo, hi) a run of a candle collector covers (before what is stored is taken out)."""
    if run.collector.grain is None:
        return None
    lo, hi = engine.requested_window(collector=run.collector, start=run.start, end=run.end, now=now,
                                     until_today=run.mode == "backward")
    return (lo, hi) if lo < hi else None


def runs_recover(*, run_id: int | None = None, now: datetime | None = None,
                 queue_empty: bool | None = None) -> int:
    """Hand runs' work abandoned by dead workers to live ones; returns how many symbols were re-queued.

    A symbol 'running' without a heartbeat for RUN_LEASE_SECONDS lost its worker (kill -9);
    pending symbols and queued runs whose tasks vanished (a worker died holding them) are sent
    again when the broker's queue is empty (`queue_empty`: as seen before any recovery of this
    sweep sent a task; asked here if not given). With `run_id`, only that run is looked at;
    without, running runs whose symbols are all done are closed too.
    """
    now = now or timezone.now()
    if queue_empty is None:
        queue_empty = engine.queue_is_empty()
    runs = CollectionRun.objects.active()
    if run_id:
        runs = runs.filter(pk=run_id)
    requeued = engine.requeue_abandoned(
        RunSymbol.objects.filter(run__in=runs.filter(status=CollectionRun.RUNNING)),
        task="collectors.tasks.run_symbol_execute", owner_field="run_id", group="run", now=now,
        queue_empty=queue_empty)
    if queue_empty:
        for run in runs.filter(status=CollectionRun.QUEUED, created_at__lt=engine.lease_expired_before(now)):
            log.warning("run_requeued", run_id=run.pk)
            _enqueue_run(run.pk)
    if not run_id:
        for run in runs.filter(status=CollectionRun.RUNNING):
            run_finish_if_done(run_id=run.pk)
    return requeued


def retention_prune(*, now: datetime | None = None) -> int:
    """Delete run events and alerts older than DATA_RETENTION_DAYS; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DATA_RETENTION_DAYS)
    return RunEvent.objects.filter(created_at__lt=cutoff).delete()[0] + \
        Alert.objects.filter(created_at__lt=cutoff).delete()[0]


# --- schedules ----------------------------------------------------------------------------

SCHEDULE_PREFIX = "collector:"


def schedule_sync(*, collector: Collector):
    """Make the collector's django-q2 cron schedule match it: a forward run at each `schedule`
    time while enabled; none when disabled, without a schedule, or deleted. Idempotent; an
    unchanged schedule keeps its next run."""
    name = f"{SCHEDULE_PREFIX}{collector.slug}"
    if collector.pk is None or not collector.enabled or not collector.schedule:
        Schedule.objects.filter(name=name).delete()
        return None
    args = repr((collector.pk,))
    current = Schedule.objects.filter(name=name).first()
    if current and current.cron == collector.schedule and current.args == args and current.repeats < 0:
        return current
    first = croniter(collector.schedule, timezone.now()).get_next(datetime)
    schedule, _ = Schedule.objects.update_or_create(name=name, defaults={
        "func": "collectors.tasks.run_scheduled", "args": args, "schedule_type": Schedule.CRON,
        "cron": collector.schedule, "repeats": -1, "next_run": first})
    log.info("schedule_synced", collector=collector.slug, cron=collector.schedule, next_run=first.isoformat())
    return schedule


def schedules_rebuild() -> dict:
    """Every collector's schedule made right, and schedules of collectors that are gone removed
    (run at deploy: manage.py sync_schedules)."""
    kept = [s for c in Collector.objects.all() if (s := schedule_sync(collector=c))]
    slugs = {f"{SCHEDULE_PREFIX}{slug}" for slug in Collector.objects.values_list("slug", flat=True)}
    orphans = Schedule.objects.filter(name__startswith=SCHEDULE_PREFIX).exclude(name__in=slugs)
    removed = orphans.count()
    orphans.delete()
    return {"scheduled": len(kept), "removed": removed}


def schedule_next_runs() -> dict[str, datetime]:
    """{collector slug: next scheduled run} for the collectors that have one."""
    return {name[len(SCHEDULE_PREFIX):]: next_run for name, next_run in Schedule.objects.filter(
        name__startswith=SCHEDULE_PREFIX).values_list("name", "next_run")}


def run_scheduled(*, collector_id: int) -> CollectionRun | None:
    """The schedule's forward run; skipped (and said so, on the active run's events) while the
    previous run of the collector is still going, so runs never pile up."""
    collector = Collector.objects.filter(pk=collector_id).first()
    if collector is None or not collector.enabled:
        log.info("scheduled_run_skipped", collector_id=collector_id, reason="collector deleted or disabled")
        return None
    try:
        return run_trigger(collector=collector, mode="forward", triggered_by="schedule")
    except RunConflict as conflict:
        log.warning("scheduled_run_skipped", collector=collector.slug, run_id=conflict.run.pk,
                    reason=f"run {conflict.run.pk} is still {conflict.run.status}")
    except InputError as error:
        log.warning("scheduled_run_skipped", collector=collector.slug, reason=error.message)
    return None
