"""The engine: plan -> fetch -> validate -> store -> quarantine -> record, one loop for every
mode of a run, every backfill chunk and every source.

A work item (a run's symbol, a backfill's chunk) is planned (`plan_ranges`: what is missing in
the database, minus what the source already answered empty), fetched page by page through
its source (`fetch_ranges`), each page validated, stored, its bad rows quarantined and its
empty spans put in the ledger in one transaction, and its outcome recorded (`item_finish`),
with what it could not fetch kept for gap_fill. Abandoned items go back to the workers
(`requeue_abandoned`). The workflows above it (collectors.services: runs; backfills.services:
jobs) only say which items exist and when their job is done.
"""

import hashlib
from datetime import datetime, timedelta

import orjson
import structlog
from django.apps import apps as django_apps
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from backfills.gaps import coverage, last_stored
from backfills.models import EmptyRange, MissingRange
from collectors.db import atomic_retry
from collectors.http import Upstream
from collectors.models import Candle, Collector, WorkItem, worker_name
from collectors.sources import SourceError
from collectors.storage import upsert_candles
from collectors.times import (
    LATEST,
    absent,
    ceil_time,
    day_start,
    floor_time,
    iso,
    iso_ranges,
    merge,
    midnight,
    ms_from_utc,
    utc_from_ms,
)
from quality.models import QuarantinedRow, Revision
from quality.rules import FIELDS as REVISED_FIELDS, compare_stored, split_valid

log = structlog.get_logger(__name__)

# A candle counts as closed only this long after its period ends, so a clock slightly ahead
# of the exchange's never stores the still-open candle as final.
CLOSE_GRACE = timedelta(seconds=5)
EVENTS_UNTIL = LATEST  # no end asked: whatever the source has
# After this many pages in a row failed (after their retries), the upstream or the database is
# down rather than one range bad: the symbol stops and the rest is left missing for gap_fill.
MAX_FAILED_PAGES_IN_A_ROW = 3


def enqueue_task(dotted: str, *args, **kwargs) -> str:
    """Send the task named by its dotted path to the workers (django-q2); returns its id."""
    return async_task(dotted, *args, **kwargs)


def current_request_id() -> str:
    """The id django-structlog gave the HTTP request being served, if any."""
    return str(structlog.contextvars.get_contextvars().get("request_id") or "")[:64]


def log_context(**context):
    """Bind run/backfill ids (and the request that started it) to every log line below, in
    whichever worker runs it: the lines become RunEvents and can be found by request_id."""
    return structlog.contextvars.bound_contextvars(**{k: v for k, v in context.items() if v})


def source_for(collector: Collector, *, on_wait=None, use_validators: bool = True):
    """The collector's source, with an HTTP wrapper of its own (retries, budget, counters);
    `use_validators=False` makes conditional GETs unconditional (read feeds whole)."""
    source_class = collector.source_class
    http = Upstream(collector.config.get("base_url", ""), retries=collector.max_retries,
                    backoff=collector.retry_backoff_seconds,
                    weight_header=getattr(source_class, "weight_header", None), on_wait=on_wait,
                    validator_scope=f"collector:{collector.pk}", use_validators=use_validators)
    return source_class(collector.config, http=http)


def requested_window(*, collector: Collector, start: datetime | None, end: datetime | None, now: datetime,
                     until_today: bool) -> tuple[datetime, datetime]:
    """[lo, hi) on the collector's grid for an inclusive request: from `start` (default: the
    beginning date) to `end` (default: the end of yesterday, or with `until_today=False` the
    last closed candle), never past the last closed candle. Candle collectors only."""
    step = collector.grain
    horizon = floor_time(now - CLOSE_GRACE, step)
    lo = ceil_time(start or midnight(collector.beginning_date), step)
    hi = floor_time(end, step) + step if end else day_start(now) if until_today else horizon
    return lo, min(hi, horizon)


def plan_ranges(*, collector: Collector, symbol: str, mode: str, start: datetime | None,
                end: datetime | None, now: datetime) -> list[tuple[datetime, datetime]]:
    """The [start, end) ranges to fetch for one symbol: missing in the database, minus what the
    source already answered empty, within closed periods only."""
    step = collector.grain
    series = collector.series
    beginning = midnight(collector.beginning_date)
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
        lo, hi = start or beginning, end or day_start(now)
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


def item_finish(*, item: WorkItem, collector: Collector, status: str, missing, error: str):
    """Close a run's symbol or a backfill's chunk with its outcome; what it could not fetch is
    recorded for gap_fill in the same transaction. A worker that lost the item to another
    (its lease ran out) records nothing."""
    def finish():
        if item.mark_finished(status, missing_ranges=iso_ranges(missing), error=error) and missing:
            MissingRange.record(collector_id=collector.pk, symbol=item.symbol, series=collector.series,
                                ranges=missing, reason=error)
    atomic_retry(finish)


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
                                     now_ms=ms_from_utc(timezone.now()))
        duplicates, revised = (detect_changes(collector=collector, symbol=symbol, rows=valid,
                                              page=page, origin=origin)
                               if detect and valid else (0, 0))
        written = upsert_candles(collector_id=collector.pk, symbol=symbol,
                                 interval=collector.series, rows=valid)
        quarantine(collector=collector, symbol=symbol, invalid=invalid, origin=origin)
        # A slot where the exchange sent anything, even an invalid row, is not empty.
        slots = [t - t % step_ms for t in page.times_ms]
        holes = absent(ms_from_utc(page.start), ms_from_utc(page.end),
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
    return {ms_from_utc(v[0]): (*v[1:6], ms_from_utc(v[6]), *v[7:])
            for v in candles.values_list("open_time", *REVISED_FIELDS)}


def snapshot_after(*, collector_id: int):
    """Refresh the collector's quality snapshot once new data is in (the report, /metrics and
    alerts read it), on a worker, after the transaction commits."""
    transaction.on_commit(lambda: enqueue_task("quality.tasks.snapshot_collector", collector_id))


def cancelled_missing(*, items, collector: Collector, ranges):
    """What cancelled items that never started would have fetched, recorded as missing (on the
    items and for gap_fill); `ranges(item)` gives an item's ranges."""
    for item in items:
        missing = ranges(item)
        type(item).objects.filter(pk=item.pk).update(missing_ranges=iso_ranges(missing))
        MissingRange.record(collector_id=collector.pk, symbol=item.symbol, series=collector.series,
                            ranges=missing, reason="Cancelled before it started.")


def item_collect(*, item: WorkItem, collector: Collector, plan, origin: dict, is_cancelled,
                 may_overlap: bool = False, use_validators: bool = True, unplanned=(),
                 crashed_event: str = "item_crashed") -> tuple[str, str] | None:
    """Fetch what `plan()` says a claimed item misses and record its outcome (`item_finish`);
    returns (status, error), or None if another worker took the item over (that worker records
    the outcome).

    A bug never leaves the item 'running': it fails, with what it was fetching kept for gap_fill
    (`unplanned` should planning itself fail: a chunk's span; nothing for a run's symbol, whose
    window may be years that gap_fill finds as holes anyway)."""
    ranges = list(unplanned)
    try:
        ranges = plan()
        if not ranges:
            status, missing, error = WorkItem.SKIPPED, [], ""
        else:
            status, missing, error = fetch_ranges(
                collector=collector, symbol=item.symbol, ranges=ranges, item=item, origin=origin,
                is_cancelled=is_cancelled, may_overlap=may_overlap, use_validators=use_validators)
    except LeaseLost:
        return None
    except Exception as exc:
        log.exception(crashed_event)
        status, missing = WorkItem.FAILED, ranges if collector.grain is not None else []
        error = f"{type(exc).__name__}: {exc}"
    item_finish(item=item, collector=collector, status=status, missing=missing, error=error)
    return status, error


def lease_expired_before(now: datetime) -> datetime:
    """Items heart-beating before this have lost their worker (RUN_LEASE_SECONDS)."""
    return now - timedelta(seconds=settings.RUN_LEASE_SECONDS)


def queue_is_empty() -> bool:
    """No task waits in the broker's queue: pending items with a task sent are orphans."""
    return get_broker().queue_size() == 0


def requeue_abandoned(items, *, task: str, owner_field: str, group: str, now: datetime,
                      queue_empty: bool) -> int:
    """Send `task` again for the items (a queryset of a WorkItem model) whose worker died: running
    without a heartbeat for a lease, or (when the queue is empty, so their task is gone) pending
    with a task sent over a lease ago. Returns how many were sent. Duplicates are harmless:
    claims are atomic (WorkItem.claim)."""
    stale = lease_expired_before(now)
    # enqueued_at < stale: an item handed out again less than a lease ago is not re-sent by
    # every worker that finishes something meanwhile.
    dead = items.filter(status=WorkItem.RUNNING, heartbeat_at__lt=stale).exclude(enqueued_at__gte=stale)
    if queue_empty:
        dead = dead | items.filter(status=WorkItem.PENDING, enqueued_at__lt=stale)
    sent = 0
    for pk, owner in dead.values_list("pk", owner_field):
        log.warning("work_requeued", task=task, item_id=pk, **{owner_field: owner})
        items.model.objects.filter(pk=pk).update(enqueued_at=now)
        enqueue_task(task, pk, group=f"{group}-{owner}")
        sent += 1
    return sent
