"""The offline Binance-spot emulator: paging, data, gaps, errors, weights, faults, control.

None of these tests touches the database (the emulator is a plain HTTP server).
"""

import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import feedparser
import orjson
import pytest
import requests

from collectors.emulator import DEFAULT_SYMBOLS, INTERVAL_MS, ExchangeEmulator, kline
from collectors.emulator.market import _build_rows, _model
from tests.data import real_candles

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NOW = 1_700_000_050_500  # 2023-11-14T22:14:10.5Z: 10.5 s into a minute
CURRENT_OPEN = NOW - NOW % MINUTE
T0 = CURRENT_OPEN - 10 * DAY  # an aligned minute well in the past
LISTING_NEWCOIN = 1_748_736_000_000  # 2025-06-01T00:00Z
TIMEOUT = 5


@pytest.fixture
def make_emulator():
    started = []

    def make(**config):
        emulator = ExchangeEmulator(**config).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="module")
def frozen():
    """A fault-free emulator frozen at NOW with a huge weight limit, shared by read-only tests."""
    emulator = ExchangeEmulator(now_ms=NOW, weight_limit=10**9).start()
    yield emulator
    emulator.stop()


def get(emulator, path, **params):
    return requests.get(emulator.url + path, params=params, timeout=TIMEOUT)


def klines(emulator, **params):
    params.setdefault("symbol", "BTCUSDT")
    params.setdefault("interval", "1m")
    response = get(emulator, "/api/v3/klines", **params)
    assert response.status_code == 200, response.text
    return response.json()


def open_times(rows):
    return [row[0] for row in rows]


# --- paging ---------------------------------------------------------------------------------

def test_klines_page_with_start_time_returns_limit_rows_from_there(frozen):
    rows = klines(frozen, startTime=T0, limit=5)
    assert open_times(rows) == [T0 + i * MINUTE for i in range(5)]


def test_klines_start_time_between_open_times_starts_at_the_next_open_time(frozen):
    rows = klines(frozen, startTime=T0 + 1, limit=2)
    assert open_times(rows) == [T0 + MINUTE, T0 + 2 * MINUTE]


def test_klines_page_with_end_time_returns_the_limit_rows_ending_there(frozen):
    rows = klines(frozen, endTime=T0, limit=4)
    assert open_times(rows) == [T0 - 3 * MINUTE, T0 - 2 * MINUTE, T0 - MINUTE, T0]
    rows = klines(frozen, endTime=T0 + MINUTE - 1, limit=2)  # end inside a candle: that candle is last
    assert open_times(rows) == [T0 - MINUTE, T0]


def test_klines_start_and_end_are_inclusive_on_open_time_and_limit_counts_from_start(frozen):
    rows = klines(frozen, startTime=T0, endTime=T0 + 10 * MINUTE)
    assert open_times(rows) == [T0 + i * MINUTE for i in range(11)]
    rows = klines(frozen, startTime=T0, endTime=T0 + 10 * MINUTE, limit=3)
    assert open_times(rows) == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert klines(frozen, startTime=T0, endTime=T0) == klines(frozen, startTime=T0, limit=1)


def test_klines_without_times_return_the_latest_limit_ending_with_the_open_candle(frozen):
    rows = klines(frozen, limit=3)
    assert open_times(rows) == [CURRENT_OPEN - 2 * MINUTE, CURRENT_OPEN - MINUTE, CURRENT_OPEN]


def test_klines_limit_defaults_to_500_and_allows_1000(frozen):
    assert len(klines(frozen, startTime=T0)) == 500
    rows = klines(frozen, startTime=T0, limit=1000)
    assert len(rows) == 1000
    assert rows[-1][0] == T0 + 999 * MINUTE


def test_klines_are_never_served_after_now(frozen):
    rows = klines(frozen, startTime=CURRENT_OPEN - MINUTE, endTime=NOW + 10 * DAY)
    assert open_times(rows) == [CURRENT_OPEN - MINUTE, CURRENT_OPEN]
    assert klines(frozen, startTime=CURRENT_OPEN + MINUTE) == []


@pytest.mark.parametrize("interval", ["1s", "1m", "5m", "1h", "4h", "1d", "3d", "1w"])
def test_every_interval_serves_aligned_rows_with_close_time_interval_minus_one_ms(frozen, interval):
    step = INTERVAL_MS[interval]
    rows = klines(frozen, interval=interval, endTime=NOW - 100 * step, limit=3)
    assert len(rows) == 3
    for row in rows:
        assert row[6] == row[0] + step - 1
    assert [b[0] - a[0] for a, b in zip(rows, rows[1:], strict=False)] == [step, step]
    if interval == "1w":  # Binance weeks open on Monday 00:00 UTC
        assert time.gmtime(rows[0][0] / 1000).tm_wday == 0
        assert rows[0][0] % DAY == 0


# --- row data -------------------------------------------------------------------------------

def test_kline_rows_have_the_binance_layout_with_decimal_strings(frozen):
    rows = klines(frozen, startTime=T0, limit=50)
    for row in rows:
        assert len(row) == 12
        open_time, o, h, lo, c, volume, close_time, quote, trades, taker_base, taker_quote, ignore = row
        assert isinstance(open_time, int) and isinstance(close_time, int) and isinstance(trades, int)
        assert close_time == open_time + MINUTE - 1
        decimals = [o, h, lo, c, volume, quote, taker_base, taker_quote]
        assert all(isinstance(v, str) and len(v.split(".")[1]) == 8 for v in decimals)
        o, h, lo, c, volume, quote, taker_base, taker_quote = map(Decimal, decimals)
        assert h >= max(o, c) and lo <= min(o, c) and lo > 0
        assert volume > 0 and quote > 0 and 0 <= taker_base <= volume and 0 <= taker_quote <= quote
        assert trades >= 0
        assert ignore == "0"
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row[1] == previous[4]  # consecutive candles link: open == previous close


def test_served_rows_equal_the_module_kline_function(frozen):
    rows = klines(frozen, symbol="ETHUSDT", interval="1h", endTime=NOW - DAY, limit=5)
    assert rows == [kline("ETHUSDT", "1h", row[0]) for row in rows]


def test_two_emulators_serve_identical_rows_and_symbols_differ(make_emulator):
    first, second = make_emulator(now_ms=NOW), make_emulator(now_ms=NOW, seed=1)
    params = {"startTime": T0, "limit": 200}
    assert klines(first, **params) == klines(second, **params)
    assert klines(first, **params, symbol="SYM001USDT") != klines(first, **params, symbol="SYM002USDT")
    # A row does not depend on the page it is served in.
    assert klines(first, startTime=T0 + 7 * MINUTE, limit=1) == klines(first, **params)[7:8]


def test_open_candle_is_the_last_row_and_differs_from_the_closed_value(frozen):
    last = klines(frozen, limit=2)[-1]
    assert last[0] == CURRENT_OPEN
    assert last[6] == CURRENT_OPEN + MINUTE - 1
    closed = kline("BTCUSDT", "1m", CURRENT_OPEN)
    assert last != closed
    assert last[1] == closed[1]  # same open, moving close/high/low/volumes
    assert last == kline("BTCUSDT", "1m", CURRENT_OPEN, now_ms=NOW)
    assert Decimal(last[5]) < Decimal(closed[5])  # volume so far
    assert Decimal(last[2]) >= max(Decimal(last[1]), Decimal(last[4]))
    assert Decimal(last[3]) <= min(Decimal(last[1]), Decimal(last[4]))


def test_open_candle_changes_as_now_moves(make_emulator):
    emulator = make_emulator(now_ms=NOW)
    before = klines(emulator, limit=1)[0]
    emulator.configure(now_ms=NOW + 1000)
    after = klines(emulator, limit=1)[0]
    assert before[0] == after[0] == CURRENT_OPEN
    assert before != after
    emulator.configure(now_ms=CURRENT_OPEN + MINUTE)  # the candle closed: now it is final
    rows = klines(emulator, limit=2)
    assert rows[0] == kline("BTCUSDT", "1m", CURRENT_OPEN)


def test_kline_function_rejects_unknown_intervals_and_future_candles():
    with pytest.raises(ValueError):
        kline("BTCUSDT", "1M", T0)
    with pytest.raises(ValueError):
        kline("BTCUSDT", "1m", NOW + MINUTE, now_ms=NOW)


def test_one_thousand_row_page_is_generated_and_serialised_quickly():
    model = _model("BTCUSDT")
    times = [T0 + i * MINUTE for i in range(1000)]
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        orjson.dumps(_build_rows(model, MINUTE, times, None))
        best = min(best, time.perf_counter() - started)
    assert best < 0.025  # ~3-6 ms on the build box; generous for a loaded CI machine


# --- listings, delistings, outages ----------------------------------------------------------

def test_start_years_before_listing_returns_the_first_klines_after_listing(make_emulator):
    emulator = make_emulator(now_ms=LISTING_NEWCOIN + 10 * DAY)
    rows = klines(emulator, symbol="NEWCOINUSDT", startTime=1_483_228_800_000, limit=3)
    assert open_times(rows) == [LISTING_NEWCOIN + i * MINUTE for i in range(3)]
    assert klines(emulator, symbol="NEWCOINUSDT", endTime=LISTING_NEWCOIN - 1) == []
    assert klines(emulator, symbol="BTCUSDT", endTime=LISTING_NEWCOIN - 1, limit=1) != []


def test_listing_inside_a_candle_keeps_that_candle(make_emulator):
    listing = T0 + 30 * MINUTE + 25_000
    emulator = make_emulator(now_ms=NOW, listings={"SOLUSDT": listing})
    rows = klines(emulator, symbol="SOLUSDT", startTime=0, limit=2)
    assert open_times(rows) == [T0 + 30 * MINUTE, T0 + 31 * MINUTE]
    hourly = klines(emulator, symbol="SOLUSDT", interval="1h", startTime=0, limit=1)
    assert hourly[0][0] == listing - listing % HOUR


def test_outages_leave_holes_with_no_rows_at_all(make_emulator):
    emulator = make_emulator(now_ms=NOW, outages=[[T0 + 3 * MINUTE, T0 + 6 * MINUTE]])
    rows = klines(emulator, startTime=T0, endTime=T0 + 8 * MINUTE)
    assert open_times(rows) == [T0 + i * MINUTE for i in (0, 1, 2, 6, 7, 8)]
    # Paging skips the hole: `limit` rows are the next rows that exist.
    assert open_times(klines(emulator, startTime=T0 + 2 * MINUTE, limit=3)) == [
        T0 + 2 * MINUTE, T0 + 6 * MINUTE, T0 + 7 * MINUTE]
    assert open_times(klines(emulator, endTime=T0 + 6 * MINUTE, limit=3)) == [
        T0 + 1 * MINUTE, T0 + 2 * MINUTE, T0 + 6 * MINUTE]
    # Every symbol is affected.
    eth = klines(emulator, symbol="ETHUSDT", startTime=T0 + 3 * MINUTE, endTime=T0 + 5 * MINUTE)
    assert eth == []


def test_delisted_symbol_has_no_klines_from_delisting_and_status_break(make_emulator):
    delisting = T0 + 5 * MINUTE
    emulator = make_emulator(now_ms=NOW, delistings={"XRPUSDT": delisting})
    rows = klines(emulator, symbol="XRPUSDT", startTime=T0)
    assert open_times(rows)[-1] == delisting - MINUTE
    assert klines(emulator, symbol="XRPUSDT", limit=5)[-1][0] == delisting - MINUTE
    info = get(emulator, "/api/v3/exchangeInfo").json()
    status = {s["symbol"]: s["status"] for s in info["symbols"]}
    assert status["XRPUSDT"] == "BREAK" and status["BTCUSDT"] == "TRADING"


def test_revisions_and_invalid_rows_change_the_named_rows_only(make_emulator):
    emulator = make_emulator(
        now_ms=NOW,
        revisions={("BTCUSDT", T0 + MINUTE): {"close": "123.45000000"}, f"BTCUSDT:{T0}": {"volume": "0.5"}},
        invalid_rows={
            ("BTCUSDT", T0 + 2 * MINUTE): "high_below_low",
            f"BTCUSDT:{T0 + 3 * MINUTE}": "negative_volume",
            ("BTCUSDT", T0 + 4 * MINUTE): "misaligned_time",
        },
    )
    rows = klines(emulator, startTime=T0, limit=6)
    clean = [kline("BTCUSDT", "1m", T0 + i * MINUTE) for i in range(6)]
    assert rows[0][5] == "0.5" and rows[0][:5] == clean[0][:5]
    assert rows[1][4] == "123.45000000"
    assert Decimal(rows[2][2]) < Decimal(rows[2][3])
    assert Decimal(rows[3][5]) < 0
    assert rows[4][0] == T0 + 4 * MINUTE + 1234 and rows[4][6] == rows[4][0] + MINUTE - 1
    assert rows[5] == clean[5]
    assert klines(emulator, symbol="ETHUSDT", startTime=T0, limit=1)[0] == kline("ETHUSDT", "1m", T0)


# --- failing ranges -------------------------------------------------------------------------

def test_a_failing_range_answers_its_status_on_every_page_that_includes_it(make_emulator):
    hour = T0 - T0 % HOUR
    emulator = make_emulator(now_ms=NOW, window_seconds=3600, failures=[
        {"symbol": "BTCUSDT", "start": T0 + 10 * MINUTE, "end": T0 + 12 * MINUTE, "status": 502},
        {"symbol": "ETHUSDT", "start": hour, "end": hour + 1, "interval": "1m"}])
    pages = [{"startTime": T0, "limit": 20}, {"startTime": T0 + 11 * MINUTE, "limit": 1},
             {"endTime": T0 + 10 * MINUTE, "limit": 1},
             {"startTime": T0 + 5 * MINUTE, "endTime": T0 + 10 * MINUTE}]
    for params in pages * 2:  # every time, not at random
        response = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", **params)
        assert response.status_code == 502 and response.headers["Content-Type"].startswith("text/html")
        assert "<h1>502 Bad Gateway</h1>" in response.text
    assert get(emulator, "/api/v3/klines", symbol="ETHUSDT", interval="1m", startTime=hour).status_code == 503
    # Pages before and after the range, other intervals of a scoped failure, other symbols: served.
    assert open_times(klines(emulator, startTime=T0, limit=10)) == [T0 + i * MINUTE for i in range(10)]
    assert open_times(klines(emulator, startTime=T0 + 12 * MINUTE, limit=2)) == [
        T0 + 12 * MINUTE, T0 + 13 * MINUTE]
    assert open_times(klines(emulator, endTime=T0 + 10 * MINUTE - 1, limit=1)) == [T0 + 9 * MINUTE]
    assert klines(emulator, symbol="ETHUSDT", interval="5m", startTime=hour, limit=3)[0][0] == hour
    assert klines(emulator, symbol="SOLUSDT", startTime=T0, limit=20)
    stats = emulator.stats()
    assert stats["range_failures"] == 9 and stats["status_counts"] == {"502": 8, "503": 1, "200": 5}
    assert stats["klines_by_symbol"] == {"BTCUSDT": 11, "ETHUSDT": 2, "SOLUSDT": 1}
    assert stats["max_window_weight"] == 14 * 2  # failures cost weight like other requests
    assert stats["injected"] == {"error": 0, "429": 0, "malformed": 0}

    emulator.configure(failures=[])
    rows = klines(emulator, startTime=T0, limit=20)
    assert rows == [kline("BTCUSDT", "1m", T0 + i * MINUTE) for i in range(20)]


@pytest.mark.parametrize("failure, problem", [
    ({"symbol": "BTCUSDT", "start": T0, "end": T0}, "end > start"),
    ({"symbol": "BTCUSDT", "start": T0, "end": T0 - 1}, "end > start"),
    ({"symbol": "BTCUSDT", "start": T0, "end": T0 + 1, "status": 200}, "status"),
    ({"symbol": "BTCUSDT", "start": T0, "end": T0 + 1, "status": "503"}, "status"),
    ({"symbol": 5, "start": T0, "end": T0 + 1}, "symbol"),
    ({"symbol": "BTCUSDT", "start": T0, "end": T0 + 1, "interval": "2m"}, "interval"),
    ({"symbol": "BTCUSDT", "start": T0}, "bad entry"),
    ({"symbol": "BTCUSDT", "start": T0, "end": T0 + 1, "typo": 1}, "bad entry"),
])
def test_bad_failures_config_is_rejected_with_400_naming_the_problem(make_emulator, failure, problem):
    emulator = make_emulator(now_ms=NOW)
    response = requests.post(emulator.url + "/_emulator/config", timeout=TIMEOUT,
                             data=orjson.dumps({"failures": [failure]}))
    assert response.status_code == 400
    assert response.json()["msg"].startswith("failures: ") and problem in response.json()["msg"]
    assert emulator.config()["failures"] == []
    with pytest.raises(ValueError, match=problem):
        ExchangeEmulator(failures=[failure])


# --- recorded candles -------------------------------------------------------------------------

def q8(value):
    return f"{Decimal(value).quantize(Decimal('1E-8'), ROUND_HALF_EVEN):f}"


@pytest.fixture(scope="module")
def dashbtc():
    return real_candles("DASHBTC-5m.json")


def _utc_ms(*args):
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def test_a_recording_is_paged_through_exactly_once_with_binance_fields_and_nothing_outside(make_emulator,
                                                                                         dashbtc):
    step = 5 * MINUTE
    first, last = dashbtc[0][0], dashbtc[-1][0]
    emulator = make_emulator(now_ms=NOW, weight_limit=10**9, recorded={"DASHBTC:5m": dashbtc})
    forward, start = [], first - 30 * DAY
    while page := klines(emulator, symbol="DASHBTC", interval="5m", startTime=start, limit=1000):
        forward += page
        start = page[-1][0] + 1
    backward, end = [], last + 30 * DAY
    while page := klines(emulator, symbol="DASHBTC", interval="5m", endTime=end, limit=1000):
        backward[:0] = page
        end = page[0][0] - 1
    assert forward == backward
    assert len(forward) == len(dashbtc) == 5758
    assert open_times(forward) == [row[0] for row in dashbtc]
    holes = {_utc_ms(2018, 1, 27, 0, 20), _utc_ms(2018, 1, 28, 6, 0)}
    assert holes.isdisjoint(open_times(forward))
    assert sum(b[0] - a[0] == 2 * step for a, b in zip(forward, forward[1:], strict=False)) == 2
    for row, recorded in zip(forward, dashbtc, strict=False):
        assert row[1:6] == [q8(v) for v in recorded[1:6]]
        assert all(len(v.split(".")[1]) == 8 for v in row[1:6] + [row[7], row[9], row[10]])
        assert row[6] == row[0] + step - 1
        assert row[7] == q8(Decimal(row[5]) * Decimal(row[4])) and row[8] == 0
        assert row[9:] == ["0.00000000", "0.00000000", "0"]
    # Nothing outside the recording, whatever the paging; the latest page is its end.
    assert klines(emulator, symbol="DASHBTC", interval="5m", endTime=first - 1) == []
    assert klines(emulator, symbol="DASHBTC", interval="5m", startTime=last + 1) == []
    assert klines(emulator, symbol="DASHBTC", interval="5m", limit=2) == forward[-2:]
    assert emulator.stats()["rows_served"] == 2 * 5758 + 2
    # The symbol is listed; config shows a summary, not the rows; outages still cut it.
    info = get(emulator, "/api/v3/exchangeInfo").json()
    assert info["symbols"][-1]["symbol"] == "DASHBTC" and len(info["symbols"]) == len(DEFAULT_SYMBOLS) + 1
    assert get(emulator, "/api/v3/ticker/24hr", symbol="DASHBTC").status_code == 200
    summary = {"DASHBTC:5m": {"rows": 5758, "first": first, "last": last}}
    assert requests.get(emulator.url + "/_emulator/config", timeout=TIMEOUT).json()["recorded"] == summary
    emulator.configure(outages=[[first + step, first + 3 * step]])
    assert open_times(klines(emulator, symbol="DASHBTC", interval="5m", startTime=0, limit=3)) == [
        first, first + 3 * step, first + 4 * step]


def test_recorded_numbers_are_quantized_half_even_and_binance_rows_keep_their_fields(make_emulator):
    t = T0 - T0 % HOUR
    emulator = make_emulator(now_ms=NOW, symbols=["BTCUSDT"], recorded={
        "LTCBTC:1h": [[t, "0.016984990000000002", "0.017", "0.000000015", "0.000000005", "2"]],
        "BTCUSDT:1h": [[t + HOUR, "1", "2", "0.5", "1.5", "10", t + 2 * HOUR - 1, "15.000000004", 7,
                        "4.1", "6.15", "0"]],
    })
    assert klines(emulator, symbol="LTCBTC", interval="1h", startTime=0) == [
        [t, "0.01698499", "0.01700000", "0.00000002", "0.00000000", "2.00000000", t + HOUR - 1,
         "0.00000000", 0, "0.00000000", "0.00000000", "0"]]
    assert klines(emulator, symbol="BTCUSDT", interval="1h", startTime=0) == [
        [t + HOUR, "1.00000000", "2.00000000", "0.50000000", "1.50000000", "10.00000000", t + 2 * HOUR - 1,
         "15.00000000", 7, "4.10000000", "6.15000000", "0"]]
    assert klines(emulator, startTime=t, limit=1)[0] == kline("BTCUSDT", "1m", t)  # other intervals: generated
    symbols = get(emulator, "/api/v3/exchangeInfo").json()["symbols"]
    assert [s["symbol"] for s in symbols] == ["BTCUSDT", "LTCBTC"]


@pytest.mark.parametrize("recorded, problem", [
    ({"DASHBTC": [[T0, "1", "1", "1", "1", "1"]]}, "bad key"),
    ({"DASHBTC:2m": [[T0, "1", "1", "1", "1", "1"]]}, "bad key"),
    ({"DASHBTC:5m": [[T0 + 1, "1", "1", "1", "1", "1"]]}, "grid"),
    ({"DASHBTC:1m": [[T0 + MINUTE, "1", "1", "1", "1", "1"], [T0, "1", "1", "1", "1", "1"]]}, "ascend"),
    ({"DASHBTC:1m": [[T0, "1", "1", "1", "1", "1"], [T0, "1", "1", "1", "1", "1"]]}, "ascend"),
    ({"DASHBTC:1m": [[T0, "1", "1", "1", "1"]]}, "6 or 12 fields"),
    ({"DASHBTC:1m": [[T0, "1", "1", "one", "1", "1"]]}, "bad number"),
    ({"DASHBTC:1m": {"rows": 1}}, "list of rows"),
])
def test_bad_recorded_config_is_rejected_with_400_naming_the_problem(make_emulator, recorded, problem):
    emulator = make_emulator(now_ms=NOW)
    response = requests.post(emulator.url + "/_emulator/config", timeout=TIMEOUT,
                             data=orjson.dumps({"recorded": recorded}))
    assert response.status_code == 400
    assert response.json()["msg"].startswith("recorded") and problem in response.json()["msg"]
    assert emulator.config()["recorded"] == {}


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("params, code", [
    ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
    ({"symbol": "BTCUSDT", "interval": "1M"}, -1120),
    ({"symbol": "BTCUSDT", "interval": "2m"}, -1120),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 0}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, -1130),
    ({"interval": "1m"}, -1102),
    ({"symbol": "BTCUSDT"}, -1102),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": T0 + 1, "endTime": T0}, -1023),
])
def test_bad_klines_requests_get_400_with_a_binance_error_code(frozen, params, code):
    response = get(frozen, "/api/v3/klines", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and body["msg"]


def test_unknown_symbol_in_ticker_is_invalid_symbol(frozen):
    response = get(frozen, "/api/v3/ticker/24hr", symbol="NOPEUSDT")
    assert response.status_code == 400 and response.json()["code"] == -1121


def test_unknown_path_is_a_json_404(frozen):
    response = get(frozen, "/api/v3/nothing")
    assert response.status_code == 404
    assert "code" in response.json()


# --- other endpoints ------------------------------------------------------------------------

def test_ping_and_time_answer_like_binance(frozen):
    assert get(frozen, "/api/v3/ping").json() == {}
    assert get(frozen, "/api/v3/time").json() == {"serverTime": NOW}


def test_server_time_follows_the_real_clock_when_not_frozen(make_emulator):
    emulator = make_emulator()
    server_time = get(emulator, "/api/v3/time").json()["serverTime"]
    assert abs(server_time - time.time() * 1000) < 5000
    last = klines(emulator, limit=1)[0]
    assert last[0] <= server_time < last[0] + MINUTE + 5000


def test_exchange_info_lists_symbols_with_assets_status_and_weight_limit(make_emulator):
    emulator = make_emulator(now_ms=NOW, weight_limit=1200)
    info = get(emulator, "/api/v3/exchangeInfo").json()
    assert info["timezone"] == "UTC" and info["serverTime"] == NOW
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1200}]
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert list(symbols) == DEFAULT_SYMBOLS
    assert len(DEFAULT_SYMBOLS) >= 170 and "SYM150USDT" in symbols and "NEWCOINUSDT" in symbols
    assert symbols["BTCUSDT"]["baseAsset"] == "BTC" and symbols["BTCUSDT"]["quoteAsset"] == "USDT"
    assert symbols["ETHBTC"]["baseAsset"] == "ETH" and symbols["ETHBTC"]["quoteAsset"] == "BTC"
    assert symbols["SYM001USDT"]["status"] == "TRADING"


def test_configured_symbols_replace_the_default_list(make_emulator):
    emulator = make_emulator(now_ms=NOW, symbols=["AAAUSDT", "BBBBTC"])
    info = get(emulator, "/api/v3/exchangeInfo").json()
    assert [(s["symbol"], s["quoteAsset"]) for s in info["symbols"]] == [("AAAUSDT", "USDT"), ("BBBBTC", "BTC")]
    assert get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m").json()["code"] == -1121
    assert klines(emulator, symbol="AAAUSDT", limit=2)


def test_ticker_ranks_btc_then_eth_and_generated_symbols_descending(frozen):
    tickers = get(frozen, "/api/v3/ticker/24hr").json()
    assert len(tickers) == len(DEFAULT_SYMBOLS)
    for ticker in tickers:
        for key in ("lastPrice", "volume", "quoteVolume"):
            Decimal(ticker[key])
        assert isinstance(ticker["count"], int)
    usdt = sorted((t for t in tickers if t["symbol"].endswith("USDT")),
                  key=lambda t: Decimal(t["quoteVolume"]), reverse=True)
    ranked = [t["symbol"] for t in usdt]
    assert ranked[:2] == ["BTCUSDT", "ETHUSDT"]
    generated = [s for s in ranked if s.startswith("SYM")]
    assert generated == [f"SYM{i:03d}USDT" for i in range(1, 151)]
    assert len({t["quoteVolume"] for t in tickers}) == len(tickers)
    one = get(frozen, "/api/v3/ticker/24hr", symbol="ETHUSDT").json()
    assert one == next(t for t in tickers if t["symbol"] == "ETHUSDT")
    assert one["lastPrice"] == klines(frozen, symbol="ETHUSDT", limit=1)[0][4]


# --- weights and rate limits ----------------------------------------------------------------

def used(response):
    return int(response.headers["X-MBX-USED-WEIGHT-1M"])


def test_every_response_carries_the_used_weight_including_this_request(make_emulator):
    emulator = make_emulator(now_ms=NOW, window_seconds=3600)
    assert used(get(emulator, "/api/v3/ping")) == 1
    assert used(get(emulator, "/api/v3/time")) == 2
    assert used(get(emulator, "/api/v3/exchangeInfo")) == 22
    assert used(get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m")) == 24
    assert used(get(emulator, "/api/v3/klines", symbol="NOPE", interval="1m")) == 26  # errors count
    assert used(get(emulator, "/api/v3/ticker/24hr", symbol="BTCUSDT")) == 28
    assert used(get(emulator, "/api/v3/ticker/24hr")) == 108
    stats = emulator.stats()
    assert stats["max_window_weight"] == 108
    assert sum(stats["weight_by_window"].values()) == 108


def test_a_request_over_the_weight_limit_gets_429_with_retry_after_until_the_window_ends(make_emulator):
    emulator = make_emulator(now_ms=NOW, window_seconds=3600, weight_limit=10)
    for expected in (2, 4, 6, 8, 10):
        assert used(get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m")) == expected
    response = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
    assert response.status_code == 429
    assert response.json()["code"] == -1003
    remaining = 3600 - time.time() % 3600
    assert abs(int(response.headers["Retry-After"]) - math.ceil(remaining)) <= 1
    assert used(response) == 10  # the rejected request does not count
    stats = emulator.stats()
    assert stats["over_limit"] == 1 and stats["max_window_weight"] == 10
    assert stats["status_counts"] == {"200": 5, "429": 1}


def test_the_weight_window_follows_the_wall_clock_even_when_now_is_frozen(make_emulator):
    emulator = make_emulator(now_ms=NOW, window_seconds=1, weight_limit=2)
    if time.time() % 1 > 0.7:  # leave room for two requests in one window
        time.sleep(1 - time.time() % 1 + 0.01)
    get(emulator, "/api/v3/ping"), get(emulator, "/api/v3/ping")
    response = get(emulator, "/api/v3/ping")
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    time.sleep(1 - time.time() % 1 + 0.01)
    response = get(emulator, "/api/v3/ping")
    assert response.status_code == 200 and used(response) == 1
    assert len(emulator.stats()["weight_by_window"]) == 2


def test_a_client_that_keeps_sending_after_429s_is_banned_with_418(make_emulator):
    emulator = make_emulator(now_ms=NOW, window_seconds=3600, weight_limit=2, ban_after_429s=2,
                             ban_seconds=30)
    statuses = [get(emulator, "/api/v3/ping").status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 418]
    response = get(emulator, "/api/v3/time")
    assert response.status_code == 418 and 1 <= int(response.headers["Retry-After"]) <= 30
    assert emulator.stats()["banned"] == 2


def test_control_endpoints_cost_no_weight_and_are_not_counted(make_emulator):
    emulator = make_emulator(now_ms=NOW, window_seconds=3600, weight_limit=1)
    get(emulator, "/api/v3/ping")
    for _ in range(3):
        assert get(emulator, "/_emulator/stats").status_code == 200
        assert get(emulator, "/_emulator/config").status_code == 200
    stats = get(emulator, "/_emulator/stats").json()
    assert stats["requests"] == 1 and stats["by_path"] == {"/api/v3/ping": 1}


# --- faults ---------------------------------------------------------------------------------

def _classify(response):
    if response.status_code != 200:
        return str(response.status_code)
    return "ok" if _is_klines_page(response.content) else "malformed"


def _is_klines_page(content):
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, list) and all(isinstance(r, list) and len(r) == 12 for r in body)


def _fault_run(emulator, n=120):
    session = requests.Session()
    out = []
    for i in range(n):
        response = session.get(emulator.url + "/api/v3/klines", timeout=TIMEOUT, params={
            "symbol": "BTCUSDT", "interval": "1m", "startTime": T0 + i * MINUTE, "limit": 3})
        kind = _classify(response)
        if kind == "429":
            assert response.headers["Retry-After"] == "2"
            assert response.json() == {"code": -1003, "msg": "Too many requests"}
        elif kind.startswith("5"):
            assert response.headers["Content-Type"].startswith("text/html")
            with pytest.raises(ValueError):
                response.json()
        out.append(kind)
    return out


def test_fault_injection_is_reproducible_with_a_seed_and_counted(make_emulator):
    config = dict(now_ms=NOW, seed=7, error_rate=0.2, rate_429=0.1, malformed_rate=0.2, retry_after=2,
                  weight_limit=10**9)
    first = _fault_run(make_emulator(**config))
    assert _fault_run(make_emulator(**config)) == first
    assert _fault_run(make_emulator(**{**config, "seed": 8})) != first

    emulator = make_emulator(**config)
    kinds = _fault_run(emulator)
    injected = emulator.stats()["injected"]
    assert injected["429"] == kinds.count("429") > 0
    assert injected["error"] == sum(k in ("500", "502", "503") for k in kinds) > 0
    assert injected["malformed"] == kinds.count("malformed") > 0
    assert kinds.count("ok") == len(kinds) - sum(injected.values())
    assert 0.3 < kinds.count("ok") / len(kinds) < 0.7


def test_faults_hit_only_klines_and_ticker(make_emulator):
    emulator = make_emulator(now_ms=NOW, error_rate=1.0)
    assert get(emulator, "/api/v3/ping").status_code == 200
    assert get(emulator, "/api/v3/exchangeInfo").status_code == 200
    assert get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m").status_code in (500, 502, 503)
    assert get(emulator, "/api/v3/ticker/24hr").status_code in (500, 502, 503)
    emulator.configure(error_rate=0.0, malformed_rate=1.0)
    bodies = {get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5).content
              for _ in range(12)}
    assert len(bodies) > 1  # the malformation varies
    assert not any(_is_klines_page(body) for body in bodies)


def test_slow_ms_delays_every_answer(make_emulator):
    emulator = make_emulator(now_ms=NOW, slow_ms=150)
    started = time.perf_counter()
    get(emulator, "/api/v3/ping")
    assert time.perf_counter() - started >= 0.15


# --- control endpoints and lifecycle --------------------------------------------------------

def test_stats_count_requests_paths_symbols_statuses_and_windows(make_emulator):
    emulator = make_emulator(now_ms=NOW)
    klines(emulator, symbol="BTCUSDT")
    klines(emulator, symbol="ETHUSDT", limit=10)
    klines(emulator, symbol="ETHUSDT", limit=10)
    get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="7m")
    get(emulator, "/api/v3/ping")
    stats = emulator.stats()
    assert stats["requests"] == 5
    assert stats["by_path"] == {"/api/v3/klines": 4, "/api/v3/ping": 1}
    assert stats["klines_by_symbol"] == {"BTCUSDT": 2, "ETHUSDT": 2}
    assert stats["status_counts"] == {"200": 4, "400": 1}
    (window, weight), = stats["weight_by_window"].items()
    assert window % 60 == 0 and abs(window - time.time()) < 120 and weight == 9
    assert stats["over_limit"] == 0 and stats["injected"] == {"error": 0, "429": 0, "malformed": 0}
    assert stats["range_failures"] == 0
    emulator.reset_stats()
    assert emulator.stats()["requests"] == 0 and emulator.stats()["weight_by_window"] == {}


def test_control_endpoints_read_stats_reset_and_change_config(make_emulator):
    emulator = make_emulator(now_ms=NOW)
    get(emulator, "/api/v3/ping")
    assert requests.get(emulator.url + "/_emulator/stats").json()["requests"] == 1
    assert requests.post(emulator.url + "/_emulator/reset").status_code == 200
    assert requests.get(emulator.url + "/_emulator/stats").json()["requests"] == 0

    config = requests.get(emulator.url + "/_emulator/config").json()
    assert config["now_ms"] == NOW and config["weight_limit"] == 6000 and config["seed"] == 42
    changes = {"now_ms": NOW + HOUR, "outages": [[T0, T0 + MINUTE]],
               "revisions": {f"BTCUSDT:{T0 + MINUTE}": {"close": "1.00000000"}}}
    response = requests.post(emulator.url + "/_emulator/config", data=orjson.dumps(changes))
    assert response.status_code == 200
    assert response.json()["revisions"] == {f"BTCUSDT:{T0 + MINUTE}": {"close": "1.00000000"}}
    assert get(emulator, "/api/v3/time").json() == {"serverTime": NOW + HOUR}
    rows = klines(emulator, startTime=T0, limit=2)
    assert rows[0][0] == T0 + MINUTE and rows[0][4] == "1.00000000"

    bad = requests.post(emulator.url + "/_emulator/config", data=b'{"no_such_key": 1}')
    assert bad.status_code == 400
    assert requests.post(emulator.url + "/_emulator/config", data=b'{"error_rate": 2}').status_code == 400


def test_unknown_config_keys_are_rejected():
    with pytest.raises(TypeError):
        ExchangeEmulator(no_such_key=1)
    with pytest.raises(ValueError):
        ExchangeEmulator().configure(no_such_key=1)


def test_stop_closes_the_port_and_keep_alive_connections(make_emulator):
    emulator = make_emulator(now_ms=NOW)
    session = requests.Session()
    assert session.get(emulator.url + "/api/v3/ping", timeout=TIMEOUT).status_code == 200
    url = emulator.url
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url + "/api/v3/ping", timeout=TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/api/v3/ping", timeout=TIMEOUT)


def test_management_command_prints_its_url_serves_and_exits_cleanly_on_sigterm():
    script = (
        "import django; from django.conf import settings; settings.configure(); django.setup();"
        "from collectors.management.commands.run_exchange_emulator import Command;"
        "Command().run_from_argv(['manage.py', 'run_exchange_emulator', '--port', '0', '--weight-limit', '50'])"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, process.stderr.read() if process.poll() is not None else line
        url = line.split()[-1]
        info = requests.get(url + "/api/v3/exchangeInfo", timeout=TIMEOUT).json()
        assert info["rateLimits"][0]["limit"] == 50
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_feeds_answer_conditional_gets_and_change_with_their_newest_entry():
    with ExchangeEmulator(now_ms=1_763_640_000_000) as emu:
        first = requests.get(f"{emu.url}/feeds/markets.rss", timeout=5)
        assert first.status_code == 200 and first.headers["Content-Type"].startswith("application/rss+xml")
        parsed = feedparser.parse(first.content)
        assert parsed.version == "rss20" and len(parsed.entries) == 20 and not parsed.bozo
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        answer = requests.get(f"{emu.url}/feeds/markets.rss", headers={"If-None-Match": etag}, timeout=5)
        assert answer.status_code == 304
        assert requests.get(f"{emu.url}/feeds/markets.rss", headers={"If-Modified-Since": modified},
                            timeout=5).status_code == 304
        emu.configure(now_ms=1_763_640_000_000 + 20 * 60_000)  # the next item is out
        newer = requests.get(f"{emu.url}/feeds/markets.rss", headers={"If-None-Match": etag}, timeout=5)
        assert newer.status_code == 200 and newer.headers["ETag"] != etag
        atom = feedparser.parse(requests.get(f"{emu.url}/feeds/research.atom", timeout=5).content)
        assert atom.version == "atom10" and len(atom.entries) == 20 and atom.entries[0].authors
        broken = feedparser.parse(requests.get(f"{emu.url}/feeds/broken.rss", timeout=5).content)
        assert broken.version == "" and broken.bozo and not broken.entries
        assert requests.get(f"{emu.url}/feeds/nope.rss", timeout=5).status_code == 404
        assert emu.stats()["by_path"]["/feeds/markets.rss"] == 4
