"""Correctness under real concurrency: the 100-symbol reference run (late listings, a delisting,
outages) through real qcluster workers, with deadlocks, lock timeouts and several clusters."""

import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
import requests
from django.db import connection

from backfills.models import EmptyRange
from collectors import services
from collectors.emulator import DEFAULT_SYMBOLS
from collectors.models import ApiKey, Candle, CollectionRun, RunSymbol
from tests.e2e import TcpProxy, database_url, free_port, start_qcluster, start_web, wait_for
from tests.factories import CollectorFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
on_mariadb = pytest.mark.skipif(connection.vendor != "mysql", reason="InnoDB's locking (MariaDB run)")

H = 3_600_000
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
END = datetime(2025, 12, 1, tzinfo=timezone.utc)  # 11 months of hours, exclusive
SYMBOLS = [s for s in DEFAULT_SYMBOLS if s.endswith("USDT")][:100]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def at(text: str) -> int:
    return ms(datetime.fromisoformat(text).replace(tzinfo=timezone.utc))


# Ten symbols listed inside the window (some between two hours), two delisted, two outages.
LISTINGS = {s: at(f"2025-{1 + i:02d}-{3 + 2 * i:02d}T{i:02d}:{17 * i % 60:02d}") for i, s in
            enumerate(SYMBOLS[60:70])} | {"NEWCOINUSDT": at("2025-06-01T00:00")}
DELISTINGS = {SYMBOLS[80]: at("2025-09-10T08:00"), SYMBOLS[81]: at("2025-10-20T13:30")}
OUTAGES = [(at("2025-04-02T03:00"), at("2025-04-02T07:00")), (at("2025-08-15T12:00"), at("2025-08-15T13:30"))]


def expected_hours(symbol: str) -> list[int]:
    """The open times the exchange has for `symbol` in the window (an hour exists when it holds
    trading time after the listing, opens before the delisting, and not inside an outage)."""
    listed = LISTINGS.get(symbol, 0)
    delisted = DELISTINGS.get(symbol, ms(END))
    return [t for t in range(ms(START), ms(END), H)
            if t + H > listed and t < delisted and not any(a <= t < b for a, b in OUTAGES)]


def reference_collector(emulator, slug):
    emulator.configure(symbols=SYMBOLS, listings=LISTINGS, delistings=DELISTINGS, outages=OUTAGES)
    return CollectorFactory(slug=slug, config={"base_url": emulator.url, "interval": "1h"}, symbols=SYMBOLS)


def stored(collector, symbol=None) -> dict[str, list[int]]:
    rows = Candle.objects.filter(collector=collector).order_by("symbol", "open_time")
    if symbol:
        rows = rows.filter(symbol=symbol)
    out: dict[str, list[int]] = {}
    for name, open_time in rows.values_list("symbol", "open_time").iterator(chunk_size=20_000):
        out.setdefault(name, []).append(ms(open_time))
    return out


def run_and_wait(collector, mode, *, timeout=240, **kwargs) -> CollectionRun:
    run = services.run_trigger(collector=collector, mode=mode, triggered_by="tests", **kwargs)
    return finished(run)


def finished(run, timeout=240) -> CollectionRun:
    wait_for(lambda: CollectionRun.objects.get(pk=run.pk).status not in CollectionRun.ACTIVE,
             timeout=timeout, what=f"the {run.mode} run to finish", interval=0.5)
    run.refresh_from_db()
    return run


def trigger_over_http(port, key, collector, mode, **dates) -> CollectionRun:
    """Through the web process, so the task goes to the broker the clusters read (Redis)."""
    answer = requests.post(f"http://127.0.0.1:{port}/api/admin/collect/trigger", headers={"X-API-Key": key},
                           json={"mode": mode, "collector": collector.slug, **dates}, timeout=30)
    assert answer.status_code == 202, answer.text
    return CollectionRun.objects.get(pk=answer.json()["run_id"])


def assert_missing_exact(run, collector):
    """Every expected candle of each symbol is stored or inside its missing ranges, never both."""
    have = stored(collector)
    for item in run.symbols.all():
        missing = [(ms(datetime.fromisoformat(m["start"])), ms(datetime.fromisoformat(m["end"])))
                   for m in item.missing_ranges]
        inside = {t for t in expected_hours(item.symbol) if any(a <= t < b for a, b in missing)}
        assert set(have.get(item.symbol, [])) == set(expected_hours(item.symbol)) - inside, item.symbol


def symbol_results(run) -> dict[str, RunSymbol]:
    return {s.symbol: s for s in run.symbols.all()}


def assert_reference_exact(collector):
    have = stored(collector)
    wrong = [s for s in SYMBOLS if have.get(s, []) != expected_hours(s)]
    assert not wrong, f"{len(wrong)} symbols not exact, e.g. {wrong[:5]}"
    # What the exchange did not have is in the ledger, so nothing is asked again.
    assert EmptyRange.objects.filter(collector=collector).exists()


def deadlocks_surfaced(run) -> list[str]:
    return [e for e in run.symbols.values_list("error", flat=True) if "1213" in e or "1205" in e or "locked" in e]


@on_mariadb
def test_three_reference_backward_runs_on_two_workers_end_complete_and_exact(emulator, tmp_path):
    emulator.configure(slow_ms=0)
    worker = start_qcluster(tmp_path)
    try:
        for attempt in range(3):
            collector = reference_collector(emulator, f"reference-{attempt}")
            run = run_and_wait(collector, "backward", start=START, end=END - timedelta(hours=1))
            results = symbol_results(run)
            assert not deadlocks_surfaced(run)
            assert run.status == CollectionRun.COMPLETE, {s: (r.status, r.error) for s, r in results.items()
                                                          if r.status != "complete"}
            assert len(results) == 100
            assert_reference_exact(collector)
            # A second run asks the exchange for nothing.
            emulator.reset_stats()
            again = run_and_wait(collector, "backward", start=START, end=END - timedelta(hours=1))
            assert set(again.symbols.values_list("status", flat=True)) == {"skipped"}
            assert sum(emulator.stats()["klines_by_symbol"].values()) == 0
    finally:
        worker.stop()
    # The cause is gone, not only the symptom: no deadlock even needed a retry.
    assert "Deadlock found" not in worker.output()


@on_mariadb
def test_two_clusters_on_redis_run_the_reference_once_each_page(emulator, tmp_path):
    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.ConnectionError:
        pytest.fail("Redis must run at 127.0.0.1:6379")
    collector = reference_collector(emulator, "reference-redis")
    _, key = ApiKey.objects.create_key(name="concurrency")
    # A lease long enough for a loaded 2-core machine: this is about live workers never
    # fetching the same page, not about taking over dead ones (test_scale_out does that).
    shared = {"REDIS_URL": url, "RUN_LEASE_SECONDS": 60}
    port = free_port()
    web = start_web(tmp_path, port, **shared)
    a = start_qcluster(tmp_path, "cluster-a", WORKER_NAME="cluster-a", **shared)
    b = start_qcluster(tmp_path, "cluster-b", WORKER_NAME="cluster-b", **shared)
    try:
        run = finished(trigger_over_http(port, key, collector, "backward", start_date="2025-01-01",
                                         end_date="2025-11-30"))
    finally:
        for process in (a, b, web):
            process.stop()
    run.refresh_from_db()
    assert run.status == CollectionRun.COMPLETE and not deadlocks_surfaced(run)
    assert_reference_exact(collector)
    claimed = set(run.symbols.values_list("claimed_by", flat=True))
    assert {c.split(":")[0] for c in claimed} == {"cluster-a", "cluster-b"}
    # Each page once: what the exchange saw is what the symbols asked for, each claimed once.
    assert sum(emulator.stats()["klines_by_symbol"].values()) == sum(run.symbols.values_list("requests", flat=True))
    assert set(run.symbols.values_list("attempts", flat=True)) == {1}


@on_mariadb
def test_a_lock_on_the_candle_table_past_query_timeout_leaves_exact_missing_ranges_for_gap_fill(
        emulator, tmp_path):
    emulator.configure(slow_ms=15)  # a run long enough to lock the table in the middle of it
    collector = reference_collector(emulator, "reference-locked")
    worker = start_qcluster(tmp_path, QUERY_TIMEOUT=1)
    try:
        run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", start=START,
                                   end=END - timedelta(hours=1))
        wait_for(lambda: run.symbols.filter(status="complete").count() >= 20, timeout=120,
                 what="20 symbols done")
        # Another session locks every candle row of the collector and the gaps between them
        # (REPEATABLE READ, FOR UPDATE) for longer than the workers' retries last.
        import MySQLdb

        s = connection.settings_dict
        locker = MySQLdb.connect(host=s["HOST"] or "127.0.0.1", port=int(s["PORT"] or 3306), user=s["USER"],
                                 password=s["PASSWORD"] or "", database=s["NAME"])
        cursor = locker.cursor()
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("BEGIN")
        cursor.execute("SELECT COUNT(*) FROM collectors_candle WHERE collector_id = %s FOR UPDATE", [collector.pk])
        time.sleep(20)
        locker.rollback()
        locker.close()
        run = finished(run)
        partial = {s: r for s, r in symbol_results(run).items() if r.status != "complete"}
        assert run.status == CollectionRun.PARTIAL and partial, run.status
        assert {r.status for r in partial.values()} <= {"partial", "failed"}
        assert_missing_exact(run, collector)
        fill = run_and_wait(collector, "gap_fill")
    finally:
        worker.stop()
    assert fill.status == CollectionRun.COMPLETE
    assert_reference_exact(collector)



@on_mariadb
def test_a_database_outage_mid_run_loses_nothing_and_gap_fill_makes_it_exact(emulator, tmp_path):
    """The workers' database goes away for longer than their retries last, then comes back:
    every symbol still ends, what it could not store is listed as missing (or a later claim
    resumes it), and one gap_fill makes the data exact."""
    url = "redis://127.0.0.1:6379/12"  # the broker stays up: only the database goes away
    redis.Redis.from_url(url).flushdb()
    emulator.configure(slow_ms=15)
    collector = reference_collector(emulator, "reference-outage")
    _, key = ApiKey.objects.create_key(name="outage")
    proxy = TcpProxy(int(connection.settings_dict["PORT"] or 3306))
    through_proxy = database_url().replace(f":{connection.settings_dict['PORT'] or 3306}/", f":{proxy.port}/")
    port = free_port()
    web = start_web(tmp_path, port, REDIS_URL=url)
    worker = start_qcluster(tmp_path, REDIS_URL=url, DATABASE_URL=through_proxy, RUN_LEASE_SECONDS=5)
    try:
        run = trigger_over_http(port, key, collector, "backward", start_date="2025-01-01", end_date="2025-11-30")
        wait_for(lambda: run.symbols.filter(status="complete").count() >= 20, timeout=120, what="20 symbols")
        proxy.cut()
        time.sleep(12)  # longer than a transaction's retries (about 6 s)
        proxy.resume()
        assert_missing_exact(finished(run), collector)
        fill = finished(trigger_over_http(port, key, collector, "gap_fill"))
    finally:
        worker.stop()
        web.stop()
        proxy.cut()
    assert fill.status == CollectionRun.COMPLETE
    assert_reference_exact(collector)
