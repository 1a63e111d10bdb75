"""Two qcluster processes sharing a Redis broker (as if on two machines) run one backfill;
one of them is killed with SIGKILL midway and restarted."""

import time
from datetime import datetime, timezone

import pytest
import redis
import requests

from backfills.models import BackfillChunk, BackfillJob
from collectors.emulator import kline
from collectors.models import ApiKey, Candle
from tests.e2e import free_port, start_qcluster, start_web, wait_for
from tests.factories import CollectorFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
REDIS_URL = "redis://127.0.0.1:6379/15"
HOUR_MS = 3_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT"]


def test_two_machines_share_one_backfill_survive_a_kill_and_stay_within_the_budget(emulator, tmp_path):
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.ConnectionError:
        pytest.fail("Redis must run at 127.0.0.1:6379 for the scale-out test")
    emulator.configure(window_seconds=1, weight_limit=24, slow_ms=20)
    collector = CollectorFactory(slug="scale", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=SYMBOLS)
    _, key = ApiKey.objects.create_key(name="scale-out")
    shared = {"REDIS_URL": REDIS_URL, "EXCHANGE_WEIGHT_BUDGET": 24, "EXCHANGE_WEIGHT_WINDOW_SECONDS": 1,
              "BACKFILL_BATCH_SIZE": 2000}
    port = free_port()
    web = start_web(tmp_path, port, **shared)
    machine_a = start_qcluster(tmp_path, "machine-a", WORKER_NAME="machine-a", **shared)
    machine_b = start_qcluster(tmp_path, "machine-b", WORKER_NAME="machine-b", **shared)
    try:
        body = {"collector": "scale", "start_date": "2024-01-01", "end_date": "2024-12-31"}
        created = requests.post(f"http://127.0.0.1:{port}/api/admin/backfills/", json=body,
                                headers={"X-API-Key": key}, timeout=30)
        assert created.status_code == 202, created.text
        job = BackfillJob.objects.get(pk=created.json()["backfill_id"])
        chunks = BackfillChunk.objects.filter(job=job)
        wait_for(lambda: chunks.filter(status="complete", claimed_by__startswith="machine-a").exists()
                 and chunks.filter(status="pending").count() > 5, timeout=60, what="both machines to work")
        machine_a.kill_group()
        done_before_kill = dict(chunks.filter(status="complete").values_list("pk", "requests"))
        time.sleep(3.5)  # the killed machine's lease runs out (RUN_LEASE_SECONDS=3)
        machine_a = start_qcluster(tmp_path, "machine-a-restarted", WORKER_NAME="machine-a", **shared)
        wait_for(lambda: BackfillJob.objects.get(pk=job.pk).status not in BackfillJob.ACTIVE,
                 timeout=120, what="the backfill to finish")
    finally:
        for process in (machine_a, machine_b, web):
            process.stop()
    job.refresh_from_db()
    assert job.status == BackfillJob.COMPLETE, job.error
    # Every chunk was fetched by one worker, once; only chunks the kill interrupted were resumed
    # (one whose pages were all stored before the kill finds nothing missing: skipped).
    assert {c.split(":")[0] for c in chunks.values_list("claimed_by", flat=True)} == {"machine-a", "machine-b"}
    resumed = chunks.filter(attempts__gt=1).count()
    assert set(chunks.filter(attempts=1).values_list("status", flat=True)) == {"complete"}
    assert set(chunks.filter(attempts__gt=1).values_list("status", flat=True)) <= {"complete", "skipped"}
    assert chunks.filter(attempts=1).count() + resumed == chunks.count() and resumed <= 2
    assert dict(chunks.filter(pk__in=done_before_kill).values_list("pk", "requests")) == done_before_kill
    assert set(chunks.filter(pk__in=done_before_kill).values_list("attempts", flat=True)) == {1}
    stats = emulator.stats()
    sent = sum(stats["klines_by_symbol"].values())
    assert job.estimated_requests <= sent <= job.estimated_requests + resumed
    # The two machines together kept within the shared budget.
    assert stats["max_window_weight"] <= 24 and stats["over_limit"] == 0
    # Exact data, every hour once.
    expected = list(range(int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000),
                          int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1000), HOUR_MS))
    for symbol in SYMBOLS:
        rows = list(Candle.objects.filter(collector=collector, symbol=symbol).order_by("open_time")
                    .values_list("open_time", "close"))
        assert [int(t.timestamp() * 1000) for t, _ in rows] == expected, symbol
        for open_time, close in rows[::97]:
            assert format(close, "f") == kline(symbol, "1h", int(open_time.timestamp() * 1000))[4]
