"""The candles endpoint of API_CONTRACT.md: /api/admin/candles/ as JSON pages and as a CSV
stream, exactly the strings the exchange served, and its parameters checked."""

import base64
import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from collectors.storage import upsert_candles
from tests.collectors.conftest import (
    CANDLES,
    DAY,
    HOUR_MS,
    collect,
    field_errors,
    live_collector,
    ms,
    served,
)
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db


def test_candles_are_what_the_exchange_served_oldest_first(api, emulator):
    collector = live_collector(emulator)
    collect(api, collector)

    body = api.get(CANDLES, {"collector": collector.slug, "symbol": "ethusdt"}).json()

    rows = body["results"]
    assert len(rows) == 48 and body["next"] is None
    assert [r["open_time"] for r in rows[:2]] == ["2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z"]
    assert rows[0]["close_time"] == "2025-01-01T00:59:59.999000Z"
    for index, row in enumerate(rows):
        assert {k: row[k] for k in served("ETHUSDT", DAY)} == served("ETHUSDT", DAY + timedelta(hours=index))
        assert row["symbol"] == "ETHUSDT" and row["interval"] == "1h"


def test_candle_pages_walk_every_row_once_in_order(api, emulator):
    collector = live_collector(emulator)
    collect(api, collector)

    seen, url, params = [], CANDLES, {"collector": collector.slug, "page_size": 7}
    while url:
        body = api.get(url, params).json()
        seen += [(r["open_time"], r["symbol"]) for r in body["results"]]
        url, params = body["next"], None

    assert len(seen) == 96 and seen == sorted(set(seen))


def test_candles_between_start_and_end(api, emulator):
    collector = live_collector(emulator)
    collect(api, collector)

    body = api.get(CANDLES, {"collector": collector.slug, "symbol": "BTCUSDT",
                             "start": "2025-01-01T22:00:00Z", "end": "2025-01-02T01:00:00Z"}).json()
    assert [r["open_time"][11:16] for r in body["results"]] == ["22:00", "23:00", "00:00", "01:00"]

    whole_day = api.get(CANDLES, {"collector": collector.slug, "symbol": "BTCUSDT", "start": "2025-01-02",
                                  "end": "2025-01-02"}).json()
    assert len(whole_day["results"]) == 24


def test_candles_as_csv_stream_every_row_with_the_exchange_strings(api, emulator):
    collector = live_collector(emulator)
    collect(api, collector)

    response = api.get(CANDLES, {"collector": collector.slug, "symbol": "BTCUSDT", "format": "csv",
                                 "page_size": 5})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 48  # not paginated
    for index, row in enumerate(rows):
        expected = served("BTCUSDT", DAY + timedelta(hours=index))
        assert {k: row[k] for k in expected} == {k: str(v) for k, v in expected.items()}
    assert rows[0]["open_time"] == "2025-01-01T00:00:00Z"


def test_zero_and_tiny_decimals_are_never_written_in_exponent_notation(api):
    collector = CollectorFactory(symbols=["SHIBUSDT"])
    upsert_candles(collector_id=collector.pk, symbol="SHIBUSDT", interval="1h", rows=[
        (ms(DAY), "0.00000001", "0.00002000", "0.00000001", "0.00001000", "0.00000000",
         ms(DAY) + HOUR_MS - 1, "123456789012345678.12345678", 0, "0.00000000", "0.00000000")])

    row = api.get(CANDLES, {"collector": collector.slug}).json()["results"][0]
    text = b"".join(api.get(CANDLES, {"collector": collector.slug, "format": "csv"}).streaming_content)

    assert (row["open"], row["high"], row["close"], row["volume"], row["quote_volume"]) == (
        "0.00000001", "0.00002000", "0.00001000", "0.00000000", "123456789012345678.12345678")
    assert b"0.00000001,0.00002000,0.00000001,0.00001000,0.00000000," in text
    assert b"E-" not in text
    assert Decimal(row["quote_volume"]) == Decimal("123456789012345678.12345678")


def bogus_cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


BAD_CANDLE_FILTERS = [
    ({"collector": None}, "collector"),
    ({"collector": ""}, "collector"),
    ({"collector": "no-such-collector"}, "collector"),
    ({"collector": "bînance"}, "collector"),
    ({"symbol": "DOGEUSDT"}, "symbol"),
    ({"symbol": "Ω" * 10}, "symbol"),
    ({"symbol": "x" * 100}, "symbol"),
    ({"start": "last tuesday"}, "start"),
    ({"end": "2025-02-30"}, "end"),
    ({"start": "2025-02-01", "end": "2025-01-01"}, "end"),
]


@pytest.mark.parametrize("params, field", BAD_CANDLE_FILTERS + [
    ({"cursor": "bogus"}, "cursor"),
    ({"cursor": "%%%"}, "cursor"),
    ({"cursor": bogus_cursor("p=not-a-time")}, "cursor"),
    ({"cursor": bogus_cursor("o=abc")}, "cursor"),
    ({"cursor": bogus_cursor("r=x")}, "cursor"),
    ({"page_size": "abc"}, "page_size"),
    ({"page_size": "0"}, "page_size"),
    ({"format": "xml"}, "format"),
])
def test_candles_with_bad_parameters_are_400_naming_the_parameter(api, params, field):
    collector = CollectorFactory(slug="binance-a")
    params = {k: v for k, v in {"collector": collector.slug, **params}.items() if v is not None}

    response = api.get(CANDLES, params)

    assert response.status_code == 400, response.content
    assert field in field_errors(response)


@pytest.mark.parametrize("params, field", BAD_CANDLE_FILTERS)
def test_candles_as_csv_with_bad_parameters_are_a_json_400_not_a_csv_file(api, params, field):
    collector = CollectorFactory(slug="binance-a")
    params = {k: v for k, v in {"collector": collector.slug, "format": "csv", **params}.items() if v is not None}

    response = api.get(CANDLES, params)

    assert response.status_code == 400, response.content
    assert field in field_errors(response)


def test_candles_of_a_symbol_that_has_data_but_left_the_list_are_still_served(api):
    collector = CollectorFactory(symbols=["BTCUSDT"])
    upsert_candles(collector_id=collector.pk, symbol="LUNAUSDT", interval="1h", rows=[
        (ms(DAY), "1.0", "1.0", "1.0", "1.0", "1.0", ms(DAY) + HOUR_MS - 1, "1.0", 1, "0.5", "0.5")])

    body = api.get(CANDLES, {"collector": collector.slug, "symbol": "LUNAUSDT"}).json()

    assert [r["symbol"] for r in body["results"]] == ["LUNAUSDT"]


def test_candles_of_a_known_symbol_without_data_are_an_empty_page(api):
    collector = CollectorFactory()

    response = api.get(CANDLES, {"collector": collector.slug, "symbol": "BTCUSDT"})

    assert response.status_code == 200
    assert response.json()["results"] == []
