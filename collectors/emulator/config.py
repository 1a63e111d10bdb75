"""The emulator's configuration: the keys and their defaults, their validation, and the
immutable normalised snapshot (`_Config`) that `ExchangeEmulator.configure()` swaps in.

Plain Python (stdlib only); no Django.

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
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from collectors.emulator.market import (
    _INTERVAL_OFFSET,
    DEFAULT_LISTING_MS,
    DEFAULT_SYMBOLS,
    INTERVAL_MS,
    NEWCOIN_LISTING_MS,
    _f8,
)

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
