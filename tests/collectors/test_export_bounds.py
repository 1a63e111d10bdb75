"""A CSV export never answers 200 with a cut file: more than EXPORT_MAX_ROWS matching candles
is a JSON 400 naming what to narrow, before the first byte; list endpoints are bounded."""

import csv
import io
from datetime import datetime, timezone

import pytest

from collectors.storage import upsert_candles
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
CANDLES = "/api/admin/candles/"
HOUR_MS = 3_600_000
BASE_MS = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture
def stored(settings):
    """BTCUSDT and ETHUSDT, 24 hourly candles each on 2025-01-01; exports limited to 30 rows."""
    settings.EXPORT_MAX_ROWS = 30
    collector = CollectorFactory(slug="exp", symbols=["BTCUSDT", "ETHUSDT"])
    for symbol in ("BTCUSDT", "ETHUSDT"):
        upsert_candles(collector_id=collector.pk, symbol=symbol, interval="1h", rows=[
            (BASE_MS + h * HOUR_MS, "1.5", "2", "1", "1.5", "10", BASE_MS + (h + 1) * HOUR_MS - 1, "15", 3, "5", "7.5")
            for h in range(24)])
    return collector


def test_an_export_over_the_row_limit_is_a_json_400_naming_what_to_narrow(api, stored):
    response = api.get(CANDLES, {"collector": "exp", "format": "csv"})
    assert response.status_code == 400 and not response.streaming
    assert response["Content-Type"].startswith("application/")  # JSON, not a CSV file
    body = response.json()
    assert set(body) >= {"start", "end", "symbol"}, body
    assert "More than 30 candles match" in body["start"][0] and "EXPORT_MAX_ROWS" in body["start"][0]
    # One symbol is 24 rows: under the limit, streamed whole.
    one = api.get(CANDLES, {"collector": "exp", "symbol": "BTCUSDT", "format": "csv"})
    assert one.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(one.streaming_content).decode())))
    assert len(rows) == 24 and rows[-1]["open_time"] == "2025-01-01T23:00:00Z"


def test_an_export_of_exactly_the_limit_is_streamed_whole(api, stored, settings):
    settings.EXPORT_MAX_ROWS = 48
    response = api.get(CANDLES, {"collector": "exp", "format": "csv"})
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content).decode().splitlines()) == 1 + 48
    settings.EXPORT_MAX_ROWS = 47
    narrowed = api.get(CANDLES, {"collector": "exp", "symbol": "ETHUSDT", "start": "2025-01-01T05:00:00Z",
                                 "format": "csv"})
    assert narrowed.status_code == 200
    over = api.get(CANDLES, {"collector": "exp", "format": "csv"}).json()
    assert set(over) >= {"start", "end", "symbol"}
    one_symbol_over = api.get(CANDLES, {"collector": "exp", "symbol": "ETHUSDT", "format": "csv"})
    assert one_symbol_over.status_code == 200  # 24 rows


def test_an_export_of_one_symbol_over_the_limit_names_only_the_time_range(api, stored, settings):
    settings.EXPORT_MAX_ROWS = 10
    body = api.get(CANDLES, {"collector": "exp", "symbol": "BTCUSDT", "format": "csv"}).json()
    assert set(body) & {"start", "end", "symbol"} == {"start", "end"}
    assert "one symbol" not in body["start"][0]


@pytest.mark.parametrize("url", ["/api/admin/runs/", "/api/admin/backfills/", "/api/admin/collectors/",
                                 CANDLES + "?collector=exp"])
def test_list_endpoints_refuse_a_page_size_beyond_their_maximum(api, stored, url):
    joiner = "&" if "?" in url else "?"
    response = api.get(f"{url}{joiner}page_size=100000")
    assert response.status_code == 400 and "page_size" in response.json(), (url, response.content)
