"""POST /api/admin/validate-data/: the collector's ingest rules, applied without storing."""

from datetime import datetime, timezone

import pytest

from collectors.models import Candle
from quality.models import QuarantinedRow
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
H = 3_600_000
T = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def kline(open_ms=T, o="100.0", h="101.0", low="99.0", c="100.5", volume="12.5", trades=42):
    return [open_ms, o, h, low, c, volume, open_ms + H - 1, "1250.0", trades, "6.0", "600.0", "0"]


def validate(api, records, collector="q"):
    return api.post("/api/admin/validate-data/", {"collector": collector, "records": records}, format="json")


@pytest.fixture
def collector():
    return CollectorFactory(slug="q", config={"interval": "1h"}, symbols=["BTCUSDT"])


def test_each_record_gets_every_rule_it_breaks_and_nothing_is_stored(api, collector):
    named = dict(zip(["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                      "trades", "taker_buy_base_volume", "taker_buy_quote_volume"], kline(), strict=False))
    records = [kline(), kline(h="98.0", low="100.2"), kline(open_ms=T + 1, volume="-1"), named,
               {**named, "high": None}, {**named, "low": 98.5}, kline()[:5]]
    response = validate(api, records)
    assert response.status_code == 200, response.content
    body = response.json()
    rules = [[e["rule"] for e in r["errors"]] for r in body["results"]]
    assert rules == [[], ["high_below_open_close", "low_above_open_close"],
                     ["negative_volume", "misaligned_time"], [], ["missing_field"], [],
                     ["missing_field"]]
    assert body["results"][4]["errors"][0]["field"] == "high"
    assert "Missing required field: high" in body["results"][4]["errors"][0]["message"]
    assert (body["records"], body["valid_records"], body["invalid_records"]) == (7, 3, 4)
    assert not Candle.objects.exists() and not QuarantinedRow.objects.exists()


def test_a_collector_with_rules_off_only_checks_what_storage_needs(api):
    CollectorFactory(slug="raw", config={"interval": "1h", "validate": False}, symbols=["BTCUSDT"])
    body = validate(api, [kline(h="1"), kline(o="abc")], collector="raw").json()
    assert body["rules_enabled"] is False
    assert [[e["rule"] for e in r["errors"]] for r in body["results"]] == [[], ["not_numeric"]]


@pytest.mark.parametrize("payload, field", [
    ({"collector": "q"}, "records"),
    ({"collector": "q", "records": []}, "records"),
    ({"collector": "q", "records": "x"}, "records"),
    ({"collector": "nope", "records": [[1]]}, "collector"),
    ({"records": [[1]]}, "collector"),
    ({"collector": "q", "records": [[1]], "record": 1}, "record"),
    ({"collector": "q", "records": [[1]] * 10_001}, "records"),
])
def test_bad_requests_are_400s_that_name_the_field(api, collector, payload, field):
    response = api.post("/api/admin/validate-data/", payload, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


def test_a_read_key_may_not_validate_and_no_key_is_401(client, read_key, collector):
    assert client.post("/api/admin/validate-data/", {}, content_type="application/json").status_code == 401
    response = client.post("/api/admin/validate-data/", {"collector": "q", "records": [kline()]},
                           content_type="application/json", HTTP_X_API_KEY=read_key)
    assert response.status_code == 403
