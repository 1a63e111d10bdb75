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

What it serves comes from collectors/emulator/market.py (the symbols and the deterministic
klines) and collectors/emulator/config.py (every config key: listings, outages, revisions,
failing ranges, recorded candles, faults, limits).

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
from bisect import bisect_left, bisect_right
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from urllib.parse import parse_qs, urlsplit

import orjson

from collectors.emulator.config import _DEFAULTS, _Config
from collectors.emulator.feeds import feed_response
from collectors.emulator.market import (
    _D,
    _H,
    _INTERVAL_OFFSET,
    INTERVAL_MS,
    _align_down,
    _align_up,
    _build_rows,
    _f8,
    _model,
    _split_symbol,
)

__all__ = ["ExchangeEmulator"]

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
    """See the module docstring. All config keys (config.py) are optional keyword arguments."""

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
