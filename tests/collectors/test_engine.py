"""The collection engine against the exchange emulator, on the real database."""

import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests
from django.utils import timezone as dj_timezone

from backfills.models import EmptyRange
from collectors import engine, services
from collectors.emulator import kline
from collectors.models import Candle, CollectionRun, RunEvent, RunSymbol
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
UTC = timezone.utc
HOUR_MS = 3_600_000


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def ms(moment):
    return int(moment.timestamp() * 1000)


def collect(collector, mode="backward", **kwargs):
    run = services.run_trigger(collector=collector, mode=mode, triggered_by="tests", enqueue=False, **kwargs)
    services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    return run


def results(run):
    return {s.symbol: s for s in run.symbols.all()}


def assert_exact(collector, symbol, start, end):
    """Every hour in [start, end) is stored once and equals what the emulator serves."""
    stored = list(Candle.objects.filter(collector=collector, symbol=symbol).order_by("open_time")
                  .values_list("open_time", "open", "high", "low", "close", "volume", "close_time",
                               "quote_volume", "trades"))
    expected_times = range(ms(start), ms(end), HOUR_MS)
    assert [ms(r[0]) for r in stored] == list(expected_times)
    for r in stored:
        k = kline(symbol, "1h", ms(r[0]))
        assert [format(v, "f") for v in r[1:6]] == k[1:6]
        assert ms(r[6]) == k[6] and format(r[7], "f") == k[7] and r[8] == k[8]


def klines_requests(emulator):
    return sum(emulator.stats()["klines_by_symbol"].values())


def test_backward_run_stores_exactly_what_the_exchange_serves(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"})
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 15, 23, 59, 59))
    assert run.status == CollectionRun.COMPLETE
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_exact(collector, symbol, utc(2025, 1, 1), utc(2025, 3, 16))
        item = results(run)[symbol]
        assert item.status == RunSymbol.COMPLETE and item.records == 74 * 24 and item.requests == 2


def test_second_backward_run_skips_every_symbol_without_a_klines_request(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"})
    collect(collector, start=utc(2025, 1, 1), end=utc(2025, 2, 1))
    emulator.reset_stats()
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 2, 1))
    assert run.status == CollectionRun.COMPLETE
    assert {s.status for s in run.symbols.all()} == {RunSymbol.SKIPPED}
    assert klines_requests(emulator) == 0


def test_a_run_fetches_only_the_hours_missing_from_the_database(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    collect(collector, start=utc(2025, 1, 1), end=utc(2025, 1, 30, 23))
    Candle.objects.filter(open_time__gte=utc(2025, 1, 10), open_time__lt=utc(2025, 1, 11, 5)).delete()
    emulator.reset_stats()
    run = collect(collector, mode="gap_fill")
    item = results(run)["BTCUSDT"]
    assert item.status == RunSymbol.COMPLETE and item.records == 29 and item.requests == 1
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 1, 31))


def test_forward_run_collects_up_to_the_last_closed_candle_and_never_the_open_one(emulator):
    now = dj_timezone.now()
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"],
                                 beginning_date=(now - timedelta(days=3)).date())
    run = collect(collector, mode="forward")
    assert run.status == CollectionRun.COMPLETE
    last = Candle.objects.filter(symbol="BTCUSDT").latest("open_time")
    assert last.open_time + timedelta(hours=1) <= dj_timezone.now()
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    if now - current_hour > timedelta(seconds=10):  # not within the close grace period
        assert last.open_time == current_hour - timedelta(hours=1)
    assert format(last.close, "f") == kline("BTCUSDT", "1h", ms(last.open_time))[4]


def test_symbol_listed_mid_range_costs_one_request_for_the_empty_part_and_none_next_time(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["NEWCOINUSDT"])
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 6, 10, 23))
    item = results(run)["NEWCOINUSDT"]
    assert item.status == RunSymbol.COMPLETE and item.requests == 1 and item.records == 10 * 24
    ledger = EmptyRange.objects.get(symbol="NEWCOINUSDT")
    assert (ledger.start, ledger.end) == (utc(2025, 1, 1), utc(2025, 6, 1))
    emulator.reset_stats()
    run = collect(collector, mode="gap_fill")
    assert results(run)["NEWCOINUSDT"].status == RunSymbol.SKIPPED
    assert klines_requests(emulator) == 0


def test_an_exchange_outage_is_recorded_once_and_not_asked_again(emulator):
    emulator.configure(outages=[[ms(utc(2025, 2, 3, 4)), ms(utc(2025, 2, 3, 9))]])
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"],
                                 beginning_date=utc(2025, 2, 1).date())
    run = collect(collector, start=utc(2025, 2, 1), end=utc(2025, 2, 5, 23))
    assert results(run)["BTCUSDT"].records == 5 * 24 - 5
    assert [(r.start, r.end) for r in EmptyRange.objects.all()] == [(utc(2025, 2, 3, 4), utc(2025, 2, 3, 9))]
    emulator.reset_stats()
    for mode in ("gap_fill", "backward"):
        kwargs = {"start": utc(2025, 2, 1), "end": utc(2025, 2, 5, 23)} if mode == "backward" else {}
        run = collect(collector, mode=mode, **kwargs)
        assert results(run)["BTCUSDT"].status == RunSymbol.SKIPPED
    assert klines_requests(emulator) == 0


def test_a_bad_symbol_fails_alone_and_the_run_ends_partial(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "NOSUCHCOIN"])
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 1, 2, 23, 59, 59))
    items = results(run)
    assert run.status == CollectionRun.PARTIAL
    assert items["BTCUSDT"].status == RunSymbol.COMPLETE
    bad = items["NOSUCHCOIN"]
    assert bad.status == RunSymbol.FAILED and bad.requests == 1 and bad.retries == 0
    assert "invalid symbol" in bad.error and bad.missing_ranges == [
        {"start": "2025-01-01T00:00:00Z", "end": "2025-01-03T00:00:00Z"}]


def test_when_retries_run_out_the_symbol_is_partial_with_its_true_missing_ranges(emulator, settings):
    settings.CIRCUIT_BREAKER_TIMEOUT = 0.5  # the exchange dies: one breaker wait, then the symbol stops
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"],
                                 max_retries=2)
    real_get = engine.Upstream.get_json
    calls = []

    def failing_after_first_page(self, path, params=None, **kw):
        calls.append(params)
        if path == "/api/v3/klines" and len(calls) > 1:
            emulator.configure(error_rate=1.0)
        return real_get(self, path, params, **kw)

    engine.Upstream.get_json = failing_after_first_page
    try:
        run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 3, 31, 23))
    finally:
        engine.Upstream.get_json = real_get
    item = results(run)["BTCUSDT"]
    assert run.status == CollectionRun.PARTIAL
    assert item.status == RunSymbol.PARTIAL and item.records == 1000 and item.retries >= 2
    first_missing = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=1000)
    assert item.missing_ranges == [{"start": first_missing.isoformat().replace("+00:00", "Z"),
                                    "end": "2025-04-01T00:00:00Z"}]
    emulator.configure(error_rate=0.0)
    run = collect(collector, mode="gap_fill", end=utc(2025, 3, 31, 23))
    assert results(run)["BTCUSDT"].records == 90 * 24 - 1000
    assert_exact(collector, "BTCUSDT", utc(2025, 1, 1), utc(2025, 4, 1))


def test_with_5xx_429_and_malformed_answers_runs_still_end_with_exact_data_within_budget(emulator, settings):
    settings.EXCHANGE_WEIGHT_BUDGET, settings.EXCHANGE_WEIGHT_WINDOW_SECONDS = 16, 1
    emulator.configure(error_rate=0.1, rate_429=0.05, retry_after=0, malformed_rate=0.03, seed=7,
                       window_seconds=1, weight_limit=16)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], max_retries=6)
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 6, 30, 23))
    injected = emulator.stats()["injected"]
    assert injected["error"] > 0 and injected["429"] > 0
    assert run.status == CollectionRun.COMPLETE
    assert sum(s.retries for s in run.symbols.all()) == sum(injected.values())
    assert emulator.stats()["max_window_weight"] <= 16 and emulator.stats()["over_limit"] == 0
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert_exact(collector, symbol, utc(2025, 1, 1), utc(2025, 7, 1))


def test_top_n_collector_picks_the_most_traded_symbols_of_its_quote_asset(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h", "top_n": 3,
                                         "quote_asset": "USDT"}, symbols=[])
    run = collect(collector, start=utc(2025, 1, 1), end=utc(2025, 1, 1, 5))
    tickers = {t["symbol"]: float(t["quoteVolume"]) for t in
               requests.get(emulator.url + "/api/v3/ticker/24hr").json()}
    usdt = sorted((s for s in tickers if s.endswith("USDT")), key=tickers.get, reverse=True)[:3]
    assert sorted(results(run)) == sorted(usdt)


def test_cancelling_a_run_stops_it_and_keeps_what_was_stored(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", start=utc(2024, 1, 1),
                               end=utc(2024, 12, 31, 23), triggered_by="tests", enqueue=False)
    real_upsert = engine.upsert_candles

    def cancel_after_first_page(**kwargs):
        written = real_upsert(**kwargs)
        CollectionRun.objects.get(pk=run.pk).cancel()
        return written

    engine.upsert_candles = cancel_after_first_page
    try:
        services.run_start(run_id=run.pk, inline=True)
    finally:
        engine.upsert_candles = real_upsert
    run.refresh_from_db()
    assert run.status == CollectionRun.CANCELLED
    assert results(run)["BTCUSDT"].status == RunSymbol.CANCELLED
    assert Candle.objects.count() == 1000


def test_a_symbol_claimed_by_a_live_worker_is_not_taken_by_another(emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", start=utc(2025, 1, 1),
                               end=utc(2025, 1, 2), triggered_by="tests", enqueue=False)
    run.mark_running()
    item = RunSymbol.objects.create(run=run, symbol="BTCUSDT")
    assert item.claim(lease_seconds=60)
    assert not RunSymbol.objects.get(pk=item.pk).claim(lease_seconds=60)
    RunSymbol.objects.filter(pk=item.pk).update(heartbeat_at=dj_timezone.now() - timedelta(seconds=61))
    assert RunSymbol.objects.get(pk=item.pk).claim(lease_seconds=60)  # its worker died
    assert RunSymbol.objects.get(pk=item.pk).attempts == 2


@pytest.mark.django_db(transaction=True)
def test_workers_sharing_the_weight_budget_stay_under_it_together(emulator, settings):
    settings.EXCHANGE_WEIGHT_BUDGET = 20  # 10 klines requests per window, across all workers
    settings.EXCHANGE_WEIGHT_WINDOW_SECONDS = 1
    emulator.configure(window_seconds=1, weight_limit=20)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", start=utc(2024, 1, 1),
                               end=utc(2025, 5, 1), triggered_by="tests", enqueue=False)
    run.mark_running()
    items = [RunSymbol.objects.create(run=run, symbol=s) for s in collector.symbols]
    threads = [threading.Thread(target=services.run_symbol_collect, kwargs={"run_symbol_id": i.pk})
               for i in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = emulator.stats()
    run.refresh_from_db()
    assert run.status == CollectionRun.COMPLETE
    assert sum(stats["klines_by_symbol"].values()) == 3 * 12  # 11,688 hours = 12 pages each
    assert stats["max_window_weight"] <= 20 and stats["over_limit"] == 0
    assert sum(i.throttled_seconds for i in run.symbols.all()) > 0


def test_a_bug_while_collecting_fails_the_symbol_and_frees_the_collector(emulator, monkeypatch):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])

    def broken(**kwargs):
        raise OverflowError("date value out of range")

    monkeypatch.setattr("collectors.engine.plan_ranges", broken)
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    item = run.symbols.get()
    assert (item.status, item.error) == ("failed", "OverflowError: date value out of range")
    assert run.status == "failed" and not collector.runs.active().exists()
    crashed = RunEvent.objects.get(event="symbol_crashed")
    assert "OverflowError" in crashed.fields["exception"]
