"""The runs endpoints of API_CONTRACT.md: /api/admin/runs/ (list, filters, pages), a run's detail
and its cancel."""

import pytest

from collectors.models import Candle, CollectionRun, RunSymbol
from tests.collectors.conftest import RUNS, STATUS, TRIGGER, collect, field_errors, live_collector
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


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
