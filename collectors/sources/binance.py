"""Binance spot klines (and any exchange that speaks the same REST dialect)."""

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Iterator

from django.conf import settings

from collectors.sources import ConfigError, MalformedResponse, Page, SourceError, unknown_keys, url_error
from collectors.times import ms_from_utc, utc_from_ms

if TYPE_CHECKING:  # the wrapper is handed in; a leaf does not import it
    from collectors.http import Upstream

INTERVALS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}
# "3d", "1w" and "1M" are left out on purpose: planning and the alignment rule work on a grid
# that starts at the epoch; weekly candles open on Mondays, and the 3-day grid's origin is not
# documented (check it against the real exchange before adding it). "1M" varies in length.
PAGE_LIMIT = 1000
KLINES_WEIGHT = 2
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
# Our words for the exchange's error codes an operator meets (its own message is not shown:
# see collectors.http, upstream bodies stay out of errors).
ERROR_CODES = {-1003: "too many requests", -1100: "illegal characters in a parameter",
               -1120: "invalid interval", -1121: "invalid symbol"}
CONFIG_KEYS = {"base_url", "interval", "top_n", "quote_asset", "validate"}


def _default_interval() -> str:
    return settings.COLLECTION_INTERVAL


def parse_klines(data) -> list:
    """Check the shape of a klines body: a list of rows of at least 11 fields."""
    if not isinstance(data, list):
        raise MalformedResponse(f"expected a list of klines, got {type(data).__name__}")
    for row in data:
        # Shape only: a body of the wrong shape is retried; bad values in a well-formed row are
        # the quality rules' business (quarantined, see quality.rules).
        if not isinstance(row, list) or len(row) < 11 or not isinstance(row[0], int) \
                or not isinstance(row[6], int):
            # Its shape, never its content (an upstream chooses that; errors are shown to all keys).
            shape = f"a list of {len(row)}" if isinstance(row, list) else type(row).__name__
            raise MalformedResponse(f"bad kline row ({shape}, not 11+ fields with integer times)")
    return data


def _exchange_info(data) -> dict:
    """exchangeInfo with only well-formed symbols (a string matching SYMBOL_RE)."""
    if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
        raise MalformedResponse("exchangeInfo without a symbols list")
    data["symbols"] = [s for s in data["symbols"] if isinstance(s, dict)
                       and isinstance(s.get("symbol"), str) and SYMBOL_RE.fullmatch(s["symbol"])]
    return data


def _tickers(data) -> list[dict]:
    """24h tickers with a well-formed symbol and a decimal quoteVolume (made a Decimal)."""
    if not isinstance(data, list):
        raise MalformedResponse("24hr tickers are not a list")
    tickers = []
    for ticker in data:
        try:
            volume = Decimal(ticker["quoteVolume"])
        except (TypeError, ValueError, KeyError, ArithmeticError):
            continue
        if isinstance(ticker.get("symbol"), str) and SYMBOL_RE.fullmatch(ticker["symbol"]) and volume.is_finite():
            tickers.append({"symbol": ticker["symbol"], "quoteVolume": volume})
    return tickers


class BinanceKlines:
    """Candles from GET /api/v3/klines, paged 1000 at a time."""

    weight_header = "X-MBX-USED-WEIGHT-1M"
    page_size = PAGE_LIMIT         # candles per klines request (planning and estimates read it)
    request_weight = KLINES_WEIGHT  # of one klines request, against the exchange's weight budget

    def __init__(self, config: dict, *, http: "Upstream"):
        self.config = config
        self.http = http
        self.interval = config["interval"]
        self.step_ms = INTERVALS[self.interval] * 1000

    @classmethod
    def grain(cls, config: dict) -> timedelta:
        return timedelta(seconds=INTERVALS[config.get("interval") or _default_interval()])

    @classmethod
    def validate_config(cls, config: dict, symbols: list) -> tuple[dict, list]:
        errors = unknown_keys(config, CONFIG_KEYS)
        config = {"base_url": "https://api.binance.com", "interval": _default_interval(), **config}
        base_url = config["base_url"]
        if why := url_error(base_url):
            errors["base_url"] = f"Must be an http(s) URL such as https://api.binance.com ({why})."
        elif any(mark in base_url for mark in "?#@"):
            # The endpoint paths are appended to it: a query or fragment would swallow them,
            # and credentials do not belong in a URL that is shown and logged.
            errors["base_url"] = "Must be scheme://host[:port][/path], without ?query, #fragment or user@."
        if not isinstance(config["interval"], str) or config["interval"] not in INTERVALS:
            errors["interval"] = f"Unsupported interval; use one of {', '.join(INTERVALS)}."
        symbols = [s.strip().upper() for s in symbols]
        bad = [s for s in symbols if not SYMBOL_RE.fullmatch(s)]
        if bad:
            errors["symbols"] = f"Not a symbol: {bad[0]!r}."
        elif len(set(symbols)) != len(symbols):
            errors["symbols"] = "Symbols must not repeat."
        top_n = config.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool)
                                  or not 1 <= top_n <= 1000):
            errors["top_n"] = "Must be an integer from 1 to 1000."
        if symbols and top_n is not None:
            errors["top_n"] = "Give either a symbols list or top_n, not both."
        if not symbols and top_n is None:
            errors["symbols"] = "Give a symbols list, or top_n (with quote_asset) in config."
        if not isinstance(config.get("validate", True), bool):
            errors["validate"] = "Must be true or false (apply the quality rules on ingest)."
        quote = config.get("quote_asset", "USDT")
        if not isinstance(quote, str) or not SYMBOL_RE.fullmatch(quote):
            errors["quote_asset"] = "Must be an asset code such as USDT."
        if top_n is not None:
            config["quote_asset"] = quote
        if errors:
            raise ConfigError(errors)
        config["base_url"] = base_url.rstrip("/")
        return config, symbols

    def _get(self, path: str, params: dict | None = None, **kwargs):
        try:
            return self.http.get_json(path, params, **kwargs)
        except SourceError as error:
            if error.code in ERROR_CODES:
                raise SourceError(f"{error}: {ERROR_CODES[error.code]}", permanent=error.permanent,
                                  status=error.status, code=error.code) from error
            raise

    def list_symbols(self) -> list[str]:
        """The top_n symbols of quote_asset by 24h quote volume (currently trading only). What
        the exchange lists is checked like symbols an operator types: anything else is left out."""
        info = self._get("/api/v3/exchangeInfo", weight=20, parse=_exchange_info)
        quote = self.config["quote_asset"]
        trading = {s["symbol"] for s in info["symbols"]
                   if s.get("quoteAsset") == quote and s.get("status") == "TRADING"}
        tickers = self._get("/api/v3/ticker/24hr", weight=80, parse=_tickers)
        ranked = sorted((t for t in tickers if t["symbol"] in trading),
                        key=lambda t: t["quoteVolume"], reverse=True)
        return [t["symbol"] for t in ranked[: self.config["top_n"]]]

    def first_time(self, symbol: str, start: datetime, end: datetime) -> datetime | None:
        """Open time of the first kline in [start, end), or None: where a symbol's data begins."""
        data = self._get(
            "/api/v3/klines", {"symbol": symbol, "interval": self.interval, "startTime": ms_from_utc(start),
                               "endTime": ms_from_utc(end) - 1, "limit": 1},
            weight=KLINES_WEIGHT, parse=parse_klines)
        return utc_from_ms(data[0][0]) if data else None

    def fetch(self, symbol: str, start: datetime, end: datetime) -> Iterator[Page]:
        """Yield pages covering [start, end) in order; the caller bounds `end` to closed candles.

        A page the exchange would not serve after retries is yielded with its error and the span
        a full page would have covered, and the next page starts after it (one bad range never
        hides the rest); a permanent error or an open breaker ends the fetch."""
        cursor, end_ms = ms_from_utc(start), ms_from_utc(end)
        step = self.step_ms
        while cursor < end_ms:
            try:
                data = self._get(
                    "/api/v3/klines",
                    {"symbol": symbol, "interval": self.interval, "startTime": cursor,
                     "endTime": end_ms - 1, "limit": PAGE_LIMIT},
                    weight=KLINES_WEIGHT, parse=parse_klines)
            except SourceError as error:
                if error.permanent or error.upstream_down:
                    raise
                page_end = min(end_ms, cursor + PAGE_LIMIT * step)
                yield Page(rows=[], start=utc_from_ms(cursor), end=utc_from_ms(page_end), error=error)
                cursor = page_end
                continue
            rows, times = [], []
            for k in data:
                open_ms = k[0]
                if cursor <= open_ms < end_ms:
                    times.append(open_ms)
                    rows.append((open_ms, k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10]))
            if len(data) < PAGE_LIMIT:
                page_end = end_ms  # the exchange has nothing more in the range
            else:
                page_end = min(end_ms, data[-1][0] + step)
                if page_end <= cursor:
                    raise SourceError("Exchange returned a full page that does not advance")
            yield Page(rows=rows, start=utc_from_ms(cursor), end=utc_from_ms(page_end), times_ms=times)
            cursor = page_end
