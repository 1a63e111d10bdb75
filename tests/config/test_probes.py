"""The probes in-process: /health, /ready and /health/checks/ need no key and report the
database, migrations, cache and workers (test_health.py runs them against real processes)."""

from datetime import datetime, timezone as dt_timezone

import pytest

from collectors.models import CollectionRun
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


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
