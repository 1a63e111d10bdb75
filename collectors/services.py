"""Collection workflows: trigger a run, plan what is missing, fetch it, store it, recover.

One engine serves every mode; modes differ only in the range they ask `plan_ranges` for.
"""

import hashlib
import re
from datetime import datetime, time as dtime, timedelta, timezone as dt_timezone

import orjson
import structlog
from django.apps import apps as django_apps
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from backfills.gaps import coverage, last_stored
from backfills.models import EmptyRange, MissingRange
from backfills.ranges import absent, ceil_time, floor_time, merge
from collectors.alerts import alert_raise
from collectors.db import atomic_retry
from collectors.http import Upstream
from collectors.models import Candle, CollectionRun, Collector, RunSymbol, WorkItem, worker_name
from collectors.sources import SourceError
from collectors.storage import upsert_candles
from config.api import iso
from config.errors import InputError, RunConflict
from quality.models import QuarantinedRow, Revision
from quality.rules import FIELDS as REVISED_FIELDS, compare_stored, split_valid

log = structlog.get_logger(__name__)

MODES = ("backward", "forward", "gap_fill")
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
# A candle counts as closed only this long after its period ends, so a clock slightly ahead
# of the exchange's never stores the still-open candle as final.
CLOSE_GRACE = timedelta(seconds=5)
EVENTS_UNTIL = datetime(2100, 1, 1, tzinfo=dt_timezone.utc)  # no end asked: whatever the source has
# After this many pages in a row failed (after their retries), the upstream or the database is
# down rather than one range bad: the symbol stops and the rest is left missing for gap_fill.
MAX_FAILED_PAGES_IN_A_ROW = 3


def enqueue_task(dotted: str, *args, **kwargs) -> str:
    return async_task(dotted, *args, **kwargs)


def _enqueue(task: str, *args, **kwargs) -> str:
    return enqueue_task(f"collectors.tasks.{task}", *args, **kwargs)


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


def symbols_validate(*, collector: Collector, symbols: list[str] | None) -> list[str] | None:
    """Requested symbols, upper-cased; each well-formed, once, and one of the collector's."""
    if symbols is None:
        return None
    symbols = [s.strip().upper() for s in symbols]
    if not symbols:
        raise InputError("symbols", "Give at least one symbol, or leave symbols out for all.")
    malformed = [s for s in symbols if not SYMBOL_RE.match(s)]
    if malformed:
        raise InputError("symbols", f"Not a symbol: {malformed[0][:40]!r}.")
    if len(set(symbols)) != len(symbols):
        raise InputError("symbols", "Symbols must not repeat.")
    if collector.symbols:
        unknown = [s for s in symbols if s not in collector.symbols]
        if unknown:
            raise InputError("symbols", f"Not a symbol of {collector.slug}: {', '.join(unknown)[:200]}.",
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
                                           request_id=current_request_id())
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


def current_request_id() -> str:
    """The id django-structlog gave the HTTP request being served, if any."""
    return str(structlog.contextvars.get_contextvars().get("request_id") or "")[:64]


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
    with log_context(run_id=run.pk, collector=run.collector.slug, request_id=run.request_id):
        return _run_start(run, inline=inline, on_symbol_done=on_symbol_done)


def log_context(**context):
    """Bind run/backfill ids (and the request that started it) to every log line below, in
    whichever worker runs it: the lines become RunEvents and can be found by request_id."""
    return structlog.contextvars.bound_contextvars(**{k: v for k, v in context.items() if v})


def _run_start(run, *, inline, on_symbol_done):
    collector = run.collector
    if not run.symbols.exists():
        try:
            symbols = run.requested_symbols or collector.symbols or source_for(collector).list_symbols()
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


def source_for(collector: Collector, *, on_wait=None, use_validators: bool = True):
    """The collector's source, with an HTTP wrapper of its own (retries, budget, counters);
    `use_validators=False` makes conditional GETs unconditional (read feeds whole)."""
    source_class = collector.source_class
    http = Upstream(collector.config.get("base_url", ""), retries=collector.max_retries,
                    backoff=collector.retry_backoff_seconds,
                    weight_header=getattr(source_class, "weight_header", None), on_wait=on_wait,
                    validator_scope=f"collector:{collector.pk}", use_validators=use_validators)
    return source_class(collector.config, http=http)


def _day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(dt_timezone.utc).date(), dtime(0), tzinfo=dt_timezone.utc)


def plan_ranges(*, collector: Collector, symbol: str, mode: str, start: datetime | None,
                end: datetime | None, now: datetime) -> list[tuple[datetime, datetime]]:
    """The [start, end) ranges to fetch for one symbol: missing in the database, minus what the
    source already answered empty, within closed periods only."""
    step = collector.grain
    series = collector.series
    beginning = datetime.combine(collector.beginning_date, dtime(0), tzinfo=dt_timezone.utc)
    if step is None:
        # Events (news): the source reads what it can (a feed's window) in every mode, the
        # store skips what is already there and what falls outside [lo, hi).
        lo = start or beginning
        hi = end + timedelta(microseconds=1) if end else EVENTS_UNTIL  # a requested end is inclusive
        return [(lo, hi)] if lo < hi else []
    horizon = floor_time(now - CLOSE_GRACE, step)
    # A requested end is inclusive (the candle opening at `end` is wanted); ranges are half-open.
    end = floor_time(end, step) + step if end else None
    last = None
    if mode in ("forward", "gap_fill"):
        last = last_stored(collector_id=collector.pk, symbol=symbol, series=series)
    if mode == "backward":
        lo, hi = start or beginning, end or _day_start(now)
    elif mode == "forward":
        lo, hi = (last + step) if last else (start or beginning), end or horizon
    elif mode == "gap_fill":
        return _gap_fill_ranges(collector=collector, symbol=symbol, lo=ceil_time(start or beginning, step),
                                hi=min(end, horizon) if end else horizon,
                                holes_until=end or (last + step if last else None))
    else:
        raise ValueError(f"unknown mode {mode!r}")
    lo, hi = ceil_time(lo, step), min(ceil_time(hi, step), horizon)
    if lo >= hi:
        return []
    return coverage(collector=collector, symbol=symbol, start=lo, end=hi)[0]


def _gap_fill_ranges(*, collector: Collector, symbol: str, lo, hi, holes_until):
    """gap_fill: the holes between `lo` and `holes_until` (an asked end, else the last stored
    candle), plus every range a run or backfill recorded as missing in [lo, hi) (it may lie
    after the last stored candle), minus what is stored and what the exchange answered empty."""
    recorded = MissingRange.ranges(collector_id=collector.pk, symbol=symbol, series=collector.series,
                                   start=lo, end=hi)
    wanted = merge(([(lo, min(holes_until, hi))] if holes_until else []) + recorded)
    return [r for start, end in wanted for r in coverage(collector=collector, symbol=symbol, start=start, end=end)[0]]


def iso_ranges(ranges):
    return [{"start": iso(s), "end": iso(e)} for s, e in ranges]


def run_symbol_collect(*, run_symbol_id: int, now: datetime | None = None):
    """Collect one symbol of a run: claim it, fetch what is missing, record the outcome."""
    item = RunSymbol.objects.select_related("run__collector").filter(pk=run_symbol_id).first()
    if item is None or not item.claim(lease_seconds=settings.RUN_LEASE_SECONDS):
        return item  # deleted, done, cancelled, or alive in another worker
    run = item.run
    with log_context(run_id=run.pk, collector=run.collector.slug, symbol=item.symbol, request_id=run.request_id):
        return _run_symbol_collect(item, now=now)


def _run_symbol_collect(item: RunSymbol, *, now: datetime | None):
    run = item.run
    try:
        status, missing, error = _collect_symbol(item, now=now or timezone.now())
    except LeaseLost:
        return item  # another worker has it now and will finish it
    except Exception as exc:  # never leave a symbol 'running' because of a bug
        log.exception("symbol_crashed")
        status, missing, error = RunSymbol.FAILED, [], f"{type(exc).__name__}: {exc}"
    item_finish(item=item, collector=run.collector, status=status, missing=missing, error=error)
    log.info("symbol_finished", status=status, error=error or None)
    run_finish_if_done(run_id=run.pk)
    work_recover(run_id=run.pk)
    return item


def item_finish(*, item: WorkItem, collector: Collector, status: str, missing, error: str):
    """Close a run's symbol or a backfill's chunk with its outcome; what it could not fetch is
    recorded for gap_fill in the same transaction. A worker that lost the item to another
    (its lease ran out) records nothing."""
    def finish():
        if item.mark_finished(status, missing_ranges=iso_ranges(missing), error=error) and missing:
            MissingRange.record(collector_id=collector.pk, symbol=item.symbol, series=collector.series,
                                ranges=missing, reason=error)
    atomic_retry(finish)


def _collect_symbol(item: RunSymbol, *, now: datetime):
    run, collector = item.run, item.run.collector
    ranges = plan_ranges(collector=collector, symbol=item.symbol, mode=run.mode, start=run.start,
                         end=run.end, now=now)
    if not ranges:
        return RunSymbol.SKIPPED, [], ""
    return fetch_ranges(
        collector=collector, symbol=item.symbol, ranges=ranges, item=item,
        origin={"run_id": run.pk}, use_validators=run.mode == "forward",
        is_cancelled=lambda: CollectionRun.objects.filter(pk=run.pk, status=CollectionRun.CANCELLED).exists())


class LeaseLost(Exception):
    """Another worker took the item over (this one's heartbeat was older than the lease)."""


class _GiveUp(Exception):
    """Too many pages in a row failed: the upstream or the database is down, stop the symbol."""


def fetch_ranges(*, collector: Collector, symbol: str, ranges, item, is_cancelled, origin,
                 may_overlap: bool = False, use_validators: bool = True):
    """The engine's fetch loop, shared by runs and backfill chunks.

    Fetches each range page by page; every page is validated (rows that break a quality rule
    are quarantined with `origin`, not stored), stored, its empty spans recorded in the ledger
    (candles) and `item`'s progress updated in one transaction, retried whole on deadlocks and
    lock timeouts. A page that fails after retries (upstream or database) is a missing range and
    the symbol goes on with the next page; after MAX_FAILED_PAGES_IN_A_ROW, an upstream that is
    down or a permanent error, the rest is missing. Returns (status, missing ranges, error):
    complete; partial (what is missing is listed, everything else is stored); failed (nothing
    stored: all of it is missing); cancelled. Raises LeaseLost if another worker took over.
    """
    source = source_for(collector, on_wait=item.heartbeat, use_validators=use_validators)
    http = source.http
    seen = [0, 0, 0.0]  # requests, retries, throttled seconds already reported
    missing, errors = [], []
    progressed = False  # some page was stored (rows, or an empty span in the ledger)
    failed_in_a_row = 0

    def http_progress() -> dict:
        return {"requests": http.requests - seen[0], "retries": http.retried - seen[1],
                "throttled_seconds": http.throttled_seconds - seen[2]}

    def counted():
        seen[:] = [http.requests, http.retried, http.throttled_seconds]

    def report():
        """Requests and waits of pages that stored nothing (failed pages)."""
        if not item.add_progress(**http_progress()):
            raise LeaseLost()
        counted()

    if collector.grain is None:
        store = _record_store(collector=collector, symbol=symbol, source=source, origin=origin)
    else:
        store = _candle_store(collector=collector, symbol=symbol, origin=origin, may_overlap=may_overlap)

    def save(page) -> None:
        counts = store(page)
        # Fenced by the claim: a worker whose item was taken over stores nothing more.
        if not item.add_progress(**counts, **http_progress()):
            raise LeaseLost()
        if page.on_stored:
            page.on_stored()

    def failed(page, error: str, event: str):
        nonlocal failed_in_a_row
        missing.append((page.start, page.end))
        errors.append(error)
        failed_in_a_row += 1
        log.warning(event, start=iso(page.start), end=iso(page.end), error=error[:300])
        if failed_in_a_row >= MAX_FAILED_PAGES_IN_A_ROW:
            raise _GiveUp(f"{failed_in_a_row} pages in a row failed (last: {error[:200]}); "
                          "the rest is left for gap_fill")

    for index, (start, end) in enumerate(ranges):
        cursor = start
        try:
            for page in source.fetch(symbol, start, end):
                if page.error is not None:
                    report()
                    failed(page, str(page.error), "page_failed")
                else:
                    try:
                        atomic_retry(save, page)
                        counted()
                        # A span of candles is progress even when empty (the ledger has it now).
                        progressed = progressed or bool(page.rows) or collector.grain is not None
                        failed_in_a_row = 0
                    except DatabaseError as error:  # still failing after the retries
                        _report_quietly(report)
                        failed(page, f"{type(error).__name__}: {error}", "page_not_stored")
                cursor = page.end
                if is_cancelled():
                    return "cancelled", merge(missing + [(cursor, end)] + ranges[index + 1:]), "Cancelled."
        except LeaseLost:
            log.warning("lease_lost", claimed_by=worker_name())
            raise
        except (SourceError, _GiveUp) as error:  # permanent, the upstream is down, or given up
            log.warning("fetch_failed", error=str(error)[:300], permanent=getattr(error, "permanent", False))
            _report_quietly(report)
            missing += [(cursor, end)] + ranges[index + 1:]
            errors.append(str(error))
            break
        except Exception as exc:  # a bug or a database outage: what is left is missing, not lost
            log.exception("fetch_crashed")
            missing += [(cursor, end)] + ranges[index + 1:]
            errors.append(f"{type(exc).__name__}: {exc}")
            break
    else:
        _report_quietly(report)
    if collector.grain is None:
        missing = []  # events have no range to fill later: the next run reads the source again
    elif progressed:
        _forget_filled(collector=collector, symbol=symbol, start=ranges[0][0], end=ranges[-1][1])
    if not errors:
        return "complete", [], ""
    error = errors[-1] if len(errors) == 1 else f"{len(errors)} failures; last: {errors[-1]}"
    return ("partial" if progressed else "failed"), merge(missing), error


def _forget_filled(*, collector: Collector, symbol: str, start: datetime, end: datetime):
    """Forget the recorded missing ranges in [start, end) that hold no hole any more."""
    rows = MissingRange.objects.of(collector.pk, symbol, collector.series).overlapping(start, end)
    try:
        filled = [pk for pk, lo, hi in rows.values_list("pk", "start", "end")
                  if not coverage(collector=collector, symbol=symbol, start=lo, end=hi)[0]]
        MissingRange.objects.filter(pk__in=filled).delete()
    except DatabaseError:  # kept one run longer; the next gap_fill finds them filled
        log.warning("missing_ranges_not_forgotten")


def _report_quietly(report):
    try:
        report()
    except DatabaseError:  # the counters are the least of it when the database is gone
        log.warning("progress_not_saved")


def _candle_store(*, collector: Collector, symbol: str, origin: dict, may_overlap: bool):
    """How a page of candles is stored (inside the page's transaction): kline rules, upsert,
    empty spans into the ledger; returns the progress counts."""
    step_ms = int(collector.grain.total_seconds() * 1000)
    full_rules = collector.config.get("validate", settings.ENABLE_DATA_VALIDATION)
    # Planned ranges are holes in the database; only a fetch over stored rows (force) can meet
    # duplicates or revisions, so only that one pays for the extra read per page.
    detect = settings.ENABLE_DUPLICATE_DETECTION and may_overlap

    def store(page) -> dict:
        valid, invalid = split_valid(page.rows, step_ms=step_ms, full=full_rules,
                                     now_ms=int(timezone.now().timestamp() * 1000))
        duplicates, revised = (detect_changes(collector=collector, symbol=symbol, rows=valid,
                                              page=page, origin=origin)
                               if detect and valid else (0, 0))
        written = upsert_candles(collector_id=collector.pk, symbol=symbol,
                                 interval=collector.series, rows=valid)
        quarantine(collector=collector, symbol=symbol, invalid=invalid, origin=origin)
        # A slot where the exchange sent anything, even an invalid row, is not empty.
        slots = [t - t % step_ms for t in page.times_ms]
        holes = absent(int(page.start.timestamp() * 1000), int(page.end.timestamp() * 1000),
                       slots, step_ms)
        EmptyRange.record(collector_id=collector.pk, symbol=symbol, series=collector.series,
                          ranges=[(utc_from_ms(a), utc_from_ms(b)) for a, b in holes])
        return {"records": written, "invalid": len(invalid), "duplicates": duplicates, "revisions": revised}

    return store


def _record_store(*, collector: Collector, symbol: str, source, origin: dict):
    """How a page of events is stored (inside the page's transaction): new rows inserted into
    the source's model, rows already there counted as duplicates, what the source could not
    read quarantined; returns the progress counts."""
    model = django_apps.get_model(source.model)
    key, time_field = source.key, source.time_field

    def store(page) -> dict:
        rows = [row for row in page.rows if page.start <= row[time_field] < page.end]
        if len(rows) < len(page.rows):
            log.info("entries_outside_range", skipped=len(page.rows) - len(rows),
                     start=page.start.isoformat(), end=page.end.isoformat())
        written, duplicates = records_insert_new(collector=collector, model=model, key=key, rows=rows)
        # A feed shows a bad entry on every read until it scrolls away: quarantined once.
        invalid = quarantine(collector=collector, symbol=symbol, invalid=page.invalid, origin=origin,
                             once=True)
        return {"records": written, "invalid": invalid,
                "duplicates": duplicates + len(page.invalid) - invalid}

    return store


def records_insert_new(*, collector: Collector, model, key: tuple[str, ...], rows: list[dict]) -> tuple[int, int]:
    """Insert the rows (dicts of `model`'s fields) whose `key` the collector does not have yet;
    returns (inserted, duplicates). Two workers inserting the same row at once: the unique
    constraint keeps one (ignore_conflicts), and both count it as inserted."""
    fresh = {}
    for row in rows:
        fresh.setdefault(tuple(row[f] for f in key), row)
    if not fresh:
        return 0, len(rows)
    have = set(model.objects.filter(collector=collector, **{f"{key[0]}__in": {k[0] for k in fresh}})
               .values_list(*key))
    new = [model(collector=collector, **row) for k, row in fresh.items() if k not in have]
    model.objects.bulk_create(new, ignore_conflicts=True)
    return len(new), len(rows) - len(new)


def detect_changes(*, collector: Collector, symbol: str, rows, page, origin: dict) -> tuple[int, int]:
    """Before overwriting: count fetched rows identical to stored ones (duplicates) and record
    the ones the exchange changed (revisions). One indexed range read per page; it finds
    nothing when only missing ranges are fetched, which is the usual case."""
    stored = stored_values(Candle.objects.filter(collector=collector, symbol=symbol, interval=collector.series,
                                                 open_time__gte=page.start, open_time__lt=page.end))
    if not stored:
        return 0, 0
    duplicates, revisions = compare_stored(rows, stored)
    Revision.objects.bulk_create(
        Revision(collector=collector, symbol=symbol, series=collector.series, open_time=utc_from_ms(open_ms),
                 changes=changes, **origin) for open_ms, changes in revisions)
    return duplicates, len(revisions)


def quarantine(*, collector: Collector, symbol: str, invalid, origin: dict, once: bool = False) -> int:
    """Keep rows that broke a rule, with the rule and the raw row, where users can see them.
    With `once`, a row the collector already quarantined (same rule and payload) is not kept
    again. Returns how many were kept."""
    rows = [QuarantinedRow(collector=collector, symbol=symbol, series=collector.series,
                           open_time=utc_from_ms(row[0]) if isinstance(row, (list, tuple)) and row
                           and isinstance(row[0], int) else None,
                           rule=rule, payload=row if isinstance(row, dict) else list(row),
                           fingerprint=_fingerprint(symbol, rule, row) if once else "", **origin)
            for row, rule in invalid]
    if once and rows:
        known = set(QuarantinedRow.objects.filter(collector=collector, fingerprint__in={r.fingerprint for r in rows})
                    .values_list("fingerprint", flat=True))
        rows = list({r.fingerprint: r for r in rows if r.fingerprint not in known}.values())
    QuarantinedRow.objects.bulk_create(rows)
    return len(rows)


def _fingerprint(symbol: str, rule: str, payload) -> str:
    return hashlib.sha256(orjson.dumps([symbol, rule, payload], option=orjson.OPT_SORT_KEYS)).hexdigest()


def stored_values(candles) -> dict:
    """{open_ms: values in quality.rules.FIELDS order, times in ms} of the candles, as
    compare_stored takes them."""
    return {int(v[0].timestamp() * 1000): (*v[1:6], int(v[6].timestamp() * 1000), *v[7:])
            for v in candles.values_list("open_time", *REVISED_FIELDS)}


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=dt_timezone.utc)


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
        snapshot_after(collector_id=run.collector_id)
        if status == CollectionRun.FAILED:
            alert_raise(kind="run_failed", key=f"run_failed:{run.pk}",
                        summary=f"Run {run.pk} of {run.collector.slug} ({run.mode}) failed: {error}",
                        details={"run_id": run.pk, "collector": run.collector.slug, "mode": run.mode,
                                 "symbols": counts, "errors": dict(run.symbols.exclude(error="")
                                                                   .values_list("symbol", "error")[:20])})
    return run


def snapshot_after(*, collector_id: int):
    """Refresh the collector's quality snapshot once new data is in (the report, /metrics and
    alerts read it), on a worker, after the transaction commits."""
    transaction.on_commit(lambda: enqueue_task("quality.tasks.snapshot_collector", collector_id))


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
        cancelled_missing(items=never_started, collector=run.collector, ranges=lambda item: [window])
    return run


def run_window(*, run: CollectionRun, now: datetime) -> tuple[datetime, datetime] | None:
    """[lo, hi) a run of a candle collector covers (before what is stored is taken out)."""
    step = run.collector.grain
    if step is None:
        return None
    beginning = datetime.combine(run.collector.beginning_date, dtime(0), tzinfo=dt_timezone.utc)
    horizon = floor_time(now - CLOSE_GRACE, step)
    lo = ceil_time(run.start or beginning, step)
    hi = floor_time(run.end, step) + step if run.end else _day_start(now) if run.mode == "backward" else horizon
    hi = min(hi, horizon)
    return (lo, hi) if lo < hi else None


def cancelled_missing(*, items, collector: Collector, ranges):
    """What cancelled items that never started would have fetched, recorded as missing (on the
    items and for gap_fill); `ranges(item)` gives an item's ranges."""
    for item in items:
        missing = ranges(item)
        type(item).objects.filter(pk=item.pk).update(missing_ranges=iso_ranges(missing))
        MissingRange.record(collector_id=collector.pk, symbol=item.symbol, series=collector.series,
                            ranges=missing, reason="Cancelled before it started.")


def work_recover(*, run_id: int | None = None, backfill_id: int | None = None,
                 now: datetime | None = None) -> int:
    """Hand work abandoned by dead workers to live ones; return how many items were re-queued.

    An item (a run's symbol, a backfill's chunk) 'running' without a heartbeat for
    RUN_LEASE_SECONDS lost its worker (kill -9). Pending items and queued runs whose tasks
    vanished (a worker died holding them) are re-queued when the broker's queue is empty.
    Duplicates are harmless: claims are atomic. With an id, only that run or job is looked at.
    """
    from backfills.models import BackfillChunk, BackfillJob

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RUN_LEASE_SECONDS)
    queue_empty = get_broker().queue_size() == 0
    runs = CollectionRun.objects.active()
    jobs = BackfillJob.objects.filter(status=BackfillJob.RUNNING)
    if run_id or backfill_id:
        runs, jobs = runs.filter(pk=run_id), jobs.filter(pk=backfill_id)
    kinds = [(RunSymbol.objects.filter(run__in=runs.filter(status=CollectionRun.RUNNING)),
              "collectors.tasks.run_symbol_execute", "run_id", "run"),
             (BackfillChunk.objects.filter(job__in=jobs), "backfills.tasks.chunk_execute", "job_id", "backfill")]
    requeued = 0
    for items, task, owner_field, group in kinds:
        # enqueued_at < stale: an item handed out again less than a lease ago is not re-sent
        # by every worker that finishes something meanwhile.
        dead = items.filter(status=WorkItem.RUNNING, heartbeat_at__lt=stale).exclude(enqueued_at__gte=stale)
        if queue_empty:
            dead = dead | items.filter(status=WorkItem.PENDING, enqueued_at__lt=stale)
        for pk, owner in dead.values_list("pk", owner_field):
            log.warning("work_requeued", task=task, item_id=pk, **{owner_field: owner})
            items.model.objects.filter(pk=pk).update(enqueued_at=now)
            enqueue_task(task, pk, group=f"{group}-{owner}")
            requeued += 1
    if queue_empty:
        for run in runs.filter(status=CollectionRun.QUEUED, created_at__lt=stale):
            log.warning("run_requeued", run_id=run.pk)
            _enqueue_run(run.pk)
        queued_jobs = BackfillJob.objects.filter(status=BackfillJob.QUEUED, created_at__lt=stale)
        if backfill_id:
            queued_jobs = queued_jobs.filter(pk=backfill_id)
        for job_pk in queued_jobs.values_list("pk", flat=True):
            log.warning("backfill_requeued", backfill_id=job_pk)
            enqueue_task("backfills.tasks.backfill_execute", job_pk, group=f"backfill-{job_pk}")
    if not (run_id or backfill_id):
        for run in runs.filter(status=CollectionRun.RUNNING):
            run_finish_if_done(run_id=run.pk)
    return requeued


def retention_prune(*, now: datetime | None = None) -> int:
    """Delete run events and alerts older than DATA_RETENTION_DAYS; returns how many."""
    from collectors.models import Alert, RunEvent

    cutoff = (now or timezone.now()) - timedelta(days=settings.DATA_RETENTION_DAYS)
    return RunEvent.objects.filter(created_at__lt=cutoff).delete()[0] + \
        Alert.objects.filter(created_at__lt=cutoff).delete()[0]


# --- schedules ----------------------------------------------------------------------------

SCHEDULE_PREFIX = "collector:"


def schedule_sync(*, collector: Collector):
    """Make the collector's django-q2 cron schedule match it: a forward run at each `schedule`
    time while enabled; none when disabled, without a schedule, or deleted. Idempotent; an
    unchanged schedule keeps its next run."""
    from croniter import croniter
    from django_q.models import Schedule

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
    from django_q.models import Schedule

    kept = [s for c in Collector.objects.all() if (s := schedule_sync(collector=c))]
    slugs = {f"{SCHEDULE_PREFIX}{slug}" for slug in Collector.objects.values_list("slug", flat=True)}
    orphans = Schedule.objects.filter(name__startswith=SCHEDULE_PREFIX).exclude(name__in=slugs)
    removed = orphans.count()
    orphans.delete()
    return {"scheduled": len(kept), "removed": removed}


def schedule_next_runs() -> dict[str, datetime]:
    """{collector slug: next scheduled run} for the collectors that have one."""
    from django_q.models import Schedule

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
