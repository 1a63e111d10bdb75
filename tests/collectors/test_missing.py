"""What a run could not fetch: a failed range never hides the rest, it is recorded exactly,
and gap_fill fetches it (and nothing else); real exchange candles with real holes."""

import sqlite3
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from django.db import OperationalError, connection

from backfills.models import EmptyRange, MissingRange
from collectors import db, engine, services
from collectors.models import Candle, RunSymbol
from tests.collectors.test_engine import assert_exact, collect, klines_requests, ms, results, utc
from tests.data import real_candles
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def missing_of(item: RunSymbol) -> list[tuple[str, str]]:
    return [(r["start"], r["end"]) for r in item.missing_ranges]


def stored_hours(collector, symbol) -> list[int]:
    return [ms(t) for t in Candle.objects.filter(collector=collector, symbol=symbol)
            .order_by("open_time").values_list("open_time", flat=True)]


def test_a_range_failing_persistently_is_missing_exactly_the_rest_is_stored_and_gap_fill_gets_only_it(emulator):
    # Jan-Mar 2025 is three pages per symbol: [Jan 1, Feb 11 16:00), [.., Mar 25 08:00), [.., Apr 1).
    page2, page3 = utc(2025, 2, 11, 16), utc(2025, 3, 25, 8)
    emulator.configure(failures=[
        {"symbol": "BTCUSDT", "start": ms(utc(2025, 2, 20, 6)), "end": ms(utc(2025, 2, 20, 12))},  # middle
        {"symbol": "ETHUSDT", "start": ms(utc(2025, 3, 30)), "end": ms(utc(2025, 3, 30, 6))}])  # last page
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT", "BNBUSDT"])
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 31, 23))
    items = results(run)
    assert run.status == "partial" and items["BNBUSDT"].status == "complete"
    btc, eth = items["BTCUSDT"], items["ETHUSDT"]
    assert btc.status == eth.status == RunSymbol.PARTIAL and "503" in btc.error
    assert missing_of(btc) == [(iso(page2), iso(page3))]
    assert missing_of(eth) == [(iso(page3), "2025-04-01T00:00:00Z")]
    # Everything else was fetched, past the failed page too.
    all_hours = list(range(ms(utc(2025, 1, 1)), ms(utc(2025, 4, 1)), 3_600_000))
    assert stored_hours(collector, "BTCUSDT") == [t for t in all_hours if not ms(page2) <= t < ms(page3)]
    assert stored_hours(collector, "ETHUSDT") == [t for t in all_hours if t < ms(page3)]
    assert btc.records == len(all_hours) - (page3 - page2) / HOUR

    # The exchange heals: gap_fill asks for exactly the two missing pages, even the one after
    # ETH's last stored candle, and the data is exact.
    emulator.configure(failures=[])
    emulator.reset_stats()
    fill = collect(collector, mode="gap_fill")
    assert emulator.stats()["klines_by_symbol"] == {"BTCUSDT": 1, "ETHUSDT": 1}
    assert fill.status == "complete" and results(fill)["BNBUSDT"].status == "skipped"
    for symbol in ("BTCUSDT", "ETHUSDT", "BNBUSDT"):
        assert_exact(collector, symbol, utc(2025, 1, 1), utc(2025, 4, 1))
    assert not MissingRange.objects.filter(collector=collector).exists()  # filled: forgotten
    emulator.reset_stats()
    again = collect(collector, mode="gap_fill")
    assert klines_requests(emulator) == 0 and set(again.symbols.values_list("status", flat=True)) == {"skipped"}


def test_a_symbol_whose_only_page_fails_is_failed_and_gap_fill_still_sees_it(emulator):
    emulator.configure(failures=[{"symbol": "BTCUSDT", "start": ms(utc(2025, 1, 1)), "end": ms(utc(2025, 1, 2))}])
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 1, 10, 23))
    item = results(run)["BTCUSDT"]
    assert run.status == item.status == "failed" and item.records == 0
    assert missing_of(item) == [("2025-01-01T00:00:00Z", "2025-01-11T00:00:00Z")]
    emulator.configure(failures=[])
    fill = collect(collector, mode="gap_fill")  # nothing stored yet, but the run said what is missing
    assert results(fill)["BTCUSDT"].status == "complete"
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 1, 11))


def test_a_crash_mid_symbol_records_the_unfinished_ranges_as_missing(emulator, monkeypatch):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    real = engine.upsert_candles
    calls = []

    def crash_on_second_page(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker bug")
        return real(**kwargs)

    monkeypatch.setattr(engine, "upsert_candles", crash_on_second_page)
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 31, 23))
    item = results(run)["BTCUSDT"]
    assert item.status == "partial" and "RuntimeError: worker bug" in item.error
    assert missing_of(item) == [("2025-02-11T16:00:00Z", "2025-04-01T00:00:00Z")]
    monkeypatch.setattr(engine, "upsert_candles", real)
    collect(collector, mode="gap_fill")
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 4, 1))


@pytest.mark.django_db(transaction=True)  # real transactions: the retry rolls back and runs again
def test_deadlocks_are_retried_whole_and_a_page_still_locked_after_the_retries_is_missing(emulator, monkeypatch):
    """InnoDB's answer to two transactions waiting on each other is to roll one back (1213):
    the page's transaction runs again; only when every attempt fails is the page missing."""
    monkeypatch.setattr(db, "WAIT", lambda state: 0)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    real = engine.upsert_candles
    attempts = []

    def deadlocking(**kwargs):
        attempts.append(kwargs["rows"][0][0])
        page = len(set(attempts))
        if (page == 1 and attempts.count(attempts[-1]) <= 2) or page == 2:  # page 2 never gets through
            real(**kwargs)  # the rows are written, then the transaction is rolled back
            raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return real(**kwargs)

    monkeypatch.setattr(engine, "upsert_candles", deadlocking)
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 31, 23))
    item = results(run)["BTCUSDT"]
    assert attempts.count(ms(utc(2025, 1, 1))) == 3  # two deadlocks, then stored
    assert attempts.count(ms(utc(2025, 2, 11, 16))) == db.ATTEMPTS
    assert item.status == "partial" and "1213" in item.error
    assert missing_of(item) == [("2025-02-11T16:00:00Z", "2025-03-25T08:00:00Z")]
    # Rolled back whole: none of page 2's rows, and page 1 counted once.
    assert item.records == 2160 - 1000 and len(stored_hours(collector, "BTCUSDT")) == 1160
    monkeypatch.setattr(engine, "upsert_candles", real)
    collect(collector, mode="gap_fill")
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 4, 1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's file lock")
def test_on_sqlite_a_writer_holding_the_lock_past_the_timeout_leaves_a_page_missing_not_a_crash(
        emulator, monkeypatch):
    monkeypatch.setattr(db, "WAIT", lambda state: 0)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    real_get = engine.Upstream.get_json
    klines = []

    def lock_during_page_two(self, path, params=None, **kw):
        if path == "/api/v3/klines":
            klines.append(params["startTime"])
            if len(klines) == 3:
                other.execute("ROLLBACK")  # ... and lets it go when page 3 is asked for
        answer = real_get(self, path, params, **kw)
        if len(klines) == 2:
            other.execute("BEGIN IMMEDIATE")  # another process's writer takes the lock ...
        return answer

    monkeypatch.setattr(engine.Upstream, "get_json", lock_during_page_two)
    connection.close()
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.05)
    try:
        run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 31, 23))
    finally:
        other.close()
        connection.close()
    item = results(run)["BTCUSDT"]
    assert item.status == "partial" and "database is locked" in item.error
    assert missing_of(item) == [("2025-02-11T16:00:00Z", "2025-03-25T08:00:00Z")]
    assert len(stored_hours(collector, "BTCUSDT")) == 2160 - 1000
    monkeypatch.undo()
    collect(collector, mode="gap_fill")
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 4, 1))


# --- real exchange candles --------------------------------------------------------------------


def eight(value: str) -> Decimal:
    """What the exchange sends: 8 decimals (the recording holds float artefacts)."""
    return Decimal(value).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)


def as_interval(rows: list[list], interval: str) -> list[list]:
    """The 5m recording as the exchange would serve `interval`: 5m as is; 1h aggregated from the
    5-minute candles (an hour exists when any of its 5-minute candles does); 1m the same
    candles, holes included, laid on a 1-minute grid (the only real data here is 5m)."""
    if interval == "5m":
        return rows
    if interval == "1m":
        first = rows[0][0]
        return [[first + (r[0] - first) // 5, *r[1:]] for r in rows]
    hours: dict[int, list[list]] = {}
    for r in rows:
        hours.setdefault(r[0] - r[0] % 3_600_000, []).append(r)
    return [[t, group[0][1], str(max(eight(r[2]) for r in group)), str(min(eight(r[3]) for r in group)),
             group[-1][4], str(sum(eight(r[5]) for r in group))] for t, group in sorted(hours.items())]


@pytest.mark.parametrize("interval", ["1m", "5m", "1h"])
def test_real_exchange_candles_are_stored_every_one_and_their_holes_are_no_data(emulator, interval):
    step = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}[interval]
    series = {s: as_interval(real_candles(f"{s}-5m.json"), interval) for s in ("DASHBTC", "LTCBTC")}
    emulator.configure(recorded={f"{s}:{interval}": rows for s, rows in series.items()})
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": interval},
                                 symbols=list(series), beginning_date=datetime(2018, 1, 1).date())
    # From days before the first candle to days after the last one.
    start, end = utc(2018, 1, 8), utc(2018, 2, 2)
    run = collect(collector, start=start, end=end - timedelta(milliseconds=step))
    assert run.status == "complete", {s.symbol: (s.status, s.error) for s in run.symbols.all()}
    ledgers = {}
    for symbol, rows in series.items():
        have = list(Candle.objects.filter(collector=collector, symbol=symbol).order_by("open_time")
                    .values_list("open_time", "open", "high", "low", "close", "volume", "close_time"))
        assert [ms(r[0]) for r in have] == [r[0] for r in rows], symbol  # every served candle, once
        for stored, served in zip(have, rows, strict=False):
            assert list(stored[1:6]) == [eight(v) for v in served[1:6]]
            assert ms(stored[6]) == served[0] + step - 1
        # Before the first, after the last candle and the real holes: known empty, not missing.
        expected_empty = [(ms(start), rows[0][0])] + [
            (a[0] + step, b[0]) for a, b in zip(rows, rows[1:], strict=False) if b[0] - a[0] > step] + [
            (rows[-1][0] + step, ms(end))]
        ledger = [(ms(s), ms(e)) for s, e in EmptyRange.objects.filter(collector=collector, symbol=symbol)
                  .order_by("start").values_list("start", "end")]
        assert ledger == expected_empty, symbol
        ledgers[symbol] = ledger
    if interval == "5m":  # DASHBTC's two real one-candle holes, as the data's README names them
        for hole in (utc(2018, 1, 27, 0, 20), utc(2018, 1, 28, 6)):
            assert (ms(hole), ms(hole) + step) in ledgers["DASHBTC"]
        assert len(ledgers["LTCBTC"]) == 2  # none inside: only before the first and after the last
    emulator.reset_stats()
    for mode in ("backward", "gap_fill"):
        again = collect(collector, mode=mode, start=start, end=end - timedelta(milliseconds=step))
        assert set(again.symbols.values_list("status", flat=True)) == {"skipped"}, mode
    assert klines_requests(emulator) == 0  # nothing asked again


def test_cancelled_symbols_that_never_started_leave_their_window_for_gap_fill(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT", "BNBUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", start=utc(2025, 1, 1),
                               end=utc(2025, 1, 31, 23), triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk)  # the symbols are queued for the workers, none started
    first = run.symbols.get(symbol="BTCUSDT")
    services.run_symbol_collect(run_symbol_id=first.pk)  # one worker finished one symbol
    services.run_cancel(run=run)
    items = results(run)
    assert items["BTCUSDT"].status == "complete" and items["ETHUSDT"].status == "cancelled"
    assert missing_of(items["ETHUSDT"]) == [("2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z")]
    emulator.reset_stats()
    fill = collect(collector, mode="gap_fill")  # ETH and BNB have nothing stored, yet it sees them
    assert emulator.stats()["klines_by_symbol"] == {"ETHUSDT": 1, "BNBUSDT": 1}
    assert results(fill)["BTCUSDT"].status == "skipped"
    for symbol in ("BTCUSDT", "ETHUSDT", "BNBUSDT"):
        assert_exact(collector, symbol, utc(2025, 1, 1), utc(2025, 2, 1))


def test_a_new_run_waits_while_a_cancelled_runs_symbol_is_still_stopping(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk)
    item = run.symbols.get()
    assert item.claim(lease_seconds=60)  # a worker is fetching it
    services.run_cancel(run=run)
    with pytest.raises(services.RunConflict, match="still stopping"):
        services.run_trigger(collector=collector, mode="gap_fill", triggered_by="tests", enqueue=False)
    item.mark_finished("cancelled", missing_ranges=[])  # it stopped after its page
    assert services.run_trigger(collector=collector, mode="gap_fill", triggered_by="tests", enqueue=False)


def test_a_range_failing_again_is_recorded_once(emulator):
    emulator.configure(failures=[{"symbol": "BTCUSDT", "start": ms(utc(2025, 1, 5)), "end": ms(utc(2025, 1, 6))}])
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    collect(collector, start=utc(2025, 1, 1), end=utc(2025, 1, 10, 23))
    collect(collector, mode="gap_fill")
    assert list(MissingRange.objects.filter(collector=collector).values_list("start", "end")) == [
        (utc(2025, 1, 1), utc(2025, 1, 11))]


def test_after_three_failed_pages_in_a_row_the_symbol_stops_and_the_rest_is_missing(emulator, settings):
    settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD = 1000  # the pages fail, the host is not down
    emulator.configure(failures=[{"symbol": "BTCUSDT", "start": ms(utc(2024, 1, 1)), "end": ms(utc(2025, 1, 1))}])
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"],
                                 max_retries=1)
    run = collect(collector, start=utc(2024, 1, 1), end=utc(2024, 12, 31, 23))  # 9 pages
    item = results(run)["BTCUSDT"]
    assert item.status == "failed" and "3 pages in a row failed (last: HTTP 503" in item.error
    assert klines_requests(emulator) == 3 * 2  # three pages, each tried twice; six pages never asked
    assert missing_of(item) == [("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")]
