"""What the API tests share (test_api_*.py here, tests/config/test_api_errors.py): the
endpoints' paths, a collector on the emulator, a collection triggered through the API and run
inline, the candle the emulator serves, a JSON error body."""

from datetime import datetime, timezone as dt_timezone

from collectors import services
from collectors.emulator import kline
from collectors.models import Collector
from tests.factories import CollectorFactory

TRIGGER = "/api/admin/collect/trigger"
STATUS = "/api/admin/collect/status"
RUNS = "/api/admin/runs/"
COLLECTORS = "/api/admin/collectors/"
CANDLES = "/api/admin/candles/"
DAY = datetime(2025, 1, 1, tzinfo=dt_timezone.utc)
HOUR_MS = 3_600_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def live_collector(emulator, **fields) -> Collector:
    """A collector pointed at the emulator (hourly BTCUSDT and ETHUSDT unless told otherwise)."""
    fields.setdefault("config", {"base_url": emulator.url, "interval": "1h"})
    return CollectorFactory(**fields)


def collect(api, collector, *, start="2025-01-01", end="2025-01-02", mode="backward", **kwargs) -> int:
    """Trigger through the API, then execute the run here instead of on a worker."""
    response = api.post(TRIGGER, {"mode": mode, "collector": collector.slug, "start_date": start,
                                  "end_date": end}, format="json")
    assert response.status_code == 202, response.json()
    run_id = response.json()["run_id"]
    services.run_start(run_id=run_id, inline=True, **kwargs)
    return run_id


def served(symbol, open_time: datetime) -> dict:
    """The candle the emulator serves, keyed like the API's JSON."""
    row = kline(symbol, "1h", ms(open_time))
    return {"open": row[1], "high": row[2], "low": row[3], "close": row[4], "volume": row[5],
            "quote_volume": row[7], "trades": row[8]}


def field_errors(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()
