"""Quality: reports (live and snapshots), record validation, drift audits, coverage grid."""

import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone as dt_timezone

import structlog
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from backfills.gaps import coverage
from backfills.models import BackfillChunk, BackfillJob, EmptyRange
from collectors.engine import CLOSE_GRACE, enqueue_task, source_for, stored_values
from collectors.models import Candle, CollectionRun, Collector, RunSymbol
from collectors.services import series_required
from collectors.sources import SourceError
from collectors.times import floor_time, iso, midnight, slots, utc_from_ms
from quality.models import DriftAudit, QualitySnapshot, QuarantinedRow
from quality.rules import RULES, compare_stored, kline_violations, record_to_kline

log = structlog.get_logger(__name__)


def quality_report(*, collector: Collector, symbol: str | None = None, now: datetime | None = None) -> dict:
    """The data-quality report of one collector, JSON-ready (see docs in the API schema).

    expected = interval slots from the beginning date to the last closed candle, minus the
    slots the exchange had no data for (the ledger); completeness = stored / expected;
    freshness = seconds since the last stored candle closed (stale beyond 2 intervals, at
    least 2 hours); score = 100 x (seen - invalid - duplicates) / seen, where seen = stored +
    quarantined rows.
    """
    now = now or timezone.now()
    if collector.grain is None:
        return _events_report(collector=collector, symbol=symbol, now=now)
    step, series = collector.grain, collector.series
    start = midnight(collector.beginning_date)
    end = floor_time(now - CLOSE_GRACE, step)  # the last closed candle, as forward runs use
    candles = Candle.objects.filter(collector=collector, interval=series, open_time__gte=start, open_time__lt=end)
    stored = {r["symbol"]: r for r in candles.values("symbol").annotate(n=Count("id"), last=Max("open_time"))}
    symbols = [symbol] if symbol else sorted(set(collector.symbols) | set(stored))
    invalid = dict(QuarantinedRow.objects.filter(collector=collector).values_list("symbol")
                   .annotate(n=Count("id")))
    counted = {}
    for model, owner in ((RunSymbol, "run__collector"), (BackfillChunk, "job__collector")):
        for row in model.objects.filter(**{owner: collector}).values("symbol").annotate(
                d=Sum("duplicates"), r=Sum("revisions")):
            d, r = counted.get(row["symbol"], (0, 0))
            counted[row["symbol"]] = (d + (row["d"] or 0), r + (row["r"] or 0))
    stale_after = max(2 * step, timedelta(hours=2)).total_seconds()
    rows = []
    for name in symbols:
        gaps, no_data = coverage(collector=collector, symbol=name, start=start, end=end) \
            if start < end else ([], [])
        expected = slots([(start, end)], step) - slots(no_data, step) if start < end else 0
        present = stored.get(name, {}).get("n", 0)
        last = stored.get(name, {}).get("last")
        freshness = (now - (last + step)).total_seconds() if last else None
        duplicates, revisions = counted.get(name, (0, 0))
        rows.append({"symbol": name, "records": present, "expected": expected,
                     "completeness_ratio": round(present / expected, 6) if expected else 1.0,
                     "freshness_seconds": round(freshness) if freshness is not None else None,
                     "is_fresh": freshness is not None and freshness <= stale_after,
                     "gaps": len(gaps), "missing_records": slots(gaps, step),
                     "no_data_records": slots(no_data, step), "invalid_records": invalid.get(name, 0),
                     "duplicate_records": duplicates, "revisions": revisions})
    valid = sum(r["records"] for r in rows)
    bad = sum(r["invalid_records"] for r in rows)
    duplicates = sum(r["duplicate_records"] for r in rows)
    expected = sum(r["expected"] for r in rows)
    seen = valid + bad
    rules = (QuarantinedRow.objects.filter(collector=collector, **({"symbol": symbol} if symbol else {}))
             .values_list("rule").annotate(n=Count("id")).order_by("-n"))
    freshest = [r["freshness_seconds"] for r in rows if r["freshness_seconds"] is not None]
    return {"collector": collector.slug, "records_kind": "candles", "start": iso(start), "end": iso(end),
            "total_records": seen, "valid_records": valid, "invalid_records": bad,
            "duplicate_records": duplicates, "revisions": sum(r["revisions"] for r in rows),
            "validation_errors": [f"{rule}: {RULES.get(rule, rule)} ({n})" for rule, n in rules],
            "data_quality_score": round(100.0 * (seen - bad - duplicates) / seen, 2) if seen else 100.0,
            "completeness_ratio": round(valid / expected, 6) if expected else 1.0,
            "freshness_seconds": max(freshest) if freshest else None,
            "stale_after_seconds": stale_after, "symbols": rows}


def _events_report(*, collector: Collector, symbol: str | None, now: datetime) -> dict:
    """The report of an event collector (news), per feed: rows stored, the newest one's time
    (freshness: stale after EVENT_STALE_AFTER_HOURS without a new one), the last complete
    fetch, entries quarantined, and entries read again and skipped (duplicates; normal for a
    feed, so not held against the score). A feed has no expected count: completeness is null.
    score = 100 x stored / (stored + quarantined)."""
    source = collector.source_class
    model = django_apps.get_model(source.model)
    name_field, time_field = source.symbol_field, source.time_field
    stored = {r[name_field]: r for r in model.objects.filter(collector=collector).values(name_field)
              .annotate(n=Count("id"), last=Max(time_field))}
    symbols = [symbol] if symbol else sorted(set(collector.symbols) | set(stored))
    invalid = dict(QuarantinedRow.objects.filter(collector=collector).values_list("symbol").annotate(n=Count("id")))
    items = RunSymbol.objects.filter(run__collector=collector)
    reseen = dict(items.values_list("symbol").annotate(d=Sum("duplicates")))
    collected = dict(items.filter(status=RunSymbol.COMPLETE).values_list("symbol").annotate(t=Max("finished_at")))
    latest = {row["symbol"]: row for row in RunSymbol.objects.filter(
        pk__in=items.values("symbol").annotate(last=Max("id")).values("last")).values("symbol", "status", "error")}
    stale_after = settings.EVENT_STALE_AFTER_HOURS * 3600
    rows = []
    for name in symbols:
        last = stored.get(name, {}).get("last")
        freshness = (now - last).total_seconds() if last else None
        rows.append({"symbol": name, "records": stored.get(name, {}).get("n", 0), "latest": iso(last),
                     "freshness_seconds": round(freshness) if freshness is not None else None,
                     "is_fresh": freshness is not None and freshness <= stale_after,
                     "last_collected_at": iso(collected.get(name)),
                     "last_status": latest.get(name, {}).get("status"),
                     "last_error": latest.get(name, {}).get("error") or None,
                     "invalid_records": invalid.get(name, 0), "duplicate_records": reseen.get(name) or 0})
    valid = sum(r["records"] for r in rows)
    bad = sum(r["invalid_records"] for r in rows)
    rules = (QuarantinedRow.objects.filter(collector=collector, **({"symbol": symbol} if symbol else {}))
             .values_list("rule").annotate(n=Count("id")).order_by("-n"))
    descriptions = getattr(source, "rules", {})
    freshest = [r["freshness_seconds"] for r in rows if r["freshness_seconds"] is not None]
    return {"collector": collector.slug, "records_kind": "events",
            "symbols_without_records": sum(r["records"] == 0 for r in rows),
            "start": iso(midnight(collector.beginning_date)),
            "end": iso(now), "total_records": valid + bad, "valid_records": valid, "invalid_records": bad,
            "duplicate_records": sum(r["duplicate_records"] for r in rows), "revisions": 0,
            "validation_errors": [f"{rule}: {descriptions.get(rule, rule)} ({n})" for rule, n in rules],
            "data_quality_score": round(100.0 * valid / (valid + bad), 2) if valid + bad else 100.0,
            "completeness_ratio": None, "freshness_seconds": max(freshest) if freshest else None,
            "stale_after_seconds": stale_after, "symbols": rows}


def records_validate(*, collector: Collector, records: list, now: datetime | None = None) -> dict:
    """Check records against `collector`'s ingest rules without storing anything: per record,
    every rule it breaks (what ingest would quarantine it for: the first of them)."""
    series_required(collector=collector, what="kline validation")
    now_ms = int((now or timezone.now()).timestamp() * 1000)
    step_ms = int(collector.grain.total_seconds() * 1000)
    full = collector.config.get("validate", settings.ENABLE_DATA_VALIDATION)
    results = []
    for index, record in enumerate(records):
        row, shape_errors = record_to_kline(record)
        errors = [{"rule": rule, "field": field, "message": message} for field, rule, message in shape_errors]
        if row is not None:
            errors = [{"rule": rule, "message": RULES[rule]}
                      for rule in kline_violations(row, step_ms=step_ms, now_ms=now_ms, full=full)]
        results.append({"index": index, "valid": not errors, "errors": errors})
    invalid = sum(not r["valid"] for r in results)
    return {"collector": collector.slug, "rules_enabled": full, "records": len(results),
            "valid_records": len(results) - invalid, "invalid_records": invalid, "results": results}



# --- snapshots --------------------------------------------------------------------------

def snapshot_take(*, collector: Collector, now: datetime | None = None) -> QualitySnapshot:
    """Compute the collector's report now and keep it (the trend, and fast reads of big data)."""
    now = now or timezone.now()
    began = time.monotonic()
    report = quality_report(collector=collector, now=now)
    return QualitySnapshot.objects.create(
        collector=collector, taken_at=now, score=report["data_quality_score"],
        completeness=report["completeness_ratio"], freshness_seconds=report["freshness_seconds"],
        total_records=report["total_records"], invalid_records=report["invalid_records"],
        duplicate_records=report["duplicate_records"], revisions=report["revisions"],
        gaps=sum(row.get("gaps", 0) for row in report["symbols"]), compute_seconds=time.monotonic() - began,
        report=report)


def snapshots_take_all(*, now: datetime | None = None) -> int:
    """Scheduled: a snapshot of every enabled collector, then prune what retention drops."""
    taken = 0
    for collector in Collector.objects.filter(enabled=True):
        try:
            snapshot_take(collector=collector, now=now)
            taken += 1
        except Exception:  # one broken collector must not stop the others' snapshots
            log.exception("snapshot_failed", collector=collector.slug)
    quality_prune(now=now)
    return taken


def quality_prune(*, now: datetime | None = None) -> int:
    """Delete snapshots and finished audits older than DATA_RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DATA_RETENTION_DAYS)
    deleted, _ = QualitySnapshot.objects.filter(taken_at__lt=cutoff).delete()
    audits, _ = DriftAudit.objects.filter(created_at__lt=cutoff).exclude(
        status__in=[DriftAudit.QUEUED, DriftAudit.RUNNING]).delete()
    return deleted + audits


def quality_report_served(*, collector: Collector, symbol: str | None = None, live: bool = False,
                          now: datetime | None = None) -> dict:
    """The report for the API: the latest snapshot while it is still the truth (young enough,
    and no run or backfill of the collector finished or is running since), else live."""
    now = now or timezone.now()
    if not live and symbol is None:
        snapshot = collector.snapshots.order_by("-taken_at").first()
        if snapshot and (now - snapshot.taken_at).total_seconds() <= settings.QUALITY_SNAPSHOT_MAX_AGE_SECONDS \
                and not _written_since(collector, snapshot.taken_at):
            return {**snapshot.report, "source": "snapshot", "computed_at": iso(snapshot.taken_at)}
    report = quality_report(collector=collector, symbol=symbol, now=now)
    return {**report, "source": "live", "computed_at": iso(now)}


def _written_since(collector: Collector, moment: datetime) -> bool:
    changed = Q(finished_at__gt=moment) | Q(status__in=CollectionRun.ACTIVE)
    return collector.runs.filter(changed).exists() or BackfillJob.objects.filter(
        Q(collector=collector) & (Q(finished_at__gt=moment) | Q(status__in=BackfillJob.ACTIVE))).exists()


# --- drift audits -----------------------------------------------------------------------

AUDIT_STALE = timedelta(minutes=30)  # a running audit this old lost its worker; take it over
DAY_COUNT_THREADS = 4  # database connections that count the coverage map's days at once


def audit_start(*, collector: Collector, sample_size: int, triggered_by: str,
                enqueue: bool = True) -> DriftAudit:
    """Create a queued audit and hand it to the workers once the transaction commits."""
    series_required(collector=collector, what="drift audits")
    audit = DriftAudit.objects.create(collector=collector, sample_size=sample_size, triggered_by=triggered_by)
    if enqueue:
        transaction.on_commit(lambda: enqueue_task("quality.tasks.audit_execute", audit.pk,
                                                   task_name=f"audit-{audit.pk}"))
    log.info("audit_started", audit_id=audit.pk, collector=collector.slug, sample_size=sample_size)
    return audit


def audits_scheduled(*, sample_size: int | None = None) -> list[int]:
    """Scheduled: a drift audit of every enabled collector that has data."""
    size = sample_size or settings.AUDIT_SAMPLE_SIZE
    return [audit_start(collector=c, sample_size=size, triggered_by="schedule").pk
            for c in Collector.objects.filter(enabled=True) if Candle.objects.filter(collector=c).exists()]


def audit_run(*, audit_id: int, now: datetime | None = None) -> DriftAudit | None:
    """Sample stored candles, re-fetch them (through the shared budget), compare field by field.

    Safe to run twice: only a queued audit (or one abandoned by a dead worker) is claimed."""
    now = now or timezone.now()
    audit = DriftAudit.objects.select_related("collector").filter(pk=audit_id).first()
    if audit is None or not audit.claim(stale_before=now - AUDIT_STALE):
        return audit  # deleted, finished, or alive in another worker
    collector = audit.collector
    source = source_for(collector)
    try:
        sample = audit_sample(collector=collector, size=audit.sample_size, rng=random.Random(audit.pk))
        sampled = unavailable = 0
        differing, differences = set(), []
        for symbol, times in sample.items():
            stored = _stored_values(collector, symbol, times)
            fetched = _refetch(source, symbol, sorted(stored), collector.grain)
            _, revisions = compare_stored(list(fetched.values()), stored)
            sampled += len(stored)
            unavailable += len(stored) - len(fetched)
            for open_ms, changes in revisions:
                differing.add((symbol, open_ms))
                differences.extend({"symbol": symbol, "open_time": iso(utc_from_ms(open_ms)), "field": name,
                                    "stored": old, "source": new} for name, (old, new) in changes.items())
        audit.mark_finished(DriftAudit.COMPLETE, sampled=sampled, differing=len(differing),
                            unavailable=unavailable, differences=differences, requests=source.http.requests)
        log.info("audit_finished", audit_id=audit.pk, sampled=sampled, differing=len(differing))
    except Exception as error:
        if not isinstance(error, SourceError):
            log.exception("audit_crashed", audit_id=audit.pk)
        audit.mark_finished(DriftAudit.FAILED, error=f"{type(error).__name__}: {error}"[:2000],
                            requests=source.http.requests)
    audit.refresh_from_db()
    return audit


def audit_sample(*, collector: Collector, size: int, rng: random.Random) -> dict[str, list[datetime]]:
    """Up to `size` distinct stored candles drawn uniformly from each symbol's stored span (symbols
    weighted by span), by index seeks only: no ORDER BY RANDOM() over millions of rows."""
    series, step = collector.series, collector.grain
    candles = Candle.objects.filter(collector=collector, interval=series)
    spans = {}
    for symbol in _symbols_seen(collector):
        rows = candles.filter(symbol=symbol).order_by("open_time").values_list("open_time", flat=True)
        first, last = rows.first(), rows.reverse().first()
        if first is not None:
            spans[symbol] = (first, slots([(first, last + step)], step))
    chosen: dict[str, set] = defaultdict(set)
    total = sum(n for _, n in spans.values())
    if 2 * size >= total:  # a large share of all there is: read the keys (at most 2 x size) and pick
        keys = [(s, t) for s in spans for t in candles.filter(symbol=s).values_list("open_time", flat=True)]
        for symbol, moment in rng.sample(keys, min(size, len(keys))):
            chosen[symbol].add(moment)
        return {symbol: sorted(times) for symbol, times in sorted(chosen.items())}
    names = list(spans)
    weights = [spans[s][1] for s in names]
    for _ in range(8):  # draws that land in a gap are retried; sparse data may give fewer
        wanted = min(size, total) - sum(len(v) for v in chosen.values())
        if wanted <= 0 or not names:
            break
        draws = defaultdict(set)
        for symbol in rng.choices(names, weights=weights, k=wanted * 2):
            first, count = spans[symbol]
            draws[symbol].add(first + step * rng.randrange(count))
        for symbol, times in draws.items():
            times -= chosen[symbol]
            found = candles.filter(symbol=symbol, open_time__in=list(times)).values_list("open_time", flat=True)
            for moment in found:
                if wanted > 0:
                    chosen[symbol].add(moment)
                    wanted -= 1
    return {symbol: sorted(times) for symbol, times in sorted(chosen.items()) if times}


def _symbols_seen(collector: Collector) -> list[str]:
    """Symbols the collector may hold data for, from small tables (not a scan of the candles)."""
    names = set(collector.symbols)
    names.update(RunSymbol.objects.filter(run__collector=collector).values_list("symbol", flat=True).distinct())
    names.update(BackfillChunk.objects.filter(job__collector=collector).values_list("symbol", flat=True)
                 .distinct())
    return sorted(names)


def _stored_values(collector: Collector, symbol: str, times: list[datetime]) -> dict:
    """The sampled candles as compare_stored takes them, 500 keys per query."""
    candles = Candle.objects.filter(collector=collector, symbol=symbol, interval=collector.series)
    result = {}
    for i in range(0, len(times), 500):
        result.update(stored_values(candles.filter(open_time__in=times[i:i + 500])))
    return result


def _refetch(source, symbol: str, wanted_ms: list[int], step: timedelta) -> dict:
    """{open_ms: row} as the source serves the wanted candles now; one request per window of
    up to a page (1000 candles) of sampled times."""
    wanted, fetched = set(wanted_ms), {}
    step_ms = int(step.total_seconds() * 1000)
    i = 0
    while i < len(wanted_ms):
        j = i
        while j + 1 < len(wanted_ms) and wanted_ms[j + 1] - wanted_ms[i] < 1000 * step_ms:
            j += 1
        for page in source.fetch(symbol, utc_from_ms(wanted_ms[i]), utc_from_ms(wanted_ms[j] + step_ms)):
            if page.error is not None:
                raise page.error  # an audit is a whole answer or none: the audit fails with the reason
            fetched.update((row[0], row) for row in page.rows if row[0] in wanted)
        i = j + 1
    return fetched


# --- coverage grid ----------------------------------------------------------------------

def coverage_grid(*, collector: Collector, first_day: date, last_day: date,
                  now: datetime | None = None) -> dict:
    """Per symbol and UTC day in [first_day, last_day]: (stored, expected, no_data, quarantined).

    expected counts the day's closed slots from the beginning date on, minus no_data (slots
    the exchange answered empty, from the ledger). One grouped count per symbol over the
    unique index, one read of the ledger and one of the quarantine for the whole window."""
    now = now or timezone.now()
    step, series = collector.grain, collector.series
    day = timedelta(days=1)
    lo = midnight(first_day)
    hi = midnight(last_day) + day
    beginning = midnight(collector.beginning_date)
    window = (max(lo, beginning), min(hi, floor_time(now - CLOSE_GRACE, step)))
    days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    index = {d: i for i, d in enumerate(days)}

    def expected_of(d):  # closed, wanted slots of day d
        day_start = midnight(d)
        start, end = max(day_start, window[0]), min(day_start + day, window[1])
        return slots([(start, end)], step) if start < end else 0

    expected = [expected_of(d) for d in days]
    symbols = _symbols_seen(collector)
    no_data = {s: [0] * len(days) for s in symbols}
    for symbol, start, end in EmptyRange.objects.filter(
            collector=collector, series=series, start__lt=window[1], end__gt=window[0]
    ).values_list("symbol", "start", "end"):
        counts = no_data.get(symbol)
        start, end = max(start, window[0]), min(end, window[1])
        while counts is not None and start < end:
            stop = min(midnight(start.date()) + day, end)
            counts[index[start.date()]] += slots([(start, stop)], step)
            start = stop
    quarantined = defaultdict(int)
    for symbol, moment in QuarantinedRow.objects.filter(
            collector=collector, open_time__gte=lo, open_time__lt=hi).values_list("symbol", "open_time"):
        quarantined[symbol, index[moment.astimezone(dt_timezone.utc).date()]] += 1
    stored = _day_counts(collector, symbols, lo, hi)
    rows = []
    for symbol in symbols:
        counts, gaps = [0] * len(days), no_data[symbol]
        for key, n in stored[symbol]:
            counts[index[date.fromisoformat(str(key)[:10])]] = n
        rows.append((symbol, [(counts[i], max(expected[i] - gaps[i], 0), gaps[i], quarantined[symbol, i])
                              for i in range(len(days))]))
    return {"collector": collector.slug, "days": days, "rows": rows, "step": step}


def _day_counts(collector: Collector, symbols: list[str], lo: datetime, hi: datetime) -> dict:
    """{symbol: [(day, stored candles), ...]}: one grouped count per symbol over the unique index.

    The database does the work (~0.5 us a row), so several connections share it when there are
    many symbols: on 2 cores that halves the map's time on MariaDB. Inside a transaction the
    caller's connection does it all, since other connections cannot see its writes."""
    day = "substr(open_time, 1, 10)" if connection.vendor == "sqlite" else "CAST(open_time AS DATE)"
    quote = "`" if connection.vendor == "mysql" else '"'
    sql = (f"SELECT {day}, COUNT(*) FROM collectors_candle WHERE collector_id = %s "
           f"AND {quote}interval{quote} = %s AND symbol = %s AND open_time >= %s AND open_time < %s "
           f"GROUP BY {day}")
    adapt = connection.ops.adapt_datetimefield_value
    params = [collector.pk, collector.series, None, adapt(lo), adapt(hi)]

    def count(names, own_connection=False):
        try:
            # django.db.connection is per thread: in a pool thread, that thread's own connection.
            with connection.cursor() as cursor:
                out = {}
                for name in names:
                    params_ = params.copy()
                    params_[2] = name
                    cursor.execute(sql, params_)
                    out[name] = cursor.fetchall()
                return out
        finally:
            if own_connection:
                connection.close()

    threads = min(DAY_COUNT_THREADS, len(symbols) // 8)
    if threads < 2 or connection.in_atomic_block:
        return count(symbols)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda k: count(symbols[k::threads], own_connection=True), range(threads))
        return {name: rows for part in parts for name, rows in part.items()}


def coverage_day(*, collector: Collector, symbol: str, day: date, now: datetime | None = None) -> dict:
    """One cell of the grid in detail: the missing ranges, no-data ranges and quarantined rows."""
    now = now or timezone.now()
    step = collector.grain
    day_start, day_end = midnight(day), midnight(day) + timedelta(days=1)
    start = max(day_start, midnight(collector.beginning_date))
    end = min(day_end, floor_time(now - CLOSE_GRACE, step))
    missing, no_data = coverage(collector=collector, symbol=symbol, start=start, end=end) \
        if start < end else ([], [])
    stored = Candle.objects.filter(collector=collector, symbol=symbol, interval=collector.series,
                                   open_time__gte=start, open_time__lt=end).count() if start < end else 0
    quarantined = QuarantinedRow.objects.filter(
        collector=collector, symbol=symbol, open_time__gte=day_start, open_time__lt=day_end)
    return {"symbol": symbol, "day": day, "start": start, "end": end, "stored": stored,
            "expected": max(slots([(start, end)], step) - slots(no_data, step), 0) if start < end else 0,
            "missing": missing, "no_data": no_data, "missing_slots": slots(missing, step),
            "quarantined": list(quarantined[:200]), "quarantined_count": quarantined.count()}
