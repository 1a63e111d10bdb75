"""Source plugins: how to fetch one kind of data. No Django models here.

A source is a class with `fetch(symbol, start, end)` yielding `Page`s, plus `validate_config`
and `grain` as class methods. Register it by adding one line to SOURCES.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import import_module

SOURCES = {
    "binance_klines": "collectors.sources.binance.BinanceKlines",
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
                 retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


@dataclass
class Page:
    """Rows fetched for [start, end): anything in that span not in `rows` does not exist upstream."""

    rows: list[tuple]
    start: datetime
    end: datetime
    times_ms: list[int] = field(default_factory=list)  # each row's time, ms since epoch, sorted


def source_class(kind: str):
    try:
        module, _, name = SOURCES[kind].rpartition(".")
    except KeyError:
        raise ConfigError({"kind": f"Unknown kind {kind!r}; known kinds: {', '.join(SOURCES)}."})
    return getattr(import_module(module), name)


def validate_config(kind: str, config, symbols) -> tuple[dict, list]:
    """Return the cleaned (config, symbols) or raise ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError({"config": "Must be a JSON object."})
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ConfigError({"symbols": "Must be a list of strings."})
    return source_class(kind).validate_config(config, symbols)


def grain_of(kind: str, config: dict) -> timedelta | None:
    return source_class(kind).grain(config)
