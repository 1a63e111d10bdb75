"""The offline Binance-compatible exchange and its news feeds, for the demo, the tests and the
benchmarks (plain Python: stdlib + orjson, no Django).

- `exchange`: the HTTP server, `ExchangeEmulator` (endpoints, weights, faults, control)
- `market`: intervals, symbols and the deterministic klines it serves (`kline`)
- `config`: the config keys, their defaults and validation
- `feeds`: the news feeds it serves under ``/feeds/``

The public names are importable from here: ``from collectors.emulator import ExchangeEmulator``.
"""

from collectors.emulator.exchange import ExchangeEmulator
from collectors.emulator.market import DEFAULT_LISTING_MS, DEFAULT_SYMBOLS, INTERVAL_MS, kline

__all__ = ["ExchangeEmulator", "kline", "INTERVAL_MS", "DEFAULT_SYMBOLS", "DEFAULT_LISTING_MS"]
