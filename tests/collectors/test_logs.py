"""Run events and logs: stored per run, served by the API, traceable by request_id, key-free."""

from datetime import datetime, timedelta, timezone

import pytest
import requests

from collectors import services
from collectors.models import ApiKey, CollectionRun, RunEvent
from tests.e2e import free_port, start_qcluster, start_web, wait_for
from tests.factories import CollectorFactory


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.django_db
def test_a_runs_lines_become_events_that_the_api_filters(api, emulator):
    collector = CollectorFactory(slug="ev", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "NOSUCHUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=utc(2025, 1, 1), end=utc(2025, 1, 2))
    services.run_start(run_id=run.pk, inline=True)
    events = list(RunEvent.objects.filter(run=run).order_by("id").values_list("event", "symbol", "level"))
    assert [e[0] for e in events[:2]] == ["run_triggered", "run_started"] and events[-1][0] == "run_finished"
    assert ("symbol_finished", "BTCUSDT", "info") in events and ("fetch_failed", "NOSUCHUSDT", "warning") in events
    body = api.get(f"/api/admin/logs/?run_id={run.pk}&level=warning").json()
    assert [(e["event"], e["symbol"]) for e in body] == [("fetch_failed", "NOSUCHUSDT")]
    assert "invalid symbol" in body[0]["fields"]["error"] and body[0]["collector"] == "ev"
    assert len(api.get("/api/admin/logs/?limit=2").json()) == 2
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert api.get(f"/api/admin/logs/?since={later}").json() == []
    for query, field in (("level=loud", "level"), ("limit=0", "limit"), ("since=yesterday", "since"),
                         ("run=1", "run")):
        response = api.get(f"/api/admin/logs/?{query}")
        assert response.status_code == 400 and field in response.json(), query
    RunEvent.objects.update(created_at=datetime.now(timezone.utc) - timedelta(days=400))
    assert services.retention_prune() == len(events) and not RunEvent.objects.exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_one_request_id_finds_a_run_in_every_process_and_no_log_holds_the_key(emulator, tmp_path):
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
    emulator.configure(symbols=symbols, slow_ms=20)
    CollectorFactory(slug="trace", config={"base_url": emulator.url, "interval": "1h"}, symbols=symbols)
    _, key = ApiKey.objects.create_key(name="trace")
    port = free_port()
    web, worker = start_web(tmp_path, port), start_qcluster(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        trigger = requests.post(f"{base}/api/admin/collect/trigger?api_key={key}", timeout=10, json={
            "mode": "backward", "collector": "trace", "start_date": "2025-01-01", "end_date": "2025-03-01"})
        assert trigger.status_code == 202, trigger.text
        run_id = trigger.json()["run_id"]
        wait_for(lambda: not CollectionRun.objects.get(pk=run_id).is_active, timeout=60, what="the run")
        request_id = CollectionRun.objects.get(pk=run_id).request_id
        events = requests.get(f"{base}/api/admin/logs/?request_id={request_id}&limit=1000",
                              headers={"X-API-Key": key}, timeout=10).json()
        assert requests.get(f"{base}/api/admin/nothing?api_key={key}", timeout=10).status_code == 404
    finally:
        web.stop()
        worker.stop()
    assert request_id and len(request_id) >= 32
    # The web's request line and every worker line of the run carry the same request_id.
    assert any(request_id in line and "request_started" in line for line in web.output().splitlines())
    worker_lines = [line for line in worker.output().splitlines() if request_id in line]
    for event in ("run_started", "symbol_finished", "run_finished"):
        assert any(f'"event": "{event}"' in line for line in worker_lines), event
    assert sum("symbol_finished" in line for line in worker_lines) == len(symbols)
    assert {e["event"] for e in events} >= {"run_started", "symbol_finished", "run_finished"}
    assert {e["run_id"] for e in events} == {run_id}
    # No log line, access log line or stored event holds the key (nor its secret part).
    secret = key.split(".", 1)[1]
    for name, text in (("web", web.output()), ("worker", worker.output())):
        assert secret not in text, f"the key leaked into the {name} log"
    assert "api_key" not in web.output()  # taken out of the query string before anything logs it
    assert not RunEvent.objects.filter(fields__icontains=secret).exists()
