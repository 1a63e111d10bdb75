"""The collection endpoints of API_CONTRACT.md: POST /api/admin/collect/trigger (a run is
queued, or refused naming why) and GET /api/admin/collect/status (what runs, what ran)."""

import threading
from datetime import datetime, timezone as dt_timezone

import pytest
from django.db import connection
from django_q.models import OrmQ
from rest_framework.test import APIClient

from collectors.models import CollectionRun
from tests.collectors.conftest import DAY, STATUS, TRIGGER, collect, field_errors, live_collector
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


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
