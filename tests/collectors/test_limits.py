"""The configuration limits: API rate per key, statement time, batch size, default interval."""

import pytest
from django.db import OperationalError, connection, connections

from collectors.models import ApiKey, Candle
from collectors.storage import upsert_candles
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
H = 3_600_000


def test_each_api_key_gets_api_rate_limit_per_minute(client, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    _, first = ApiKey.objects.create_key(name="first")
    _, second = ApiKey.objects.create_key(name="second")
    answers = [client.get("/api/admin/collectors/", HTTP_X_API_KEY=first).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = client.get("/api/admin/collectors/", HTTP_X_API_KEY=first)
    assert limited.status_code == 429 and "throttled" in limited.json()["detail"].lower()
    assert int(limited["Retry-After"]) <= 60
    assert client.get("/api/admin/collectors/", HTTP_X_API_KEY=second).status_code == 200  # its own count
    assert client.get("/health").status_code == 200  # probes are never throttled
    settings.API_RATE_LIMIT_PER_MINUTE = 0
    assert client.get("/api/admin/collectors/", HTTP_X_API_KEY=first).status_code == 200


def test_pages_are_written_in_batches_of_batch_commit_size(settings, django_assert_num_queries):
    settings.BATCH_COMMIT_SIZE = 7
    collector = CollectorFactory(symbols=["BTCUSDT"])
    rows = [(i * H, "1", "2", "0.5", "1.5", "3", i * H + H - 1, "4", 5, "1", "2") for i in range(20)]
    with django_assert_num_queries(3):  # 7 + 7 + 6 rows
        assert upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=rows) == 20
    assert Candle.objects.count() == 20


def test_a_collector_without_an_interval_uses_collection_interval(settings):
    settings.COLLECTION_INTERVAL = "4h"
    collector = CollectorFactory(config={"base_url": "http://127.0.0.1:9"}, symbols=["BTCUSDT"])
    assert collector.grain.total_seconds() == 4 * 3600


@pytest.mark.skipif(connection.vendor != "mysql", reason="statement limits are MariaDB/MySQL's")
def test_query_timeout_aborts_a_statement_that_runs_too_long(settings):
    settings.QUERY_TIMEOUT = 1
    fresh = connections.create_connection("default")  # connection_created applies the limit
    try:
        with pytest.raises(OperationalError, match="max_statement_time|interrupted"):
            with fresh.cursor() as cursor:
                cursor.execute("SELECT SLEEP(3)")
    finally:
        fresh.close()
