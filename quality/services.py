"""Quality reports: completeness, freshness, validity, duplicates and revisions per symbol."""

from datetime import datetime, time as dtime, timedelta, timezone as dt_timezone

from django.db.models import Count, Max, Sum
from django.utils import timezone

from backfills.gaps import coverage
from backfills.models import BackfillChunk
from backfills.ranges import floor_time, slots
from collectors.models import Candle, Collector, RunSymbol
from collectors.services import CLOSE_GRACE
from django.conf import settings
from quality.models import QuarantinedRow
from quality.rules import RULES, kline_violations, record_to_kline

def quality_report(*, collector: Collector, symbol: str | None = None, now: datetime | None = None) -> dict:
    """The data-quality report of one collector (see docs in the API schema).

    expected = interval slots from the beginning date to the last closed candle, minus the
    slots the exchange had no data for (the ledger); completeness = stored / expected;
    freshness = seconds since the last stored candle closed (stale beyond 2 intervals, at
    least 2 hours); score = 100 x (seen - invalid - duplicates) / seen, where seen = stored +
    quarantined rows.
    """
    now = now or timezone.now()
    step, series = collector.grain, collector.series
    start = datetime.combine(collector.beginning_date, dtime(0), tzinfo=dt_timezone.utc)
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
    return {"collector": collector.slug, "start": start, "end": end,
            "total_records": seen, "valid_records": valid, "invalid_records": bad,
            "duplicate_records": duplicates, "revisions": sum(r["revisions"] for r in rows),
            "validation_errors": [f"{rule}: {RULES.get(rule, rule)} ({n})" for rule, n in rules],
            "data_quality_score": round(100.0 * (seen - bad - duplicates) / seen, 2) if seen else 100.0,
            "completeness_ratio": round(valid / expected, 6) if expected else 1.0,
            "freshness_seconds": max(freshest) if freshest else None,
            "stale_after_seconds": stale_after, "symbols": rows}


def records_validate(*, collector: Collector, records: list, now: datetime | None = None) -> dict:
    """Check records against `collector`'s ingest rules without storing anything: per record,
    every rule it breaks (what ingest would quarantine it for: the first of them)."""
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
