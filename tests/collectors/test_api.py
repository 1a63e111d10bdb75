"""The HTTP API of API_CONTRACT.md: collection, runs, collectors, candles, docs and probes."""

import base64
import csv
import io
import threading
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.db import connection
from django_q.models import OrmQ
from rest_framework.test import APIClient

from collectors import services
from collectors.emulator import kline
from collectors.models import Candle, CollectionRun, Collector, RunSymbol
from collectors.storage import upsert_candles
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db

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


# --- trigger --------------------------------------------------------------------------

def test_trigger_creates_a_queued_run_and_answers_202(api):
    collector = CollectorFactory(slug="binance-spot-1h")

    response = api.post(TRIGGER, {"mode": "backward", "collector": "binance-spot-1h",
                                  "start_date": "2025-01-01T00:00:00Z",
                                  "end_date": "2025-01-31T23:59:59Z", "symbols": ["btcusdt"]},
                        format="json")

    assert response.status_code == 202
    body = response.json()
    run = CollectionRun.objects.get()
    assert body == {"success": True, "message": "Collection task started: backward", "mode": "backward",
                    "run_id": run.pk, "collector": "binance-spot-1h",
                    "status_endpoint": "/api/admin/collect/status"}
    assert (run.collector, run.status, run.mode) == (collector, "queued", "backward")
    assert run.start == DAY
    assert run.end == datetime(2025, 1, 31, 23, 59, 59, tzinfo=dt_timezone.utc)
    assert run.requested_symbols == ["BTCUSDT"]
    assert run.triggered_by == "api:tests"


def test_trigger_hands_the_run_to_the_workers_when_the_transaction_commits(
        api, django_capture_on_commit_callbacks):
    collector = CollectorFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")
        assert OrmQ.objects.count() == 0  # nothing is queued before the run row is committed
    for callback in callbacks:
        callback()

    assert response.status_code == 202
    assert OrmQ.objects.count() == 1
    assert CollectionRun.objects.get(pk=response.json()["run_id"]).task_id != ""


def test_trigger_with_bare_dates_covers_the_whole_end_day(api):
    collector = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "backward", "collector": collector.slug,
                                  "start_date": "2025-01-01", "end_date": "2025-01-14"}, format="json")

    run = CollectionRun.objects.get(pk=response.json()["run_id"])
    assert run.start == DAY
    assert run.end == datetime(2025, 1, 14, 23, 59, 59, 999999, tzinfo=dt_timezone.utc)


def test_trigger_without_collector_uses_the_only_enabled_one(api):
    CollectorFactory(enabled=False)
    enabled = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "gap_fill"}, format="json")

    assert response.status_code == 202
    assert response.json()["collector"] == enabled.slug


def test_trigger_without_collector_when_several_are_enabled_is_400_listing_them(api):
    CollectorFactory(slug="binance-a")
    CollectorFactory(slug="binance-b")

    response = api.post(TRIGGER, {"mode": "forward"}, format="json")

    assert response.status_code == 400
    body = field_errors(response)
    assert "collector" in body and body["choices"] == ["binance-a", "binance-b"]
    assert not CollectionRun.objects.exists()


def test_trigger_for_a_disabled_collector_is_400(api):
    collector = CollectorFactory(enabled=False)

    response = api.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 400
    assert "disabled" in field_errors(response)["collector"][0]


@pytest.mark.parametrize("changes, field", [
    ({"mode": None}, "mode"),
    ({"mode": "sideways"}, "mode"),
    ({"mode": 5}, "mode"),
    ({"mode": ["backward"]}, "mode"),
    ({"mode": {"name": "backward"}}, "mode"),
    ({"collector": "no-such-collector"}, "collector"),
    ({"collector": "bînance-ünicode"}, "collector"),
    ({"collector": ""}, "collector"),
    ({"collector": 123}, "collector"),
    ({"collector": True}, "collector"),
    ({"collector": "x" * 65}, "collector"),
    ({"start_date": "yesterday"}, "start_date"),
    ({"start_date": "2025-02-30"}, "start_date"),
    ({"start_date": "2025-13-01T00:00:00Z"}, "start_date"),
    ({"start_date": "2025-01-01T25:00:00Z"}, "start_date"),
    ({"start_date": 20250101}, "start_date"),
    ({"start_date": ["2025-01-01"]}, "start_date"),
    ({"start_date": "0001-01-01T00:00:00+01:00"}, "start_date"),
    ({"start_date": "1969-12-31"}, "start_date"),
    ({"start_date": "２０２５-01-01"}, "start_date"),
    ({"end_date": "9999-12-31T23:59:59-01:00"}, "end_date"),
    ({"start_date": "2025-02-01", "end_date": "2025-01-01"}, "end_date"),
    ({"start_date": "2999-01-01"}, "start_date"),
    ({"symbols": "BTCUSDT"}, "symbols"),
    ({"symbols": []}, "symbols"),
    ({"symbols": ["DOGEUSDT"]}, "symbols"),
    ({"symbols": ["BTCUSDT", "BTCUSDT"]}, "symbols"),
    ({"symbols": [{"symbol": "BTCUSDT"}]}, "symbols"),
    ({"symbols": [None]}, "symbols"),
    ({"symbols": ["Ω" * 40]}, "symbols"),
    ({"symbols": {"BTCUSDT": True}}, "symbols"),
    ({"symbol": "BTCUSDT"}, "symbol"),
])
def test_trigger_with_bad_input_is_400_naming_the_field(api, changes, field):
    CollectorFactory(slug="binance-spot-1h")
    body = {"mode": "backward", "collector": "binance-spot-1h", **changes}

    response = api.post(TRIGGER, body, format="json")

    assert response.status_code == 400, response.content
    assert field in field_errors(response)
    assert not CollectionRun.objects.exists()


@pytest.mark.parametrize("raw", ["{not json", "[]", '["backward"]', "null", '"backward"', "42", "",
                                 '{"mode": "backward"'])
def test_trigger_body_that_is_not_a_json_object_is_400(api, raw):
    CollectorFactory()

    response = api.generic("POST", TRIGGER, raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert field_errors(response)
    assert not CollectionRun.objects.exists()


def test_trigger_body_in_an_unsupported_encoding_is_a_json_error(api):
    response = api.generic("POST", TRIGGER, b"\xff\xfe{", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in field_errors(response)

    response = api.generic("POST", TRIGGER, "mode=backward", content_type="text/plain")
    assert response.status_code == 415
    assert "detail" in field_errors(response)


def test_trigger_with_some_symbols_of_a_top_n_collector_is_accepted(api):
    collector = CollectorFactory(symbols=[], config={"base_url": "http://127.0.0.1:9", "interval": "1h",
                                                     "top_n": 5, "quote_asset": "USDT"})

    response = api.post(TRIGGER, {"mode": "backward", "collector": collector.slug, "symbols": ["BTCUSDT"]},
                        format="json")

    assert response.status_code == 202, response.json()


def test_trigger_body_larger_than_the_upload_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    collector = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "backward", "collector": collector.slug, "symbols": ["BTCUSDT"] * 200},
                        format="json")

    assert response.status_code == 413
    assert "detail" in field_errors(response)


def test_trigger_while_a_run_is_active_is_409_naming_that_run(api):
    collector = CollectorFactory()
    running = RunFactory(collector=collector, status=CollectionRun.RUNNING)

    response = api.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["success"] is False and body["run_id"] == running.pk and body["message"]
    assert CollectionRun.objects.count() == 1


def test_trigger_for_another_collector_is_not_blocked_by_an_active_run(api):
    RunFactory(status=CollectionRun.RUNNING)
    other = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "forward", "collector": other.slug}, format="json")

    assert response.status_code == 202


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_triggers_give_one_202_and_one_409(admin_key):
    collector = CollectorFactory()
    barrier = threading.Barrier(2)
    statuses, run_ids = [], []

    def trigger():
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=admin_key)
        try:
            barrier.wait(timeout=10)
            response = client.post(TRIGGER, {"mode": "backward", "collector": collector.slug}, format="json")
            statuses.append(response.status_code)
            run_ids.append(response.json()["run_id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [202, 409]
    run = CollectionRun.objects.get()
    assert run_ids == [run.pk, run.pk]  # the 409 names the run the 202 created


# --- status ---------------------------------------------------------------------------

def test_status_is_idle_before_any_run(api):
    response = api.get(STATUS)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "idle" and body["is_running"] is False
    assert body["run_id"] is None and body["last_results"] is None and body["collectors"] == []


def test_status_of_a_queued_run_says_it_is_running_that_mode(api):
    collector = CollectorFactory()
    run_id = api.post(TRIGGER, {"mode": "gap_fill", "collector": collector.slug},
                      format="json").json()["run_id"]

    body = api.get(STATUS, {"collector": collector.slug}).json()

    assert body["run_id"] == run_id
    assert (body["status"], body["is_running"], body["current_operation"]) == ("queued", True, "gap_fill")
    assert body["elapsed_seconds"] is None  # not started by a worker yet


def test_status_after_a_run_gives_the_per_symbol_results(api, emulator):
    collector = live_collector(emulator)
    run_id = collect(api, collector, start="2025-01-01", end="2025-01-02")

    body = api.get(STATUS, {"collector": collector.slug}).json()

    assert (body["run_id"], body["status"], body["is_running"]) == (run_id, "complete", False)
    assert body["current_operation"] is None
    assert body["progress"]["symbols_done"] == body["progress"]["symbols_total"] == 2
    assert body["progress"]["percent"] == 100.0
    results = body["last_results"]
    assert (results["total_cryptos"], results["complete"], results["partial"], results["failed"],
            results["skipped"], results["total_records"]) == (2, 2, 0, 0, 0, 96)
    by_symbol = {d["symbol"]: d for d in results["details"]}
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT"}
    for detail in by_symbol.values():
        assert (detail["status"], detail["records"], detail["retries"]) == ("complete", 48, 0)
        assert detail["missing_ranges"] == [] and detail["error"] is None
        assert detail["requests"] >= 1
    assert emulator.stats()["klines_by_symbol"].keys() == {"BTCUSDT", "ETHUSDT"}


def test_status_after_a_rerun_reports_symbols_already_stored_as_skipped(api, emulator):
    collector = live_collector(emulator)
    collect(api, collector)
    requests_before = emulator.stats()["requests"]

    collect(api, collector)

    results = api.get(STATUS, {"collector": collector.slug}).json()["last_results"]
    assert (results["skipped"], results["total_records"]) == (2, 0)
    assert {d["requests"] for d in results["details"]} == {0}
    assert emulator.stats()["requests"] == requests_before


def test_status_of_a_run_whose_exchange_is_down_names_the_error_and_the_missing_range(api):
    collector = CollectorFactory(config={"base_url": "http://127.0.0.1:9", "interval": "1h"},
                                 max_retries=0, symbols=["BTCUSDT"])
    collect(api, collector, start="2025-01-01", end="2025-01-01")

    body = api.get(STATUS, {"collector": collector.slug}).json()

    assert body["status"] == "failed"
    (detail,) = body["last_results"]["details"]
    assert detail["status"] == "failed" and detail["error"]
    assert detail["missing_ranges"] == [{"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"}]


def test_status_of_a_run_that_failed_for_some_symbols_is_partial(api, emulator):
    collector = live_collector(emulator, max_retries=0)

    def exchange_breaks_after_the_first_symbol(item):
        emulator.configure(error_rate=1.0)

    collect(api, collector, on_symbol_done=exchange_breaks_after_the_first_symbol)

    body = api.get(STATUS, {"collector": collector.slug}).json()
    assert body["status"] == "partial"
    results = body["last_results"]
    assert (results["complete"], results["failed"], results["total_records"]) == (1, 1, 48)


def test_status_without_collector_describes_the_latest_run_and_lists_every_collector(api):
    quiet = CollectorFactory(slug="binance-a")
    busy = CollectorFactory(slug="binance-b")
    done = RunFactory(collector=quiet, status=CollectionRun.COMPLETE,
                      finished_at=datetime(2025, 3, 1, tzinfo=dt_timezone.utc))
    running = RunFactory(collector=busy, status=CollectionRun.RUNNING)

    body = api.get(STATUS).json()

    assert (body["run_id"], body["collector"], body["is_running"]) == (running.pk, "binance-b", True)
    assert body["collectors"] == [
        {"slug": "binance-a", "is_running": False, "status": "complete", "last_run_id": done.pk,
         "last_success_at": "2025-03-01T00:00:00Z"},
        {"slug": "binance-b", "is_running": True, "status": "running", "last_run_id": running.pk,
         "last_success_at": None},
    ]


def test_status_of_one_collector_ignores_the_runs_of_others(api):
    quiet = CollectorFactory()
    RunFactory(status=CollectionRun.RUNNING)

    body = api.get(STATUS, {"collector": quiet.slug}).json()

    assert body["status"] == "idle" and body["run_id"] is None
    assert "collectors" not in body


@pytest.mark.parametrize("slug", ["no-such-collector", "bînance", "a" * 200])
def test_status_of_an_unknown_collector_is_400(api, slug):
    response = api.get(STATUS, {"collector": slug})

    assert response.status_code == 400
    assert "collector" in field_errors(response)


# --- runs -----------------------------------------------------------------------------

def test_runs_are_listed_newest_first_in_pages(api):
    runs = [RunFactory() for _ in range(3)]

    first = api.get(RUNS, {"page_size": 2}).json()
    second = api.get(first["next"]).json()

    assert first["count"] == 3
    assert [r["id"] for r in first["results"] + second["results"]] == [r.pk for r in reversed(runs)]
    assert second["next"] is None
    assert first["results"][0]["collector"] == runs[-1].collector.slug


def test_runs_can_be_filtered_by_collector_status_and_mode(api):
    collector = CollectorFactory()
    wanted = RunFactory(collector=collector, status=CollectionRun.FAILED, mode="forward")
    RunFactory(collector=collector, status=CollectionRun.FAILED, mode="backward")
    RunFactory(collector=collector, status=CollectionRun.COMPLETE, mode="forward")
    RunFactory(status=CollectionRun.FAILED, mode="forward")

    body = api.get(RUNS, {"collector": collector.slug, "status": "failed", "mode": "forward"}).json()

    assert [r["id"] for r in body["results"]] == [wanted.pk]


@pytest.mark.parametrize("params, field", [
    ({"status": "exploded"}, "status"),
    ({"mode": "sideways"}, "mode"),
    ({"collector": "no-such-collector"}, "collector"),
    ({"collector": "bînance"}, "collector"),
    ({"page": "abc"}, "page"),
    ({"page": "0"}, "page"),
    ({"page": "-1"}, "page"),
    ({"page": "1.5"}, "page"),
    ({"page_size": "abc"}, "page_size"),
    ({"page_size": "0"}, "page_size"),
    ({"page_size": "-5"}, "page_size"),
    ({"page_size": "100000"}, "page_size"),
    ({"format": "xml"}, "format"),
])
def test_runs_with_bad_parameters_are_400_naming_the_parameter(api, params, field):
    RunFactory()

    response = api.get(RUNS, params)

    assert response.status_code == 400, response.content
    assert field in field_errors(response)


@pytest.mark.parametrize("page", ["2", "999999999999999999999999999999", "9" * 5000])
def test_runs_page_past_the_end_is_a_json_404(api, page):
    RunFactory()

    response = api.get(RUNS, {"page": page})

    assert response.status_code == 404
    assert "detail" in field_errors(response)


def test_run_detail_gives_the_per_symbol_details(api, emulator):
    collector = live_collector(emulator)
    run_id = collect(api, collector)

    body = api.get(f"{RUNS}{run_id}/").json()

    assert (body["id"], body["status"], body["collector"], body["mode"]) == (run_id, "complete",
                                                                           collector.slug, "backward")
    assert body["start"] == "2025-01-01T00:00:00Z"
    assert [(d["symbol"], d["status"], d["records"]) for d in body["details"]] == [
        ("BTCUSDT", "complete", 48), ("ETHUSDT", "complete", 48)]
    assert body["progress"]["records"] == 96
    assert body["elapsed_seconds"] >= 0 and body["error"] is None


@pytest.mark.parametrize("run_id", ["424242", "99999999999999999999999999"])
def test_unknown_run_is_a_json_404(api, run_id):
    for url in (f"{RUNS}{run_id}/", f"{RUNS}{run_id}/cancel/"):
        response = api.get(url) if not url.endswith("cancel/") else api.post(url)
        assert response.status_code == 404
        assert "detail" in field_errors(response)


def test_cancel_a_queued_run_ends_it_as_cancelled(api):
    run = RunFactory()
    RunSymbol.objects.create(run=run, symbol="BTCUSDT")

    response = api.post(f"{RUNS}{run.pk}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == "cancelled" and run.finished_at is not None
    assert list(run.symbols.values_list("status", flat=True)) == ["cancelled"]
    assert api.get(STATUS, {"collector": run.collector.slug}).json()["status"] == "cancelled"


def test_cancel_stops_a_running_run_and_keeps_what_was_stored(api, emulator):
    collector = live_collector(emulator)

    def cancel_after_the_first_symbol(item):
        if item.symbol == "BTCUSDT":
            assert api.post(f"{RUNS}{item.run_id}/cancel/").status_code == 200

    run_id = collect(api, collector, on_symbol_done=cancel_after_the_first_symbol)

    body = api.get(f"{RUNS}{run_id}/").json()
    assert body["status"] == "cancelled"
    assert [(d["symbol"], d["status"]) for d in body["details"]] == [("BTCUSDT", "complete"),
                                                                   ("ETHUSDT", "cancelled")]
    assert Candle.objects.filter(symbol="BTCUSDT").count() == 48
    assert not Candle.objects.filter(symbol="ETHUSDT").exists()
    assert api.post(TRIGGER, {"mode": "forward", "collector": collector.slug},
                    format="json").status_code == 202  # the collector is free again


def test_cancel_a_finished_run_is_409(api):
    run = RunFactory(status=CollectionRun.COMPLETE)

    response = api.post(f"{RUNS}{run.pk}/cancel/")

    assert response.status_code == 409
    assert response.json()["status"] == "complete" and response.json()["detail"]
    run.refresh_from_db()
    assert run.status == "complete"


# --- collectors -----------------------------------------------------------------------

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


# --- candles --------------------------------------------------------------------------

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


# --- docs, probes, errors -------------------------------------------------------------

def test_schema_documents_every_endpoint_of_the_contract(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/admin/collect/trigger", "/api/admin/collect/status", "/api/admin/runs/",
            "/api/admin/runs/{id}/", "/api/admin/runs/{id}/cancel/", "/api/admin/collectors/",
            "/api/admin/collectors/{slug}/", "/api/admin/candles/", "/health", "/ready"} <= set(schema["paths"])
    trigger = schema["paths"]["/api/admin/collect/trigger"]["post"]
    assert {"202", "400", "409"} <= set(trigger["responses"])
    assert {"ApiKeyHeader", "Bearer"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_their_assets_from_the_installed_packages(client, url):
    response = client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower() and "https://" not in html
    assets = [part.split('"')[0] for attribute in ('src="/static/', 'href="/static/')
              for part in html.split(attribute)[1:]]
    assert assets, "expected script tags pointing at /static/"
    for asset in assets:
        assert finders.find(asset), f"{asset} is not in any installed static directory"


def test_health_needs_no_key_and_reports_the_last_collections(client):
    RunFactory(status=CollectionRun.COMPLETE, finished_at=datetime(2025, 3, 1, tzinfo=dt_timezone.utc))
    RunFactory(status=CollectionRun.FAILED, finished_at=datetime.now(dt_timezone.utc))

    response = client.get("/health", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database_connected"], body["collection_errors"]) == ("healthy", True, 1)
    assert body["last_successful_collection"] == "2025-03-01T00:00:00Z"
    assert body["last_collection"] > body["last_successful_collection"]
    assert {"timestamp", "service", "version", "uptime_seconds"} <= set(body)


def test_health_is_503_when_the_database_is_unusable(client, monkeypatch):
    monkeypatch.setattr("config.views._collection_facts", lambda: 1 / 0)

    response = client.get("/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


def test_ready_needs_no_key_and_checks_database_migrations_and_cache(client, emulator):
    # No worker cluster runs here and the exchange is down: reported, but still ready.
    CollectorFactory(config={"base_url": "http://127.0.0.1:9", "interval": "1h"})
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready", "checks": {"database": True, "migrations": True, "cache": True, "workers": False},
        "problems": ["workers: Unavailable: no django-q2 cluster is alive: start `manage.py qcluster`"]}
    assert client.get("/health").json()["workers_alive"] is False


def test_the_checks_page_fails_without_a_worker_cluster(client, monkeypatch):
    response = client.get("/health/checks/?format=json")
    assert response.status_code == 500
    body = response.json()
    assert body["Database(alias='default')"] == "OK" and "no django-q2 cluster" in body["WorkerClusters()"]
    monkeypatch.setattr("django_q.status.Stat.get_all", staticmethod(lambda broker=None: ["cluster"]))
    assert client.get("/health/checks/?format=json").status_code == 200


def test_ready_is_503_when_a_migration_is_missing(client, monkeypatch):
    monkeypatch.setattr("django.db.migrations.executor.MigrationExecutor.migration_plan",
                        lambda self, targets: [("collectors", "9999_new")])
    response = client.get("/ready")
    assert response.status_code == 503 and response.json()["checks"]["migrations"] is False
    assert "1 migration(s) not applied" in response.json()["problems"][0]


def test_schema_generates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


def test_an_unexpected_error_is_a_json_500_without_details(api, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("collectors.services.run_trigger", crash)
    collector = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal error; it has been logged."}


def test_unknown_paths_and_methods_answer_json(api):
    missing = api.get("/api/admin/nothing-here/")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}

    wrong_method = api.get(TRIGGER)
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


@pytest.mark.parametrize("interval", ["3d", "1w", "1M"])
def test_intervals_off_the_epoch_grid_are_refused_with_a_reason(api, interval):
    body = {"slug": f"grid-{interval.lower()}", "name": "x", "kind": "binance_klines",
            "config": {"interval": interval}, "symbols": ["BTCUSDT"]}
    response = api.post("/api/admin/collectors/", body, format="json")
    assert response.status_code == 400 and "interval" in str(response.json()["config"])


@pytest.mark.parametrize("method, path, body, field", [
    ("post", "/api/admin/collect/trigger", {"mode": "backward", "end_date": "9999-12-31"}, "end_date"),
    ("post", "/api/admin/backfills/estimate/", {"start_date": "2025-01-01", "end_date": "9999-12-31"}, "end_date"),
    ("get", "/api/admin/gaps/?collector={slug}&end=9999-12-31", None, "end"),
    ("get", "/api/admin/logs/?run_id=9223372036854775808", None, "run_id"),
    ("get", "/api/admin/logs/?backfill_id=9223372036854775808", None, "backfill_id"),
])
def test_far_future_dates_and_huge_ids_are_400s_naming_the_field(api, method, path, body, field):
    collector = CollectorFactory(symbols=["BTCUSDT"])
    if body is not None:
        body = {**body, "collector": collector.slug}
    response = getattr(api, method)(path.format(slug=collector.slug), body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


def test_a_gap_report_for_an_unknown_or_malformed_symbol_is_a_400_naming_it(api):
    CollectorFactory(slug="gaps-400", symbols=["BTCUSDT"])
    for symbol in ("NOSUCHUSDT", "<b>x</b>"):
        answer = api.get("/api/admin/gaps/", {"collector": "gaps-400", "symbol": symbol})
        assert answer.status_code == 400 and "symbols" in answer.json(), (symbol, answer.content[:200])


def test_a_json_body_nested_thousands_deep_is_a_400_not_a_500(api):
    body = "[" * 5000 + "]" * 5000
    answer = api.post("/api/admin/collect/trigger", data=body, content_type="application/json")
    assert answer.status_code == 400 and "nested too deep" in answer.json()["detail"]
