"""GET /api/admin/performance/ and /api/admin/system/info."""

from datetime import datetime, timezone

import pytest

from collectors import services
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db


def test_performance_sums_up_the_last_runs_and_measures_latencies(api, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "NOSUCHUSDT"])
    for symbols in (["BTCUSDT"], ["NOSUCHUSDT"]):
        run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                                   symbols=symbols, start=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                   end=datetime(2025, 1, 2, tzinfo=timezone.utc))
        services.run_start(run_id=run.pk, inline=True)
    body = api.get("/api/admin/performance/").json()
    assert (body["runs"], body["success_rate"], body["error_rate"]) == (2, 0.5, 0.5)
    assert body["records"] == 25 and body["avg_collection_time"] >= 0
    assert body["database_latency"] > 0 and body["api_latency"] > 0  # this process made the requests
    assert body["memory_usage_mb"] > 10 and 0 <= body["cpu_usage_percent"] <= 100


def test_system_info_names_the_database_broker_and_collectors(api, emulator):
    CollectorFactory(slug="info", symbols=["BTCUSDT"])
    body = api.get("/api/admin/system/info").json()
    assert body["database"]["engine"] in ("sqlite", "mysql") and body["database"]["version"]
    assert body["version"] and body["worker_clusters"] == []
    assert [c["slug"] for c in body["collectors"]] == ["info"]


def test_a_read_key_may_look(client, read_key):
    for path in ("/api/admin/performance/", "/api/admin/system/info", "/api/admin/logs/",
                 "/api/admin/circuit-breakers/"):
        assert client.get(path, HTTP_X_API_KEY=read_key).status_code == 200, path
        assert client.get(path).status_code == 401, path
