"""A Binance-spot-compatible HTTP exchange emulator, so the demo, the tests and the benchmark
run offline.

Plain Python (stdlib + orjson): no Django import, so it can run in a test thread.

    emulator = ExchangeEmulator(now_ms=1_700_000_000_000, error_rate=0.1).start()
    requests.get(emulator.url + "/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
    emulator.stats()
    emulator.stop()

Endpoints: ``GET /api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``,
``/api/v3/ticker/24hr[?symbol=|symbols=]``, ``/api/v3/klines`` (Binance semantics: startTime and
endTime inclusive on open time, limit default 500, 1..1000, rows absent across gaps, never
padded). Control endpoints, weightless and left out of ``stats()``: ``GET /_emulator/stats``,
``POST /_emulator/reset``, ``GET /_emulator/config``, ``POST /_emulator/config`` (JSON object of
config changes).

News feeds too (``/feeds/markets.rss``, ``/feeds/research.atom``, ``/feeds/broken.rss``; see
collectors/emulator/feeds.py): weightless, with conditional GET, and the same injected faults.

Config keys (all optional; see _DEFAULTS): symbols, listings, delistings, outages, revisions,
invalid_rows, failures, recorded, now_ms, seed, error_rate, error_statuses, rate_429, retry_after,
slow_ms, malformed_rate, window_seconds, weight_limit, ban_after_429s, ban_seconds, feed_items. Row
keys of revisions and invalid_rows are (symbol, open_time_ms), (symbol, interval, open_time_ms),
"SYMBOL:open_time_ms" or "SYMBOL:interval:open_time_ms"; the two-part forms apply to every interval.

``failures``: persistent failing ranges, ``[{"symbol": "BTCUSDT", "start": ms, "end": ms,
"status": 503, "interval": "1h"}, ...]`` (status default 503, no interval = every interval). A
klines request for that symbol (and interval) whose served open times include one in [start, end)
is answered with that status and an HTML error body, every time (after the weight accounting and
the random faults); counted in ``stats()["range_failures"]``. ``failures=[]`` lifts them.

``recorded``: real candles served instead of generated ones, ``{"SYMBOL:interval": [[open_ms,
"open", "high", "low", "close", "volume"], ...]}`` (open times ascending on the interval grid; rows
of 12 fields as Binance sends them work too). The recording alone defines where the symbol starts,
stops and has holes (listings/delistings do not apply; outages and now_ms do). Prices and volumes
are served with 8 decimals (Decimal, half-even), close time = open + interval - 1; six-field rows
get quote volume = volume x close, 0 trades and zero taker volumes. A recorded symbol joins the
symbol list; ``config()`` shows a summary per key (rows, first, last), not the rows.

Data is a deterministic function of (symbol, interval, open time): the price is a smooth sum of
sines of time (log scale) around a stable base price (realistic for the well-known names, else
from ``zlib.crc32(symbol)``), so consecutive candles link exactly (open == previous close) and
1m/1h/1d candles agree on their opens. The kline whose interval contains "now" is the still-open
candle: close = price(now), wicks and volumes pro rata of the elapsed time, so it differs from the
closed value ``kline(...)``. A kline exists when its open time is >= listing time - interval + 1
(the candle holds some trading time), < delisting time, <= now and not inside an outage
[start, end) (outages remove klines by open time, for every symbol).

Speed (measured on the 2-CPU build box, Python 3.11, median of 300): generating one 1000-row
klines page takes about 5.4 ms and ``orjson.dumps`` of it 0.2 ms, so ~5.6 ms per page (the cost
is mostly the eight "%.8f" conversions per row). A full HTTP round trip for that page with
``requests`` over keep-alive from another process is ~7.7 ms, i.e. one emulator serves ~130
pages (130k rows) per second, well above what Binance's weight limit allows (50 klines/s).

Weight accounting uses the real clock (windows floor(time / window_seconds)), per client IP, even
when ``now_ms`` freezes the market clock. A request that would exceed ``weight_limit`` is answered
429 and does not count; ``X-MBX-USED-WEIGHT-1M`` is the client's weight in the current window
(including the request when it was accepted). With ``ban_after_429s`` = N, a client that sends
again after N weight-429s in a window is banned for ``ban_seconds`` (418 + Retry-After).
Injected faults (seeded ``random.Random(seed)``, one draw per klines/ticker/feed request) come after
the weight accounting, so they cost weight like real failures.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
import zlib
from bisect import bisect_left, bisect_right
from decimal import ROUND_HALF_EVEN, Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson

from collectors.emulator.feeds import feed_response

__all__ = ["ExchangeEmulator", "kline", "INTERVAL_MS", "DEFAULT_SYMBOLS", "DEFAULT_LISTING_MS"]

# --------------------------------------------------------------------------------------------
# Intervals and symbols
# --------------------------------------------------------------------------------------------

_S = 1000
_M = 60 * _S
_H = 60 * _M
_D = 24 * _H

INTERVAL_MS: dict[str, int] = {
    "1s": _S,
    "1m": _M,
    "3m": 3 * _M,
    "5m": 5 * _M,
    "15m": 15 * _M,
    "30m": 30 * _M,
    "1h": _H,
    "2h": 2 * _H,
    "4h": 4 * _H,
    "6h": 6 * _H,
    "8h": 8 * _H,
    "12h": 12 * _H,
    "1d": _D,
    "3d": 3 * _D,
    "1w": 7 * _D,
}
# Binance weeks open on Monday 00:00 UTC; the epoch was a Thursday.
_INTERVAL_OFFSET = {"1w": 4 * _D}

DEFAULT_LISTING_MS = 1_483_228_800_000  # 2017-01-01T00:00:00Z
NEWCOIN_LISTING_MS = 1_748_736_000_000  # 2025-06-01T00:00:00Z

# Realistic names first (ranked by 24h quote volume in this order), then generated ones.
_REAL_SYMBOLS = {
    "BTCUSDT": 60000.0,
    "ETHUSDT": 3000.0,
    "BNBUSDT": 550.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 0.55,
    "ADAUSDT": 0.45,
    "DOGEUSDT": 0.12,
    "TRXUSDT": 0.12,
    "AVAXUSDT": 30.0,
    "LINKUSDT": 15.0,
    "DOTUSDT": 6.5,
    "LTCUSDT": 80.0,
    "BCHUSDT": 400.0,
    "SHIBUSDT": 0.00002,
    "UNIUSDT": 8.0,
    "ATOMUSDT": 8.0,
    "XLMUSDT": 0.11,
    "NEARUSDT": 5.0,
    "APTUSDT": 9.0,
    "FILUSDT": 5.0,
    "ETHBTC": 0.05,
    "BNBBTC": 0.009,
    "SOLBTC": 0.0025,
    "XRPBTC": 0.0000095,
    "NEWCOINUSDT": 1.0,
}
DEFAULT_SYMBOLS: list[str] = list(_REAL_SYMBOLS) + [f"SYM{i:03d}USDT" for i in range(1, 151)]
_DEFAULT_RANK = {name: i for i, name in enumerate(DEFAULT_SYMBOLS)}

_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_QUOTE_USD = {"BTC": 60000.0, "ETH": 3000.0, "BNB": 550.0, "EUR": 1.08, "TRY": 0.03}


def _split_symbol(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3], symbol[-3:]


# --------------------------------------------------------------------------------------------
# Deterministic market data
# --------------------------------------------------------------------------------------------

_MASK = (1 << 64) - 1
# Periods (seconds) and log-amplitudes of the price path; each symbol jitters them a little.
_TERMS = (
    (61.0, 0.0008),
    (613.0, 0.002),
    (3607.0, 0.004),
    (21601.0, 0.01),
    (86413.0, 0.02),
    (604801.0, 0.05),
    (2592041.0, 0.1),
    (15552001.0, 0.22),
    (63072001.0, 0.45),
)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, stable integer hash."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _f8(x: float) -> str:
    return "%.8f" % x


class _Model:
    """Per-symbol constants of the price/volume model (derived from crc32 of the name)."""

    __slots__ = ("symbol", "base_price", "price", "seed", "quote_per_day", "trade_size")

    def __init__(self, symbol: str):
        crc = zlib.crc32(symbol.encode())
        self.symbol = symbol
        self.seed = _mix64(crc + 0x51ED27)
        if symbol in _REAL_SYMBOLS:
            base = _REAL_SYMBOLS[symbol]
        else:
            base = 10.0 ** ((crc % 100_000) / 100_000 * 5.0 - 2.0)  # 0.01 .. 1000
        self.base_price = base
        # The log-price: a sum of sines with symbol-specific phases and slightly jittered periods,
        # compiled once per symbol into a straight-line function (2-3x faster than a loop).
        h = self.seed
        parts = []
        for period, amp in _TERMS:
            h = _mix64(h + 0x9E3779B97F4A7C15)
            phase = (h & 0xFFFFFFFF) / 2**32 * 2.0 * math.pi
            jitter = 1.0 + (((h >> 32) & 0xFFFF) / 65536.0 - 0.5) * 0.2
            omega = 2.0 * math.pi / (period * 1000.0 * jitter)
            parts.append(f"{amp!r} * sin({omega!r} * u + {phase!r})")
        namespace = {"sin": math.sin, "exp": math.exp}
        # u = t - 2020-09-13: keeps the sine arguments small (libm is slower past 2**27).
        src = (f"def price(t, sin=sin, exp=exp):\n    u = t - 1600000000000\n"
               f"    return {base!r} * exp({' + '.join(parts)})\n")
        exec(src, namespace)  # noqa: S102 - generated from the constants above only
        self.price = namespace["price"]  # price(t_ms) -> float > 0
        # Daily quote volume in the quote asset: ranks follow DEFAULT_SYMBOLS order; others by hash.
        rank = _DEFAULT_RANK.get(symbol)
        if rank is not None:
            usd = 5e9 / (1.0 + rank) ** 1.5
        else:
            usd = 1e5 * (1.0 + (crc % 1_000_000) / 10_000.0)
        quote = _split_symbol(symbol)[1]
        self.quote_per_day = usd / _QUOTE_USD.get(quote, 1.0)
        self.trade_size = self.quote_per_day / max(1.0, usd / 5000.0)  # quote per trade


_MODELS: dict[str, _Model] = {}
_MODELS_LOCK = threading.Lock()


def _model(symbol: str) -> _Model:
    model = _MODELS.get(symbol)
    if model is None:
        with _MODELS_LOCK:
            model = _MODELS.get(symbol)
            if model is None:
                if len(_MODELS) > 10_000:
                    _MODELS.clear()
                model = _MODELS[symbol] = _Model(symbol)
    return model


def _spread(interval_ms: int) -> float:
    return min(0.3, 0.0015 * math.sqrt(interval_ms / _M))


def _candle_seed(model: _Model, interval_ms: int) -> int:
    return model.seed ^ ((interval_ms * 0x2545F4914F6CDD1D) & _MASK)


def _build_rows(model: _Model, interval_ms: int, open_times, now_ms: int | None) -> list[list]:
    """Rows for ascending open times; the candle containing now_ms (if any) is the open one."""
    price = model.price
    seed = _candle_seed(model, interval_ms)
    spread = _spread(interval_ms) / 65536.0
    quote_per_candle = model.quote_per_day * interval_ms / _D
    qv_a = quote_per_candle * 0.35
    qv_b = quote_per_candle * 1.3 / 65536.0
    per_trade = 1.0 / model.trade_size
    mask = _MASK
    rows = []
    append = rows.append
    last_t = None
    last_p = 0.0
    for ot in open_times:
        ct = ot + interval_ms
        if now_ms is not None and ct > now_ms:
            append(_open_row(model, interval_ms, ot, now_ms))
            continue
        o = last_p if ot == last_t else price(ot)
        last_t = ct
        last_p = c = price(ct)
        # splitmix64 of the open time: four 16-bit uniforms for wicks, volume, taker share
        x = ((ot * 0x9E3779B97F4A7C15) + seed) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        x ^= x >> 31
        if o >= c:
            hi = o * (1.0 + spread * (x & 0xFFFF))
            lo = c * (1.0 - spread * ((x >> 16) & 0xFFFF))
        else:
            hi = c * (1.0 + spread * (x & 0xFFFF))
            lo = o * (1.0 - spread * ((x >> 16) & 0xFFFF))
        vwap = (o + c + hi + lo) * 0.25
        qv = qv_a + qv_b * ((x >> 32) & 0xFFFF)
        v = qv / vwap
        share = 0.3 + 6.103515625e-06 * (x >> 48)  # 0.3 .. 0.7
        s = ("%.8f %.8f %.8f %.8f %.8f %.8f %.8f %.8f" % (
            o, hi, lo, c, v, qv, v * share, qv * share)).split()
        append([ot, s[0], s[1], s[2], s[3], s[4], ct - 1, s[5], int(qv * per_trade) + 1,
                s[6], s[7], "0"])
    return rows


def _open_row(model: _Model, interval_ms: int, ot: int, now_ms: int) -> list:
    """The still-open candle at now_ms: close = price(now), volumes pro rata of elapsed time."""
    closed = _build_rows(model, interval_ms, (ot,), None)[0]
    frac = (now_ms - ot) / interval_ms  # 0 <= frac < 1
    o = model.price(ot)
    c = model.price(now_ms)
    x = _mix64(((ot * 0x9E3779B97F4A7C15) + _candle_seed(model, interval_ms)) & _MASK)
    spread = _spread(interval_ms) * math.sqrt(frac)
    hi = max(o, c) * (1.0 + spread * (x & 0xFFFF) / 65536.0)
    lo = min(o, c) * (1.0 - spread * ((x >> 16) & 0xFFFF) / 65536.0)
    vwap = (o + c + hi + lo) * 0.25
    qv = float(closed[7]) * frac
    v = qv / vwap
    share = 0.3 + 0.4 * ((x >> 48) & 0xFFFF) / 65536.0
    trades = int(closed[8] * frac)
    row = [ot, _f8(o), _f8(hi), _f8(lo), _f8(c), _f8(v), ot + interval_ms - 1, _f8(qv), trades,
           _f8(v * share), _f8(qv * share), "0"]
    if row == closed:  # practically never; the open candle must differ from the closed one
        row[8] = closed[8] - 1
    return row


def kline(symbol: str, interval: str, open_time_ms: int, now_ms: int | None = None) -> list:
    """The deterministic row the emulator serves for this open time (before revisions/invalid rows
    and regardless of listings/outages). Closed candle when now_ms is None or
    open_time + interval <= now_ms; the still-open candle when it contains now_ms."""
    try:
        interval_ms = INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"Unsupported interval {interval!r}") from None
    if now_ms is not None and open_time_ms > now_ms:
        raise ValueError("open_time_ms is after now_ms: that kline does not exist yet")
    return _build_rows(_model(symbol), interval_ms, (int(open_time_ms),), now_ms)[0]


def _align_down(t: int, interval_ms: int, offset: int) -> int:
    return t - ((t - offset) % interval_ms)


def _align_up(t: int, interval_ms: int, offset: int) -> int:
    return _align_down(t + interval_ms - 1, interval_ms, offset)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_ROW_FIELDS = {
    "openTime": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "closeTime": 6,
    "quoteAssetVolume": 7, "quoteVolume": 7, "numberOfTrades": 8, "trades": 8,
    "takerBuyBaseVolume": 9, "takerBuyBaseAssetVolume": 9,
    "takerBuyQuoteVolume": 10, "takerBuyQuoteAssetVolume": 10, "ignore": 11,
}
_INT_FIELDS = {0, 6, 8}
_INVALID_KINDS = ("high_below_low", "negative_volume", "misaligned_time")

_DEFAULTS = {
    "symbols": None,  # None -> DEFAULT_SYMBOLS
    "listings": {},
    "delistings": {},
    "outages": [],
    "revisions": {},
    "invalid_rows": {},
    "failures": [],  # [{"symbol", "start", "end"[, "status", "interval"]}]
    "recorded": {},  # {"SYMBOL:interval": [[open_ms, o, h, l, c, v], ...]}
    "now_ms": None,
    "feed_items": 20,  # entries each news feed shows
    "seed": 42,
    "error_rate": 0.0,
    "error_statuses": [500, 502, 503],
    "rate_429": 0.0,
    "retry_after": 1,
    "slow_ms": 0,
    "malformed_rate": 0.0,
    "window_seconds": 60,
    "weight_limit": 6000,
    "ban_after_429s": None,
    "ban_seconds": 120,
}


def _row_key(key, what: str) -> tuple[str, str | None, int]:
    """(symbol, open_time) | (symbol, interval, open_time) | "SYM:ot" | "SYM:interval:ot"."""
    parts = key.split(":") if isinstance(key, str) else list(key)
    if len(parts) == 2:
        symbol, interval, ot = parts[0], None, parts[1]
    elif len(parts) == 3:
        symbol, interval, ot = parts
    else:
        raise ValueError(f"{what}: bad key {key!r}; use (symbol, open_time_ms) or 'SYMBOL:open_time_ms'")
    if interval is not None and interval not in INTERVAL_MS:
        raise ValueError(f"{what}: bad interval in key {key!r}")
    return str(symbol), interval, int(ot)


def _key_str(key: tuple[str, str | None, int]) -> str:
    symbol, interval, ot = key
    return f"{symbol}:{ot}" if interval is None else f"{symbol}:{interval}:{ot}"


_FAILURE_KEYS = {"symbol", "start", "end", "status", "interval"}


def _failure(item) -> tuple[str, str | None, int, int, int]:
    """One failures entry -> (symbol, interval or None, start, end, status)."""
    if not isinstance(item, dict) or not {"symbol", "start", "end"} <= item.keys() \
            or item.keys() - _FAILURE_KEYS:
        raise ValueError(f"failures: bad entry {item!r}; use "
                         '{"symbol", "start", "end"[, "status", "interval"]}')
    symbol, interval, status = item["symbol"], item.get("interval"), item.get("status", 503)
    start, end = item["start"], item["end"]
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"failures: symbol must be a non-empty string, not {symbol!r}")
    if interval is not None and (not isinstance(interval, str) or interval not in INTERVAL_MS):
        raise ValueError(f"failures: unknown interval {interval!r}")
    if type(status) is not int or not 400 <= status <= 599:
        raise ValueError(f"failures: status must be an int in 400..599, not {status!r}")
    if type(start) is not int or type(end) is not int or end <= start:
        raise ValueError(f"failures: start and end must be ms with end > start, not {[start, end]}")
    return symbol, interval, start, end, status


class _Recording(NamedTuple):
    times: list[int]  # ascending open times, for bisect
    rows: dict[int, list]  # open time -> the served row, formatted once


_Q8 = Decimal("1E-8")
_ZERO8 = "0.00000000"


def _d8(value) -> Decimal:
    # Quantize the recorded text, never a float: "0.016984990000000002" -> 0.01698499.
    d = Decimal(value if isinstance(value, str) else repr(value)).quantize(_Q8, ROUND_HALF_EVEN)
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def _recording(key, rows) -> tuple[tuple[str, str], _Recording]:
    """One recorded entry -> ((symbol, interval), its rows formatted as Binance serves them)."""
    parts = key.split(":") if isinstance(key, str) else list(key)
    if len(parts) != 2 or not parts[0] or parts[1] not in INTERVAL_MS:
        raise ValueError(f"recorded: bad key {key!r}; use 'SYMBOL:interval', e.g. 'DASHBTC:5m'")
    symbol, interval = str(parts[0]), parts[1]
    step, offset = INTERVAL_MS[interval], _INTERVAL_OFFSET.get(interval, 0)
    if not isinstance(rows, (list, tuple)):
        raise ValueError(f"recorded[{key!r}]: expected a list of rows")
    served: dict[int, list] = {}
    last = None
    for row in rows:
        if not isinstance(row, (list, tuple)) or len(row) not in (6, 12):
            raise ValueError(f"recorded[{key!r}]: rows need 6 or 12 fields, got {row!r}")
        ot = row[0]
        if type(ot) is not int or (ot - offset) % step:
            raise ValueError(f"recorded[{key!r}]: open time {ot!r} is not on the {interval} grid")
        if last is not None and ot <= last:
            raise ValueError(f"recorded[{key!r}]: open times must ascend, no repeats ({ot} after {last})")
        last = ot
        try:
            o, h, lo, c, v = (_d8(x) for x in row[1:6])
            if len(row) == 12:
                qv, tb, tq = (f"{_d8(x):f}" for x in (row[7], row[9], row[10]))
                trades = int(row[8])
            else:  # not in the recording: derived, the same on every page
                qv, trades, tb, tq = f"{(v * c).quantize(_Q8, ROUND_HALF_EVEN):f}", 0, _ZERO8, _ZERO8
        except (ArithmeticError, TypeError, ValueError) as exc:  # InvalidOperation is no ValueError
            raise ValueError(f"recorded[{key!r}]: bad number in row {row!r} ({exc!r})") from None
        served[ot] = [ot, f"{o:f}", f"{h:f}", f"{lo:f}", f"{c:f}", f"{v:f}", ot + step - 1, qv, trades,
                      tb, tq, "0"]
    return (symbol, interval), _Recording(list(served), served)


class _Config:
    """An immutable, normalised snapshot; configure() swaps in a new one."""

    def __init__(self, raw: dict, previous: _Config | None = None):
        self.raw = raw
        if previous is not None and previous.raw["recorded"] is raw["recorded"]:
            self.recorded = previous.recorded  # unchanged by configure(): formatted once only
        else:
            if not isinstance(raw["recorded"], dict):
                raise ValueError('recorded: expected {"SYMBOL:interval": [rows]}')
            self.recorded = dict(_recording(k, v) for k, v in raw["recorded"].items())
        symbols = raw["symbols"] if raw["symbols"] is not None else DEFAULT_SYMBOLS
        self.symbols = [str(s) for s in symbols]
        known = set(self.symbols)
        for symbol, _ in self.recorded:  # so klines/ticker accept the recorded symbol
            if symbol not in known:
                known.add(symbol)
                self.symbols.append(symbol)
        self.symbol_set = frozenset(self.symbols)
        self.rank = {s: i for i, s in enumerate(self.symbols)}
        self.listings = {str(k): int(v) for k, v in raw["listings"].items()}
        self.delistings = {str(k): int(v) for k, v in raw["delistings"].items()}
        self.outages = sorted((int(a), int(b)) for a, b in raw["outages"])
        for a, b in self.outages:
            if b <= a:
                raise ValueError(f"outages: end must be after start in {[a, b]}")
        self.revisions = {}
        for key, changes in raw["revisions"].items():
            fields = {}
            for name, value in dict(changes).items():
                index = _ROW_FIELDS.get(name, None) if not isinstance(name, int) else name
                if index is None and isinstance(name, str) and name.isdigit():
                    index = int(name)
                if index is None or not 0 <= index <= 11:
                    raise ValueError(f"revisions: unknown field {name!r}")
                if index in _INT_FIELDS:
                    value = int(value)
                elif isinstance(value, (int, float)):
                    value = _f8(value)
                fields[index] = value
            self.revisions[_row_key(key, "revisions")] = fields
        self.invalid_rows = {}
        for key, kind in raw["invalid_rows"].items():
            if kind not in _INVALID_KINDS:
                raise ValueError(f"invalid_rows: unknown kind {kind!r}; use one of {_INVALID_KINDS}")
            self.invalid_rows[_row_key(key, "invalid_rows")] = kind
        if not isinstance(raw["failures"], (list, tuple)):
            raise ValueError("failures: expected a list of {symbol, start, end[, status, interval]}")
        self.failures = [_failure(item) for item in raw["failures"]]
        self.now_ms = None if raw["now_ms"] is None else int(raw["now_ms"])
        for name in ("error_rate", "rate_429", "malformed_rate"):
            value = float(raw[name])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            setattr(self, name, value)
        if self.error_rate + self.rate_429 + self.malformed_rate > 1.0:
            raise ValueError("error_rate + rate_429 + malformed_rate must not exceed 1")
        self.error_statuses = [int(s) for s in raw["error_statuses"]] or [500]
        self.retry_after = int(raw["retry_after"])
        self.slow_ms = float(raw["slow_ms"])
        self.window_seconds = int(raw["window_seconds"])
        if self.window_seconds < 1:
            raise ValueError("window_seconds must be >= 1")
        self.weight_limit = int(raw["weight_limit"])
        self.ban_after_429s = None if raw["ban_after_429s"] is None else int(raw["ban_after_429s"])
        self.ban_seconds = float(raw["ban_seconds"])
        self.seed = int(raw["seed"])
        self.feed_items = int(raw["feed_items"])
        if not 1 <= self.feed_items <= 1000:
            raise ValueError("feed_items must be between 1 and 1000")

    def public(self) -> dict:
        """JSON-able view (row keys as "SYMBOL[:interval]:open_time_ms")."""
        out = dict(self.raw)
        out["symbols"] = list(self.symbols)
        out["listings"] = dict(self.listings)
        out["delistings"] = dict(self.delistings)
        out["outages"] = [list(o) for o in self.outages]
        out["revisions"] = {_key_str(k): {_CANONICAL[i]: val for i, val in v.items()}
                            for k, v in self.revisions.items()}
        out["invalid_rows"] = {_key_str(k): v for k, v in self.invalid_rows.items()}
        out["failures"] = [{"symbol": s, "start": a, "end": b, "status": status}
                           | ({"interval": i} if i else {}) for s, i, a, b, status in self.failures]
        out["recorded"] = {f"{s}:{i}": {"rows": len(r.times), "first": r.times[0] if r.times else None,
                                        "last": r.times[-1] if r.times else None}
                           for (s, i), r in self.recorded.items()}
        out["error_statuses"] = list(self.error_statuses)
        return out

    def listing(self, symbol: str) -> int:
        if symbol in self.listings:
            return self.listings[symbol]
        return NEWCOIN_LISTING_MS if symbol == "NEWCOINUSDT" else DEFAULT_LISTING_MS


_CANONICAL = ("openTime", "open", "high", "low", "close", "volume", "closeTime", "quoteAssetVolume",
              "numberOfTrades", "takerBuyBaseVolume", "takerBuyQuoteVolume", "ignore")


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

class _ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


class _RangeFailure(Exception):
    """A configured failing range: answered with this status and an HTML body."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ExchangeEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are dropped after this many seconds

    def setup(self):
        super().setup()
        self.server.emulator._connections.add(self.connection)

    def finish(self):
        self.server.emulator._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):
        self.server.emulator._handle(self, "GET")

    def do_POST(self):
        self.server.emulator._handle(self, "POST")

    def log_message(self, format, *args):  # noqa: A002 - silence per-request stderr logging
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # client resets / broken pipes are normal under fault tests


_HTML_ERROR = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>emulated upstream</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _html_error(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return _HTML_ERROR.format(status=status, reason=reason).encode()


class ExchangeEmulator:
    """See the module docstring. All config keys are optional keyword arguments."""

    def __init__(self, **config):
        unknown = set(config) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"Unknown emulator config keys: {sorted(unknown)}")
        raw = {k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in _DEFAULTS.items()}
        raw.update(config)
        self._cfg = _Config(raw)
        self._lock = threading.Lock()
        self._rng = random.Random(self._cfg.seed)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set = set()
        self._reset_state()

    # ---- lifecycle -----------------------------------------------------------------------

    def _bind(self, host: str, port: int) -> None:
        if self._server is not None:
            raise RuntimeError("Emulator already started")
        server = _Server((host, port), _Handler)
        server.emulator = self
        self._server = server

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "ExchangeEmulator":
        """Serve in a daemon thread; port 0 picks a free port (see `url`)."""
        self._bind(host, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"exchange-emulator-{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, host: str = "127.0.0.1", port: int = 9100, on_ready=None) -> None:
        """Serve in the calling thread until KeyboardInterrupt (SIGINT, or a SIGTERM handler
        raising it); `on_ready(url)` is called once the socket is bound."""
        self._bind(host, port)
        if on_ready is not None:
            on_ready(self.url)
        try:
            self._server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        server, self._server, self._thread = self._server, None, None
        if server is not None:
            server.server_close()
        # Drop keep-alive connections too, or their handler threads would keep answering.
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connections.clear()

    def __enter__(self) -> "ExchangeEmulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("Emulator is not running")
        host, port = self._server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # ---- config and stats ----------------------------------------------------------------

    def configure(self, **changes) -> None:
        """Change config at runtime (thread-safe). A new `seed` re-seeds the fault generator."""
        unknown = set(changes) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"Unknown emulator config keys: {sorted(unknown)}")
        with self._lock:
            raw = dict(self._cfg.raw)
            raw.update(changes)
            self._cfg = _Config(raw, self._cfg)
            if "seed" in changes:
                self._rng = random.Random(self._cfg.seed)

    def config(self) -> dict:
        return self._cfg.public()

    def _reset_state(self) -> None:
        self._requests = 0
        self._by_path: dict[str, int] = {}
        self._klines_by_symbol: dict[str, int] = {}
        self._status_counts: dict[str, int] = {}
        self._injected = {"error": 0, "429": 0, "malformed": 0}
        self._range_failures = 0
        self._over_limit = 0
        self._banned = 0
        self._rows_served = 0
        self._window_weight: dict[tuple[str, int], int] = {}  # (ip, window start s) -> weight
        self._window_429s: dict[tuple[str, int], int] = {}
        self._bans: dict[str, float] = {}  # ip -> banned until (epoch seconds)

    def reset_stats(self) -> None:
        """Zero the counters; also forgets weight windows and bans (a fresh rate limiter)."""
        with self._lock:
            self._reset_state()

    def stats(self) -> dict:
        with self._lock:
            by_window: dict[int, int] = {}
            by_client: dict[str, dict[int, int]] = {}
            for (ip, window), weight in self._window_weight.items():
                by_window[window] = by_window.get(window, 0) + weight
                by_client.setdefault(ip, {})[window] = weight
            return {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "klines_by_symbol": dict(self._klines_by_symbol),
                "status_counts": dict(self._status_counts),
                "weight_by_window": by_window,
                "weight_by_client_window": by_client,
                "max_window_weight": max(self._window_weight.values(), default=0),
                "over_limit": self._over_limit,
                "banned": self._banned,
                "injected": dict(self._injected),
                "range_failures": self._range_failures,
                "rows_served": self._rows_served,
            }

    # ---- request handling ----------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        ip = h.client_address[0]
        body = b""
        length = h.headers.get("Content-Length")
        if length:
            body = h.rfile.read(int(length))
        if path.startswith("/_emulator/"):
            status, payload, headers = self._control(method, path, body)
            self._send(h, status, payload, "application/json", headers)
            return
        cfg = self._cfg
        try:
            if path.startswith("/feeds/"):
                status, payload, ctype, headers = self._feed(cfg, method, path, query, h)
            else:
                status, payload, ctype, headers = self._api(cfg, method, path, query, ip)
        except Exception as exc:  # a bug here must not hang the client
            status, ctype, headers = 500, "application/json", []
            payload = orjson.dumps({"code": -1000, "msg": f"Emulator error: {exc!r}"})
        if cfg.slow_ms > 0:
            time.sleep(cfg.slow_ms / 1000.0)
        with self._lock:
            key = str(status)
            self._status_counts[key] = self._status_counts.get(key, 0) + 1
        self._send(h, status, payload, ctype, headers)

    @staticmethod
    def _send(h, status: int, payload: bytes, ctype: str, headers) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {h.server_version}",
            f"Date: {h.date_time_string()}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(payload)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in headers)
        if h.close_connection:
            lines.append("Connection: close")
        h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    def _control(self, method: str, path: str, body: bytes):
        if path == "/_emulator/stats" and method == "GET":
            return 200, orjson.dumps(self.stats(), option=orjson.OPT_NON_STR_KEYS), []
        if path == "/_emulator/reset" and method == "POST":
            self.reset_stats()
            return 200, b"{}", []
        if path == "/_emulator/config":
            if method == "POST":
                try:
                    changes = orjson.loads(body or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("Body must be a JSON object of config changes")
                    self.configure(**changes)
                except (ValueError, TypeError) as exc:
                    return 400, orjson.dumps({"code": -1, "msg": str(exc)}), []
            return 200, orjson.dumps(self.config()), []
        return 404, orjson.dumps({"code": -1, "msg": f"Unknown control endpoint {method} {path}"}), []

    def _api(self, cfg: _Config, method: str, path: str, query: dict, ip: str):
        """-> (status, body bytes, content type, extra headers)."""
        with self._lock:
            self._requests += 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
            if path == "/api/v3/klines":
                symbol = query.get("symbol", "")
                self._klines_by_symbol[symbol] = self._klines_by_symbol.get(symbol, 0) + 1

        route = _ROUTES.get(path) if method == "GET" else None
        weight = _weight(path, query) if route else 0

        # -- rate limiting (real clock) --
        wall = time.time()
        window = int(wall // cfg.window_seconds) * cfg.window_seconds
        window_end = window + cfg.window_seconds
        with self._lock:
            banned_until = self._bans.get(ip, 0.0)
            key = (ip, window)
            used = self._window_weight.get(key, 0)
            if banned_until <= wall and cfg.ban_after_429s is not None and route and \
                    self._window_429s.get(key, 0) >= cfg.ban_after_429s:
                banned_until = self._bans[ip] = wall + cfg.ban_seconds
            if banned_until > wall:
                self._banned += 1
                headers = [("X-MBX-USED-WEIGHT-1M", str(used)), ("X-MBX-USED-WEIGHT", str(used)),
                           ("Retry-After", str(max(1, math.ceil(banned_until - wall))))]
                msg = (f"Way too much request weight used; IP banned until {int(banned_until * 1000)}. "
                       "Please use WebSocket Streams for live updates to avoid bans.")
                return 418, orjson.dumps({"code": -1003, "msg": msg}), "application/json", headers
            if used + weight > cfg.weight_limit:
                self._over_limit += 1
                self._window_429s[key] = self._window_429s.get(key, 0) + 1
                headers = [("X-MBX-USED-WEIGHT-1M", str(used)), ("X-MBX-USED-WEIGHT", str(used)),
                           ("Retry-After", str(max(1, math.ceil(window_end - wall))))]
                msg = (f"Too much request weight used; current limit is {cfg.weight_limit} request "
                       f"weight per {cfg.window_seconds} SECOND. Please use WebSocket Streams for "
                       "live updates to avoid polling the API.")
                return 429, orjson.dumps({"code": -1003, "msg": msg}), "application/json", headers
            used += weight
            if weight:
                self._window_weight[key] = used
        headers = [("X-MBX-USED-WEIGHT-1M", str(used)), ("X-MBX-USED-WEIGHT", str(used))]

        if route is None:
            return (404, orjson.dumps({"code": -1, "msg": f"Unknown endpoint {method} {path}"}),
                    "application/json", headers)

        # -- fault injection (seeded) on klines and ticker --
        fault = None
        if path in ("/api/v3/klines", "/api/v3/ticker/24hr"):
            fault = self._draw_fault(cfg)
            if fault == "429":
                body = orjson.dumps({"code": -1003, "msg": "Too many requests"})
                return 429, body, "application/json", headers + [("Retry-After", str(cfg.retry_after))]
            if fault == "error":
                status = self._choice(cfg.error_statuses)
                return status, _html_error(status), "text/html", headers

        now = cfg.now_ms if cfg.now_ms is not None else int(time.time() * 1000)
        try:
            result = route(self, cfg, query, now)
        except _ApiError as err:
            return err.status, orjson.dumps({"code": err.code, "msg": err.msg}), "application/json", headers
        except _RangeFailure as err:
            with self._lock:
                self._range_failures += 1
            return err.status, _html_error(err.status), "text/html", headers
        payload = orjson.dumps(result)
        if fault == "malformed":
            payload = self._malform(path, result, payload)
        return 200, payload, "application/json", headers

    def _feed(self, cfg: _Config, method: str, path: str, query: dict, h):
        """A news feed (weightless; faults injected like on klines)."""
        with self._lock:
            self._requests += 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
        now = cfg.now_ms if cfg.now_ms is not None else int(time.time() * 1000)
        host = h.headers.get("Host") or f"{h.server.server_address[0]}:{h.server.server_address[1]}"
        answer = feed_response(path.removeprefix("/feeds/"), now_ms=now, items=cfg.feed_items,
                               base=f"http://{host}", if_none_match=h.headers.get("If-None-Match"),
                               if_modified_since=h.headers.get("If-Modified-Since"),
                               edition="".join(c for c in query.get("edition", "")[:40] if c.isalnum())) \
            if method == "GET" else None
        if answer is None:
            return 404, b"Not found", "text/plain", []
        fault = self._draw_fault(cfg)
        if fault == "429":
            return 429, b"Too many requests", "text/plain", [("Retry-After", str(cfg.retry_after))]
        if fault == "error":
            status = self._choice(cfg.error_statuses)
            return status, _HTML_ERROR.format(status=status, reason="Error").encode(), "text/html", []
        status, payload, ctype, headers = answer
        if fault == "malformed" and status == 200:
            payload = payload[: max(1, len(payload) // 3)]
        return status, payload, ctype, headers

    def _draw_fault(self, cfg: _Config) -> str | None:
        if not (cfg.rate_429 or cfg.error_rate or cfg.malformed_rate):
            return None
        with self._lock:
            r = self._rng.random()
            if r < cfg.rate_429:
                kind = "429"
            elif r < cfg.rate_429 + cfg.error_rate:
                kind = "error"
            elif r < cfg.rate_429 + cfg.error_rate + cfg.malformed_rate:
                kind = "malformed"
            else:
                return None
            self._injected[kind] += 1
            return kind

    def _choice(self, seq):
        with self._lock:
            return self._rng.choice(seq)

    def _malform(self, path: str, result, payload: bytes) -> bytes:
        variant = self._choice(("truncated", "wrong_type", "short_rows"))
        if variant == "truncated":
            return payload[: max(1, len(payload) // 2)]
        if variant == "wrong_type":
            if isinstance(result, list):
                return orjson.dumps({"code": 0, "msg": "ok", "data": result})
            return orjson.dumps([result])
        if isinstance(result, list) and path == "/api/v3/klines":
            return orjson.dumps([row[:5] for row in result] or [[0, "1"]])
        if isinstance(result, list):
            return orjson.dumps([{"symbol": r["symbol"]} for r in result] or [{}])
        return orjson.dumps({"symbol": result["symbol"]})

    # ---- endpoints -----------------------------------------------------------------------

    def _ping(self, cfg, query, now):
        return {}

    def _time(self, cfg, query, now):
        return {"serverTime": now}

    def _status(self, cfg: _Config, symbol: str, now: int) -> str:
        delisted = cfg.delistings.get(symbol)
        return "BREAK" if delisted is not None and delisted <= now else "TRADING"

    def _exchange_info(self, cfg: _Config, query, now):
        symbols = self._symbols_param(cfg, query) or cfg.symbols
        entries = []
        for symbol in symbols:
            base, quote = _split_symbol(symbol)
            entries.append({
                "symbol": symbol, "status": self._status(cfg, symbol, now),
                "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
                "permissions": [], "permissionSets": [["SPOT"]],
            })
        return {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": cfg.weight_limit},
            ],
            "exchangeFilters": [],
            "symbols": entries,
        }

    def _symbols_param(self, cfg: _Config, query) -> list[str] | None:
        if query.get("symbol"):
            symbol = query["symbol"]
            if symbol not in cfg.symbol_set:
                raise _ApiError(-1121, "Invalid symbol.")
            return [symbol]
        if query.get("symbols"):
            try:
                symbols = orjson.loads(query["symbols"])
                assert isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
            except Exception:
                raise _ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from None
            for symbol in symbols:
                if symbol not in cfg.symbol_set:
                    raise _ApiError(-1121, "Invalid symbol.")
            return symbols
        return None

    def _ticker(self, cfg: _Config, query, now):
        single = bool(query.get("symbol"))
        symbols = self._symbols_param(cfg, query) or cfg.symbols
        out = [self._ticker_one(cfg, s, now) for s in symbols]
        return out[0] if single else out

    def _ticker_one(self, cfg: _Config, symbol: str, now: int) -> dict:
        model = _model(symbol)
        day_ago = now - _D
        trading = self._status(cfg, symbol, now) == "TRADING" and cfg.listing(symbol) <= now
        last = model.price(now)
        first = model.price(day_ago)
        samples = [model.price(day_ago + i * _H) for i in range(25)]
        quote_volume = model.quote_per_day if trading else 0.0
        volume = quote_volume / ((first + last) / 2)
        count = int(quote_volume / model.trade_size) if trading else 0
        return {
            "symbol": symbol,
            "priceChange": _f8(last - first),
            "priceChangePercent": "%.3f" % ((last - first) / first * 100),
            "weightedAvgPrice": _f8(sum(samples) / len(samples)),
            "prevClosePrice": _f8(first),
            "lastPrice": _f8(last),
            "lastQty": _f8(model.trade_size / last),
            "bidPrice": _f8(last * 0.9999),
            "bidQty": "1.00000000",
            "askPrice": _f8(last * 1.0001),
            "askQty": "1.00000000",
            "openPrice": _f8(first),
            "highPrice": _f8(max(samples) * 1.002),
            "lowPrice": _f8(min(samples) * 0.998),
            "volume": _f8(volume),
            "quoteVolume": _f8(quote_volume),
            "openTime": day_ago,
            "closeTime": now,
            "firstId": 0 if not count else 1,
            "lastId": count if count else -1,
            "count": count,
        }

    def _klines(self, cfg: _Config, query, now):
        symbol = query.get("symbol")
        if not symbol:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        interval = query.get("interval")
        if not interval:
            raise _ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if symbol not in cfg.symbol_set:
            raise _ApiError(-1121, "Invalid symbol.")
        if interval not in INTERVAL_MS:
            raise _ApiError(-1120, "Invalid interval.")
        start = _int_param(query, "startTime")
        end = _int_param(query, "endTime")
        limit = _int_param(query, "limit")
        if limit is None:
            limit = 500
        elif not 1 <= limit <= 1000:
            raise _ApiError(-1130, "Invalid data sent for a parameter.")
        if start is not None and end is not None and start > end:
            raise _ApiError(-1023, "Start time is greater than end time.")
        interval_ms = INTERVAL_MS[interval]
        open_times = _open_times(cfg, symbol, interval, interval_ms, start, end, limit, now)
        for f_symbol, f_interval, a, b, status in cfg.failures:
            if f_symbol == symbol and f_interval in (None, interval):
                i = bisect_left(open_times, a)
                if i < len(open_times) and open_times[i] < b:
                    raise _RangeFailure(status)
        recording = cfg.recorded.get((symbol, interval))
        if recording is None:
            rows = _build_rows(_model(symbol), interval_ms, open_times, now)
        else:  # copies: overrides must not change the recording
            rows = [recording.rows[ot].copy() for ot in open_times]
        if cfg.revisions or cfg.invalid_rows:
            _apply_overrides(cfg, symbol, interval, interval_ms, rows)
        with self._lock:
            self._rows_served += len(rows)
        return rows


_ROUTES = {
    "/api/v3/ping": ExchangeEmulator._ping,
    "/api/v3/time": ExchangeEmulator._time,
    "/api/v3/exchangeInfo": ExchangeEmulator._exchange_info,
    "/api/v3/ticker/24hr": ExchangeEmulator._ticker,
    "/api/v3/klines": ExchangeEmulator._klines,
}


def _weight(path: str, query: dict) -> int:
    if path == "/api/v3/klines":
        return 2
    if path == "/api/v3/exchangeInfo":
        return 20
    if path == "/api/v3/ticker/24hr":
        if query.get("symbol"):
            return 2
        if query.get("symbols"):
            n = query["symbols"].count(",") + 1
            return 2 if n <= 20 else 40 if n <= 100 else 80
        return 80
    return 1


def _int_param(query: dict, name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                               "legal range is '^(-)?[0-9]{1,20}$'.") from None


def _open_times(cfg: _Config, symbol: str, interval: str, interval_ms: int, start, end, limit: int,
                now: int):
    """Open times served: listed, not delisted, <= now, not in an outage; Binance paging."""
    recording = cfg.recorded.get((symbol, interval))
    if recording is not None:
        return _recorded_open_times(cfg, recording.times, start, end, limit, now)
    offset = _INTERVAL_OFFSET.get(interval, 0)
    lo = _align_up(cfg.listing(symbol) - interval_ms + 1, interval_ms, offset)
    if start is not None:
        lo = max(lo, _align_up(start, interval_ms, offset))
    hi = now if end is None else min(end, now)
    delisted = cfg.delistings.get(symbol)
    if delisted is not None:
        hi = min(hi, delisted - 1)
    hi = _align_down(hi, interval_ms, offset)
    if lo > hi:
        return []
    segments = [(lo, hi)]
    for a, b in cfg.outages:  # remove open times in [a, b)
        cut_lo, cut_hi = _align_up(a, interval_ms, offset), _align_down(b - 1, interval_ms, offset)
        if cut_lo > cut_hi:
            continue
        kept = []
        for s, e in segments:
            if cut_hi < s or cut_lo > e:
                kept.append((s, e))
                continue
            if s < cut_lo:
                kept.append((s, cut_lo - interval_ms))
            if cut_hi < e:
                kept.append((cut_hi + interval_ms, e))
        segments = kept
    out: list[int] = []
    if start is not None:
        for s, e in segments:  # forward from start
            r = range(s, e + 1, interval_ms)
            out.extend(r[: limit - len(out)])
            if len(out) >= limit:
                break
        return out
    # only endTime, or neither: the last `limit` ending at endTime / now
    chunks = []
    need = limit
    for s, e in reversed(segments):
        r = range(s, e + 1, interval_ms)
        take = r[-need:] if need < len(r) else r
        chunks.append(take)
        need -= len(take)
        if need <= 0:
            break
    for chunk in reversed(chunks):
        out.extend(chunk)
    return out


def _recorded_open_times(cfg: _Config, times: list[int], start, end, limit: int, now: int) -> list[int]:
    """Recorded open times in [start, min(end, now)], not in an outage; Binance paging."""
    lo = 0 if start is None else bisect_left(times, start)
    hi = bisect_right(times, now if end is None else min(end, now))
    order = range(lo, hi) if start is not None else range(hi - 1, lo - 1, -1)
    outages = cfg.outages
    served = (t for t in map(times.__getitem__, order) if not any(a <= t < b for a, b in outages))
    out = list(islice(served, limit))
    return out if start is not None else out[::-1]


def _apply_overrides(cfg: _Config, symbol: str, interval: str, interval_ms: int, rows: list) -> None:
    revisions, invalid = cfg.revisions, cfg.invalid_rows
    for row in rows:
        ot = row[0]
        changes = revisions.get((symbol, interval, ot)) or revisions.get((symbol, None, ot))
        if changes:
            for index, value in changes.items():
                row[index] = value
        kind = invalid.get((symbol, interval, ot)) or invalid.get((symbol, None, ot))
        if kind == "high_below_low":
            row[2] = _f8(float(row[3]) * 0.99)
        elif kind == "negative_volume":
            row[5] = "-" + row[5].lstrip("-")
        elif kind == "misaligned_time":
            row[0] += 1234
            row[6] += 1234
