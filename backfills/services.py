"""Backfills: estimate, plan into chunks, run the chunks on the workers, control them.

Chunks are work items of the same engine as collection runs' symbols (collectors.engine).
"""

import math
from datetime import datetime
from itertools import islice

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from backfills.gaps import coverage
from backfills.models import BackfillChunk, BackfillJob, EmptyRange
from collectors import engine, services as collect
from collectors.alerts import alert_raise
from collectors.models import Collector
from collectors.sources import SourceError
from collectors.times import iso_ranges, slots
from config.errors import InputError, NotActive, UpstreamUnavailable

log = structlog.get_logger(__name__)


MISSING_RANGES_SHOWN = 100  # per symbol in an estimate; `missing_ranges_total` counts them all
CREATE_BATCH = 1000  # chunks per INSERT when a job is recorded
GAPS_RANGES_SHOWN = 1000  # per symbol and list in a gaps report; the *_ranges_total count them all


class PlanTooLarge(InputError):
    """A backfill of more chunks than BACKFILL_MAX_CHUNKS: narrow the range or the symbols."""


def _split(ranges, span):
    for start, end in ranges:
        while start < end:
            yield start, min(start + span, end)
            start = min(start + span, end)


def _chunk_span(collector):
    page = collector.source_class.page_size
    return collector.grain * page * max(1, settings.BACKFILL_BATCH_SIZE // page)


def _missing(collector, symbol, lo, hi, *, force):
    if force:
        return [(lo, hi)] if lo < hi else []
    return coverage(collector=collector, symbol=symbol, start=lo, end=hi)[0]


def _chunk_figures(records, page):
    """(records, requests) of a chunk of `records` candles, at `page` candles a request."""
    return records, max(1, math.ceil(records / page))


def _plan_totals(ranges, *, span, grain, page) -> tuple[int, int, int]:
    """(chunks, records, requests) of `_plan_chunks` over `ranges`, by arithmetic: every chunk
    but the last of a range spans `span` exactly, so none needs to be built to be counted."""
    chunks = records = requests = 0
    full_records, full_requests = _chunk_figures(slots([(datetime.min, datetime.min + span)], grain), page)
    for start, end in ranges:
        if start >= end:
            continue
        full, rest = divmod(end - start, span)
        chunks += full
        records += full * full_records
        requests += full * full_requests
        if rest:
            last_records, last_requests = _chunk_figures(slots([(start, start + rest)], grain), page)
            chunks += 1
            records += last_records
            requests += last_requests
    return chunks, records, requests


def _plan_chunks(collector, symbol, ranges):
    page = collector.source_class.page_size
    for start, end in _split(ranges, _chunk_span(collector)):
        records, requests = _chunk_figures(slots([(start, end)], collector.grain), page)
        yield {"symbol": symbol, "start": start, "end": end, "records": records, "requests": requests}


def _too_large(*, chunks, counted, symbols, symbol, symbol_chunks, candles) -> PlanTooLarge:
    limit = settings.BACKFILL_MAX_CHUNKS
    sizes = (f"at most {limit:,} chunks are allowed per backfill (BACKFILL_MAX_CHUNKS), one chunk "
             f"being {candles:,} candles of one symbol (BACKFILL_BATCH_SIZE)")
    if symbol_chunks > limit:  # one symbol alone is too much: only a shorter range helps
        return PlanTooLarge("start_date", (
            f"This backfill is too large: {symbol} alone needs {symbol_chunks:,} chunks, and {sizes}. "
            f"Narrow the range (a later start_date or an earlier end_date) and backfill the rest "
            f"as further jobs."))
    return PlanTooLarge("symbols", (
        f"This backfill is too large: the first {counted} of the {symbols} symbols already need "
        f"{chunks:,} chunks, and {sizes}. Ask for fewer symbols per job (or narrow the range: "
        f"start_date, end_date)."))


def backfill_estimate(*, collector: Collector, start=None, end=None, symbols=None, force=False,
                      now=None) -> dict:
    """What a backfill would fetch, per symbol and in total; nothing is started or stored.

    Raises PlanTooLarge (an InputError) beyond BACKFILL_MAX_CHUNKS chunks, as soon as the
    symbols counted so far pass it; no chunk is built here (backfill_create builds them)."""
    now = now or timezone.now()
    collect.series_required(collector=collector, what="backfills")
    if start and end and end < start:
        raise InputError("end_date", "end_date is before start_date.")
    if start and start > now:
        raise InputError("start_date", "start_date is in the future.")
    # The inclusive user range; defaults: the beginning date, the end of yesterday.
    lo, hi = engine.requested_window(collector=collector, start=start, end=end, now=now, until_today=True)
    if symbols is None:
        try:
            symbols = collector.symbols or engine.source_for(collector).list_symbols()
        except SourceError as error:
            raise UpstreamUnavailable(f"Could not list {collector.slug}'s symbols from the exchange ({error}); "
                                      "try again, or name the symbols.") from None
    span, grain, source = _chunk_span(collector), collector.grain, collector.source_class
    per_symbol, plan = [], []
    chunks = records = requests = probes = 0
    for number, symbol in enumerate(symbols, 1):
        ranges = _missing(collector, symbol, lo, hi, force=force)
        symbol_chunks, symbol_records, symbol_requests = _plan_totals(ranges, span=span, grain=grain,
                                                                      page=source.page_size)
        chunks += symbol_chunks
        if chunks > settings.BACKFILL_MAX_CHUNKS:
            raise _too_large(chunks=chunks, counted=number, symbols=len(symbols), symbol=symbol,
                             symbol_chunks=symbol_chunks, candles=span // grain)
        probe = int(not force and _needs_listing_probe(collector, symbol, symbol_chunks))
        probes += probe
        records += symbol_records
        requests += symbol_requests
        plan.append((symbol, ranges))
        per_symbol.append({"symbol": symbol, "missing_ranges": iso_ranges(ranges[:MISSING_RANGES_SHOWN]),
                           "missing_ranges_total": len(ranges), "chunks": symbol_chunks,
                           "records": symbol_records, "requests": symbol_requests + probe})
    # An upper bound for never-collected symbols: chunks before their listing are skipped.
    requests += probes
    weight = requests * source.request_weight
    seconds = weight / settings.EXCHANGE_WEIGHT_BUDGET * settings.EXCHANGE_WEIGHT_WINDOW_SECONDS
    return {"collector": collector.slug, "start": lo, "end": hi, "force": force,
            "estimated_records": records, "estimated_requests": requests, "estimated_weight": weight,
            "estimated_seconds": round(seconds, 1), "chunks": chunks, "symbols": per_symbol,
            "_plan": plan}


def gaps_report(*, collector: Collector, start=None, end=None, symbols=None, now=None) -> dict:
    """Missing ranges and ranges the exchange had no data for, per symbol, kept apart (the
    first GAPS_RANGES_SHOWN of each; the totals and candle counts cover all)."""
    now = now or timezone.now()
    collect.series_required(collector=collector, what="gap reports")
    if start and end and end < start:
        raise InputError("end", "end is before start.")
    if start and start > now:
        raise InputError("start", "start is in the future.")
    # The inclusive user range; defaults: the beginning date, the end of yesterday.
    lo, hi = engine.requested_window(collector=collector, start=start, end=end, now=now, until_today=True)
    symbols = symbols or collector.symbols or list(
        collector.candles.values_list("symbol", flat=True).distinct().order_by("symbol"))
    rows = []
    for symbol in symbols:
        missing, no_data = coverage(collector=collector, symbol=symbol, start=lo, end=hi)
        rows.append({"symbol": symbol, "missing": iso_ranges(missing[:GAPS_RANGES_SHOWN]),
                     "missing_ranges_total": len(missing), "missing_candles": slots(missing, collector.grain),
                     "no_data": iso_ranges(no_data[:GAPS_RANGES_SHOWN]),
                     "no_data_ranges_total": len(no_data), "no_data_candles": slots(no_data, collector.grain)})
    return {"collector": collector.slug, "start": lo.isoformat().replace("+00:00", "Z"),
            "end": hi.isoformat().replace("+00:00", "Z"), "symbols": rows}


def backfill_create(*, collector: Collector, start=None, end=None, symbols=None, force=False,
                    created_by: str, now=None) -> tuple[BackfillJob, dict]:
    """Estimate, record the job with its chunks, and hand it to the workers after commit."""
    now = now or timezone.now()
    symbols = collect.symbols_validate(collector=collector, symbols=symbols)
    estimate = backfill_estimate(collector=collector, start=start, end=end, symbols=symbols,
                                 force=force, now=now)
    with transaction.atomic():
        job = BackfillJob.objects.create(
            collector=collector, start=estimate["start"], end=estimate["end"],
            symbols=[s["symbol"] for s in estimate["symbols"]], force=force, created_by=created_by,
            request_id=engine.current_request_id(), estimated_records=estimate["estimated_records"],
            estimated_requests=estimate["estimated_requests"])
        # Built and inserted a batch at a time: a job of BACKFILL_MAX_CHUNKS chunks never
        # holds them all in memory (bulk_create makes a list of whatever it is given).
        planned = (BackfillChunk(job=job, symbol=c["symbol"], start=c["start"], end=c["end"],
                                 estimated_records=c["records"], estimated_requests=c["requests"])
                   for symbol, ranges in estimate["_plan"] for c in _plan_chunks(collector, symbol, ranges))
        while batch := list(islice(planned, CREATE_BATCH)):
            BackfillChunk.objects.bulk_create(batch)
        transaction.on_commit(lambda: _enqueue_job(job.pk))
    log.info("backfill_created", backfill_id=job.pk, collector=collector.slug,
             chunks=estimate["chunks"], records=estimate["estimated_records"])
    return job, estimate


def _enqueue_job(job_id):
    task_id = engine.enqueue_task("backfills.tasks.backfill_execute", job_id,
                                    task_name=f"backfill-{job_id}", group=f"backfill-{job_id}")
    BackfillJob.objects.filter(pk=job_id).update(task_id=task_id or "")


def _enqueue_chunks(job_id, pks):
    """Send a task for each chunk that has none in the queue (see WorkItem.mark_enqueued)."""
    _send_chunks(job_id, BackfillChunk.mark_enqueued(pks))


def _send_chunks(job_id, pks):
    for pk in pks:
        engine.enqueue_task("backfills.tasks.chunk_execute", pk, group=f"backfill-{job_id}")


def backfill_start(*, job_id: int, inline: bool = False):
    """Mark the job running and spread its pending chunks over the workers (idempotent)."""
    job = BackfillJob.objects.select_related("collector").filter(pk=job_id).first()
    if job is None or not job.is_active:
        return job
    with engine.log_context(backfill_id=job.pk, collector=job.collector.slug, request_id=job.request_id):
        return _backfill_start(job, inline=inline)


def _backfill_start(job, *, inline):
    if job.mark_running():
        _probe_listings(job, job.collector)
    # Interleaved by symbol, so a job of many symbols progresses on all of them together.
    pending = list(job.chunks.filter(status=BackfillChunk.PENDING).order_by("start", "symbol")
                   .values_list("pk", flat=True))
    if inline:
        for pk in pending:
            chunk_collect(chunk_id=pk)
    else:
        _enqueue_chunks(job.pk, pending)
    backfill_finish_if_done(job_id=job.pk)
    return job


def chunk_collect(*, chunk_id: int):
    """Fetch one chunk: what is missing in its span (or all of it with force)."""
    chunk = BackfillChunk.objects.select_related("job__collector").filter(pk=chunk_id).first()
    if chunk is None or not chunk.claim(lease_seconds=settings.RUN_LEASE_SECONDS):
        return chunk
    job = chunk.job
    with engine.log_context(backfill_id=job.pk, collector=job.collector.slug, symbol=chunk.symbol,
                             request_id=job.request_id):
        return _chunk_collect(chunk)


def _chunk_collect(chunk):
    job, collector = chunk.job, chunk.job.collector
    if engine.item_collect(
            item=chunk, collector=collector, origin={"backfill_id": job.pk}, crashed_event="chunk_crashed",
            plan=lambda: _missing(collector, chunk.symbol, chunk.start, chunk.end, force=job.force),
            unplanned=[(chunk.start, chunk.end)], may_overlap=job.force, is_cancelled=job.was_cancelled) is None:
        return chunk  # another worker has it now and will finish it
    backfill_finish_if_done(job_id=job.pk)
    backfills_recover(backfill_id=job.pk)
    return chunk


def _needs_listing_probe(collector, symbol, chunk_count) -> bool:
    """A symbol never collected (no rows, nothing in the ledger) whose range spans several
    chunks: where its data begins is unknown, and each empty chunk would cost a request."""
    if chunk_count < 2:
        return False
    series = collector.series
    return not (EmptyRange.objects.of(collector.pk, symbol, series).exists()
                or collector.candles.filter(symbol=symbol, interval=series).exists())


def _probe_listings(job, collector):
    """Ask once per never-collected symbol where its data begins (its listing) and record the
    span before it as empty, so its chunks there are skipped instead of fetched one by one."""
    source = engine.source_for(collector)
    first_time = getattr(source, "first_time", None)
    if first_time is None or job.force:
        return
    counts = dict(job.chunks.filter(status=BackfillChunk.PENDING).values_list("symbol")
                  .annotate(n=Count("id")))
    for symbol, n in counts.items():
        if not _needs_listing_probe(collector, symbol, n):
            continue
        first = job.chunks.filter(symbol=symbol).order_by("start").first()
        try:
            listed = first_time(symbol, first.start, job.end) or job.end
        except SourceError as error:
            log.warning("listing_probe_failed", backfill_id=job.pk, symbol=symbol, error=str(error))
            continue  # the chunks fetch as usual and report their own errors
        finally:
            # Counted on the symbol's first chunk (still pending: not a claim's progress).
            BackfillChunk.objects.filter(pk=first.pk).update(requests=F("requests") + source.http.requests)
            source.http.requests = 0
        if listed > first.start:
            EmptyRange.record(collector_id=collector.pk, symbol=symbol, series=collector.series,
                              ranges=[(first.start, listed)])


def backfill_finish_if_done(*, job_id: int):
    job = BackfillJob.objects.get(pk=job_id)
    if job.status != BackfillJob.RUNNING:
        return job
    counts = dict(job.chunks.values_list("status").annotate(n=Count("id")))
    outcome = BackfillChunk.outcome(counts) if counts else (BackfillJob.COMPLETE, 0)  # nothing missing
    if outcome is None:
        return job
    status, bad = outcome
    error = (f"{bad} of {sum(counts.values())} chunks failed or are partial; retry them with retry-failed."
             if bad else "")
    if job.mark_finished(status, error=error):
        log.info("backfill_finished", backfill_id=job.pk, status=status, **counts)
        engine.snapshot_after(collector_id=job.collector_id)
        if status == BackfillJob.FAILED:
            alert_raise(kind="backfill_failed", key=f"backfill_failed:{job.pk}",
                        summary=f"Backfill {job.pk} of {job.collector.slug} failed: {error}",
                        details={"backfill_id": job.pk, "collector": job.collector.slug, "chunks": counts})
    return job


def backfill_cancel(*, job: BackfillJob) -> BackfillJob:
    """Stop the job; chunks in flight stop after their page; stored data stays."""
    job.cancel()
    job.chunks.filter(status=BackfillChunk.PENDING).update(status=BackfillChunk.CANCELLED,
                                                          finished_at=timezone.now())
    log.info("backfill_cancelled", backfill_id=job.pk)
    # What chunks never started would have fetched stays findable for gap_fill.
    engine.cancelled_missing(items=job.chunks.filter(status=BackfillChunk.CANCELLED, started_at__isnull=True),
                              collector=job.collector, ranges=lambda chunk: [(chunk.start, chunk.end)])
    return job


def backfill_retry_failed(*, job: BackfillJob) -> int:
    """Run again only the failed, partial or cancelled chunks of a finished job.

    Only chunks without a task in the queue get a new one: a chunk cancelled before its task
    ran still has that task, which claims it now that it is pending again (WorkItem.claim)."""
    retry = [BackfillChunk.FAILED, BackfillChunk.PARTIAL, BackfillChunk.CANCELLED]
    with transaction.atomic():
        if not job.reopen():
            raise NotActive(f"Backfill {job.pk} is {job.status}; wait until it has finished.", status=job.status)
        pks = list(job.chunks.filter(status__in=retry).values_list("pk", flat=True))
        for i in range(0, len(pks), 1000):
            job.chunks.filter(pk__in=pks[i:i + 1000]).update(status=BackfillChunk.PENDING, error="",
                                                              missing_ranges=[])
        # Marked in this transaction: a chunk task that finds its chunk still cancelled clears
        # the mark (no longer queued) before it, or finds the chunk pending after it and claims it.
        send = BackfillChunk.mark_enqueued(pks)
        transaction.on_commit(lambda: _send_chunks(job.pk, send))
    if not pks:
        backfill_finish_if_done(job_id=job.pk)
    log.info("backfill_retry_failed", backfill_id=job.pk, chunks=len(pks), enqueued=len(send))
    return len(pks)


def backfills_recover(*, backfill_id: int | None = None, now=None, queue_empty: bool | None = None) -> int:
    """Hand backfill chunks abandoned by dead workers to live ones (see collectors.engine
    .requeue_abandoned), and queued jobs whose task vanished; returns how many chunks were sent.
    `queue_empty` as in collectors.services.runs_recover."""
    now = now or timezone.now()
    if queue_empty is None:
        queue_empty = engine.queue_is_empty()
    jobs = BackfillJob.objects.filter(status=BackfillJob.RUNNING)
    queued = BackfillJob.objects.filter(status=BackfillJob.QUEUED, created_at__lt=engine.lease_expired_before(now))
    if backfill_id:
        jobs, queued = jobs.filter(pk=backfill_id), queued.filter(pk=backfill_id)
    requeued = engine.requeue_abandoned(
        BackfillChunk.objects.filter(job__in=jobs), task="backfills.tasks.chunk_execute", owner_field="job_id",
        group="backfill", now=now, queue_empty=queue_empty)
    if queue_empty:
        for job_pk in queued.values_list("pk", flat=True):
            log.warning("backfill_requeued", backfill_id=job_pk)
            engine.enqueue_task("backfills.tasks.backfill_execute", job_pk, group=f"backfill-{job_pk}")
    return requeued
