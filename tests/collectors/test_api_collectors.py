"""The collectors endpoints of API_CONTRACT.md: /api/admin/collectors/ (list, create) and
/api/admin/collectors/{slug}/ (read, patch; no replace or delete)."""

import pytest

from collectors.models import CollectionRun, Collector
from tests.collectors.conftest import COLLECTORS, field_errors
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


NEW_COLLECTOR = {"slug": "binance-spot-1h", "name": "Binance spot, hourly", "kind": "binance_klines",
                 "config": {"base_url": "https://api.binance.com", "interval": "1h"},
                 "symbols": ["BTCUSDT", "ETHUSDT"], "beginning_date": "2025-01-01",
                 "schedule": "0 */6 * * *", "enabled": True}


def test_collectors_are_listed_with_their_settings_and_last_run(api):
    collector = CollectorFactory(slug="binance-a", schedule="0 * * * *")
    run = RunFactory(collector=collector, status=CollectionRun.FAILED)
    CollectorFactory(slug="binance-b")

    body = api.get(COLLECTORS).json()

    assert [c["slug"] for c in body["results"]] == ["binance-a", "binance-b"]
    first = body["results"][0]
    assert (first["kind"], first["symbols"], first["schedule"], first["enabled"]) == (
        "binance_klines", ["BTCUSDT", "ETHUSDT"], "0 * * * *", True)
    assert first["config"] == collector.config
    assert first["last_run"]["id"] == run.pk and first["last_run"]["status"] == "failed"
    assert body["results"][1]["last_run"] is None
    assert api.get(f"{COLLECTORS}binance-a/").json() == first


def test_collector_secrets_are_masked(api):
    CollectorFactory(slug="with-secrets", config={"base_url": "http://127.0.0.1:9", "interval": "1h",
                                                  "api_secret": "s3cr3t", "auth": {"password": "hunter2"}})

    body = api.get(f"{COLLECTORS}with-secrets/")

    assert "s3cr3t" not in body.content.decode() and "hunter2" not in body.content.decode()
    assert body.json()["config"]["api_secret"] == "********"
    assert body.json()["config"]["base_url"] == "http://127.0.0.1:9"


def test_create_a_collector(api):
    response = api.post(COLLECTORS, NEW_COLLECTOR, format="json")

    assert response.status_code == 201, response.json()
    collector = Collector.objects.get(slug="binance-spot-1h")
    assert (collector.name, collector.symbols, collector.config["interval"]) == (
        "Binance spot, hourly", ["BTCUSDT", "ETHUSDT"], "1h")
    assert response.json()["slug"] == "binance-spot-1h" and response.json()["last_run"] is None


def test_create_a_collector_of_the_most_traded_symbols(api):
    body = {**NEW_COLLECTOR, "symbols": [], "config": {"interval": "1d", "top_n": 100, "quote_asset": "USDT"}}

    response = api.post(COLLECTORS, body, format="json")

    assert response.status_code == 201, response.json()
    collector = Collector.objects.get()
    assert collector.symbols == []
    assert collector.config == {"base_url": "https://api.binance.com", "interval": "1d", "top_n": 100,
                                "quote_asset": "USDT"}


@pytest.mark.parametrize("changes, field, names", [
    ({"kind": "coinbase_trades"}, "kind", ""),
    ({"kind": None}, "kind", ""),
    ({"config": {"interval": "1h", "colour": "blue"}}, "config", "colour"),
    ({"config": {"interval": "7m"}}, "config", "interval"),
    ({"config": {"interval": ["1h"]}}, "config", ""),
    ({"config": {"interval": {"every": "1h"}}}, "config", ""),
    ({"config": {"base_url": "ftp://example.com"}}, "config", "base_url"),
    ({"config": {"base_url": 12}}, "config", "base_url"),
    ({"config": {"base_url": "http://[abc/api"}}, "config", "base_url"),
    ({"config": {"base_url": "http://example.com:99999"}}, "config", "base_url"),
    ({"config": {"base_url": "http://:80"}}, "config", "base_url"),
    ({"config": {"top_n": 10}}, "config", "top_n"),
    ({"config": {"top_n": "ten"}, "symbols": []}, "config", "top_n"),
    ({"config": {"top_n": 10, "quote_asset": ["USDT"]}, "symbols": []}, "config", "quote_asset"),
    ({"config": ["interval", "1h"]}, "config", ""),
    ({"config": "interval=1h"}, "config", ""),
    ({"symbols": []}, "symbols", ""),
    ({"symbols": "BTCUSDT"}, "symbols", ""),
    ({"symbols": ["BTC-USDT"]}, "symbols", ""),
    ({"symbols": ["BTCUSDT", "btcusdt"]}, "symbols", ""),
    ({"symbols": [1, 2]}, "symbols", ""),
    ({"slug": "not a slug"}, "slug", ""),
    ({"slug": "bînance"}, "slug", ""),
    ({"slug": ""}, "slug", ""),
    ({"name": ""}, "name", ""),
    ({"name": None}, "name", ""),
    ({"beginning_date": "2025-02-30"}, "beginning_date", ""),
    ({"beginning_date": "soon"}, "beginning_date", ""),
    ({"schedule": "every six hours"}, "schedule", ""),
    ({"schedule": "61 * * * *"}, "schedule", ""),
    ({"enabled": "maybe"}, "enabled", ""),
    ({"max_retries": -1}, "max_retries", ""),
    ({"max_retries": "lots"}, "max_retries", ""),
    ({"retry_backoff_seconds": "NaN"}, "retry_backoff_seconds", ""),
    ({"retry_backoff_seconds": -1}, "retry_backoff_seconds", ""),
    ({"interval": "1h"}, "interval", ""),
])
def test_create_a_collector_with_bad_input_is_400_naming_the_field(api, changes, field, names):
    response = api.post(COLLECTORS, {**NEW_COLLECTOR, **changes}, format="json")

    assert response.status_code == 400, response.content
    errors = field_errors(response)
    assert field in errors
    assert names in " ".join(map(str, errors[field]))
    assert not Collector.objects.exists()


def test_create_a_collector_that_loses_a_race_for_its_slug_is_409(api, monkeypatch):
    CollectorFactory(slug="binance-spot-1h")
    # As if another request created the same slug between the check and the INSERT.
    monkeypatch.setattr("rest_framework.validators.UniqueValidator.__call__", lambda *args: None)

    response = api.post(COLLECTORS, NEW_COLLECTOR, format="json")

    assert response.status_code == 409
    assert "detail" in field_errors(response)
    assert Collector.objects.count() == 1


def test_create_a_collector_whose_slug_is_taken_is_400(api):
    CollectorFactory(slug="binance-spot-1h")

    response = api.post(COLLECTORS, NEW_COLLECTOR, format="json")

    assert response.status_code == 400
    assert "slug" in field_errors(response)


@pytest.mark.parametrize("raw", ["[]", "{oops", "null", '"binance"'])
def test_create_a_collector_from_a_body_that_is_not_an_object_is_400(api, raw):
    response = api.generic("POST", COLLECTORS, raw, content_type="application/json")

    assert response.status_code == 400
    assert field_errors(response)


def test_patch_changes_only_what_is_sent(api):
    collector = CollectorFactory(slug="binance-a", config={"base_url": "http://127.0.0.1:9", "interval": "1h"})

    response = api.patch(f"{COLLECTORS}binance-a/", {"enabled": False, "config": {"interval": "1d"}},
                         format="json")

    assert response.status_code == 200, response.json()
    collector.refresh_from_db()
    assert collector.enabled is False
    assert collector.config == {"base_url": "http://127.0.0.1:9", "interval": "1d"}
    assert collector.symbols == ["BTCUSDT", "ETHUSDT"]


def test_patch_can_switch_from_a_symbols_list_to_top_n(api):
    collector = CollectorFactory()

    response = api.patch(f"{COLLECTORS}{collector.slug}/", {"symbols": [], "config": {"top_n": 5}},
                         format="json")

    assert response.status_code == 200, response.json()
    collector.refresh_from_db()
    assert (collector.symbols, collector.config["top_n"], collector.config["quote_asset"]) == ([], 5, "USDT")


def test_patch_changing_the_slug_is_400(api):
    collector = CollectorFactory(slug="binance-a")

    response = api.patch(f"{COLLECTORS}binance-a/", {"slug": "binance-z"}, format="json")

    assert response.status_code == 400
    assert "slug" in field_errors(response)
    assert Collector.objects.get(pk=collector.pk).slug == "binance-a"


@pytest.mark.parametrize("changes, field", [
    ({"config": {"colour": "blue"}}, "config"),
    ({"config": {"interval": "2y"}}, "config"),
    ({"config": {"top_n": 10}}, "config"),  # symbols are still set
    ({"symbols": ["not a symbol"]}, "symbols"),
    ({"kind": "rss"}, "kind"),
    ({"enabled": None}, "enabled"),
])
def test_patch_with_a_config_the_kind_rejects_is_400_and_changes_nothing(api, changes, field):
    collector = CollectorFactory()
    before = Collector.objects.filter(pk=collector.pk).values().get()

    response = api.patch(f"{COLLECTORS}{collector.slug}/", changes, format="json")

    assert response.status_code == 400, response.content
    assert field in field_errors(response)
    assert Collector.objects.filter(pk=collector.pk).values().get() == before


def test_collector_cannot_be_replaced_or_deleted(api):
    collector = CollectorFactory()

    assert api.put(f"{COLLECTORS}{collector.slug}/", NEW_COLLECTOR, format="json").status_code == 405
    assert api.delete(f"{COLLECTORS}{collector.slug}/").status_code == 405
    assert Collector.objects.filter(pk=collector.pk).exists()


@pytest.mark.parametrize("slug", ["no-such-collector", "bînance"])
def test_unknown_collector_is_a_json_404(api, slug):
    response = api.get(f"{COLLECTORS}{slug}/")

    assert response.status_code == 404
    assert "detail" in field_errors(response)


@pytest.mark.parametrize("interval", ["3d", "1w", "1M"])
def test_intervals_off_the_epoch_grid_are_refused_with_a_reason(api, interval):
    body = {"slug": f"grid-{interval.lower()}", "name": "x", "kind": "binance_klines",
            "config": {"interval": interval}, "symbols": ["BTCUSDT"]}
    response = api.post("/api/admin/collectors/", body, format="json")
    assert response.status_code == 400 and "interval" in str(response.json()["config"])
