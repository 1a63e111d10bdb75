"""Real exchange candles (Binance, January 2018, with real holes) for tests through the emulator.

They live beside the project in the workplace's shared folder (`../shared/data/`, see its
README.md), not in this repository; SHARED_DATA_DIR names another place."""

import os
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    if os.environ.get("SHARED_DATA_DIR"):
        return Path(os.environ["SHARED_DATA_DIR"])
    for folder in ROOT.parents:  # the project may be checked out a level deeper (CI)
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return ROOT.parent / "shared" / "data"


def real_candles(name: str) -> list[list]:
    """[[open_ms, open, high, low, close, volume], ...] of e.g. "DASHBTC-5m.json"."""
    path = data_dir() / name
    assert path.exists(), f"real candle data missing: {path} (set SHARED_DATA_DIR to the folder holding it)"
    return orjson.loads(path.read_bytes())
