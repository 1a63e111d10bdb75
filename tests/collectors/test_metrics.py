"""/metrics: collection metrics derived from the database, upstream metrics summed over processes."""

from datetime import datetime, timezone

import pytest
import requests
from django.db.models import Sum
from prometheus_client.parser import text_string_to_metric_families

from collectors import services
from collectors.models import Candle, CircuitBreaker, RunSymbol
from tests.e2e import free_port, start_qcluster, start_web, wait_for
from tests.factories import CollectorFactory


def samples(text, name, **labels):
    """{labels: value} of one metric's samples (counters without the _created ones)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.django_db
def test_collection_metrics_are_the_databases_figures(client, emulator):
    collector = CollectorFactory(slug="m", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=datetime(2025, 1, 1, tzinfo=timezone.utc),
                               end=datetime(2025, 3, 1, tzinfo=timezone.utc))
    services.run_start(run_id=run.pk, inline=True)
    CircuitBreaker.trip("exchange.test:443", until=2e9)
    text = client.get("/metrics").content.decode()
    assert samples(text, "collector_records_total", collector="m", origin="run") == {
        (("collector", "m"), ("origin", "run")): Candle.objects.count()}
    assert sum(samples(text, "collector_requests_total", collector="m").values()) == \
        RunSymbol.objects.aggregate(n=Sum("requests"))["n"] == emulator.stats()["by_path"]["/api/v3/klines"]
    assert samples(text, "collector_runs_total", collector="m", status="complete")
    assert samples(text, "collector_items_total", collector="m", origin="run", status="complete") == {
        (("collector", "m"), ("origin", "run"), ("status", "complete")): 2}
    assert list(samples(text, "collector_circuit_breaker_state", upstream="exchange.test:443",
                        state="open").values()) == [1.0]
    assert samples(text, "collector_metrics_database_up") == {(): 1.0}
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus' own


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_requests_and_records_add_up_on_the_scrape(emulator, tmp_path):
    prom = tmp_path / "prometheus"
    prom.mkdir()
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
    emulator.configure(symbols=symbols, slow_ms=20)  # slow enough that both workers take symbols
    collector = CollectorFactory(slug="m2", config={"base_url": emulator.url, "interval": "1h"}, symbols=symbols)
    port = free_port()
    web = start_web(tmp_path, port, PROMETHEUS_MULTIPROC_DIR=prom)
    worker = start_qcluster(tmp_path, PROMETHEUS_MULTIPROC_DIR=prom, Q_WORKERS=2)
    try:
        run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests",
                                   start=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                   end=datetime(2025, 6, 30, tzinfo=timezone.utc))
        wait_for(lambda: not type(run).objects.get(pk=run.pk).is_active, timeout=120, what="the run")
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        web.stop()
        worker.stop()
    klines = emulator.stats()["by_path"]["/api/v3/klines"]
    upstream = samples(text, "collector_upstream_requests_total", endpoint="/api/v3/klines", status="200")
    assert sum(upstream.values()) == klines == RunSymbol.objects.aggregate(n=Sum("requests"))["n"]
    assert sum(samples(text, "collector_records_total", collector="m2").values()) == Candle.objects.count() \
        == len(symbols) * (180 * 24 + 1)  # the end hour is included
    latency = samples(text, "collector_upstream_request_duration_seconds_count", endpoint="/api/v3/klines")
    assert sum(latency.values()) == klines
    writers = {p.name.split("_")[-1] for p in prom.glob("counter_*.db")}
    assert len(writers) >= 3, writers  # two task workers and at least one web worker wrote counters
