"""Source plugins: how to fetch one kind of data. No Django models here.

A source is a class with `fetch(symbol, start, end)` yielding `Page`s, plus `validate_config`
and `grain` as class methods; a source of events (no grain) also names the model its rows go
to. Register it by adding one line to SOURCES. The guide: docs/adding-a-source.md.
"""

from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module
from typing import Any, Callable
from urllib.parse import urlsplit

from collectors.outbound import url_refused

SOURCES = {
    "binance_klines": "collectors.sources.binance.BinanceKlines",
    "rss_news": "collectors.sources.rss.RssNews",
}


class ConfigError(Exception):
    """A collector definition the source rejects; `errors` maps a field or key to a message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors

    def as_field_errors(self) -> dict[str, list[str]]:
        """Group as Django/DRF field errors: config keys under 'config', the rest as is."""
        grouped: dict[str, list[str]] = {}
        for key, message in self.errors.items():
            name = key if key in ("kind", "symbols") else "config"
            text = message if name != "config" else f"{key}: {message}"
            grouped.setdefault(name, []).append(text)
        return grouped


class SourceError(Exception):
    """An upstream failure. Permanent ones (a bad symbol) are not retried."""

    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None,
                 retry_after: float | None = None, malformed: bool = False, upstream_down: bool = False,
                 code: int | None = None):
        super().__init__(message)
        self.code = code  # the upstream's numeric error code of a 4xx (Binance's `code`), if any
        self.permanent = permanent
        self.upstream_down = upstream_down  # the breaker says so (refused, or failing again after its wait)
        self.malformed = malformed  # a 200 whose body is not what was promised
        self.status = status
        self.retry_after = retry_after


class MalformedResponse(ValueError):
    """A 200 whose body is not what the endpoint promises (the HTTP wrapper retries it like a 5xx)."""


@dataclass
class Document:
    """A fetched document; `not_modified` (HTTP 304) when the remembered validators still hold."""

    url: str
    content: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False
    parsed: Any = None  # what get_document's `parse` made of the content


@dataclass
class Page:
    """Rows fetched for [start, end): anything in that span not in `rows` does not exist upstream.

    Candle sources give rows as tuples (the engine applies the kline rules); event sources give
    dicts of their model's fields and put what they could not read in `invalid` as
    (payload, rule) pairs, which the engine quarantines. `on_stored` runs in the transaction
    that stores the page (e.g. remember a feed's ETag only once its entries are in). A page
    the upstream would not serve (after retries) comes with `error` set and no rows: the engine
    records [start, end) as missing and goes on with the next page."""

    rows: list
    start: datetime
    end: datetime
    times_ms: list[int] = field(default_factory=list)  # each row's time, ms since epoch, sorted
    invalid: list[tuple] = field(default_factory=list)
    on_stored: Callable[[], None] | None = None
    error: Exception | None = None


def unknown_keys(config: dict, allowed: set[str]) -> dict[str, str]:
    """The ConfigError entry for the first key of `config` a source does not know, if any."""
    unknown = sorted(set(config) - allowed)
    return {unknown[0]: f"Unknown key; allowed: {', '.join(sorted(allowed))}."} if unknown else {}


def url_error(url) -> str | None:
    """Why `url` cannot be an upstream's http(s) address, or None: its syntax, and whether the
    outbound policy lets collectors call its host (collectors.outbound, UPSTREAM_ALLOWED_HOSTS)."""
    if not isinstance(url, str) or len(url) > 2000 or any(c.isspace() or c == "\x00" for c in url):
        return "not an http(s) URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as error:
        return str(error)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL with a host"

    return url_refused(url)


def kind_choices() -> list[tuple[str, str]]:
    """The Collector.kind choices, read when asked: a new source needs no migration for them."""
    return [(kind, kind) for kind in SOURCES]


def source_class(kind: str):
    try:
        module, _, name = SOURCES[kind].rpartition(".")
    except KeyError:
        raise ConfigError({"kind": f"Unknown kind {kind!r}; known kinds: {', '.join(SOURCES)}."}) from None
    return getattr(import_module(module), name)


def validate_config(kind: str, config, symbols) -> tuple[dict, list]:
    """Return the cleaned (config, symbols) or raise ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError({"config": "Must be a JSON object."})
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ConfigError({"symbols": "Must be a list of strings."})
    return source_class(kind).validate_config(config, symbols)

