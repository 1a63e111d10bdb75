"""Real exchange candles (Binance, January 2018, with real holes) for tests through the emulator.

A copy of the workplace's shared test data (`tests/real_candles/README.md` says where it comes
from and what it holds), gzipped, so a fresh clone anywhere has it."""

import gzip
from pathlib import Path

import orjson

FOLDER = Path(__file__).resolve().parent / "real_candles"


def real_candles(name: str) -> list[list]:
    """[[open_ms, open, high, low, close, volume], ...] of e.g. "DASHBTC-5m.json"."""
    return orjson.loads(gzip.decompress((FOLDER / f"{name}.gz").read_bytes()))
