"""The circuit breaker per upstream, shared by every worker through the database."""

import threading
import time
from datetime import datetime, timezone

import pytest

from collectors import services
from collectors.http import Upstream
from collectors.models import CircuitBreaker
from collectors.sources import SourceError
from tests.factories import CollectorFactory

KEY = "exchange.test:443"


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.django_db
def test_states_follow_failures_probes_and_bans():
    fail = dict(threshold=3, timeout=10)
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=100) == 0  # no row: closed
    assert not CircuitBreaker.record_failure(KEY, now=100, **fail)
    assert not CircuitBreaker.record_failure(KEY, now=100, **fail)
    CircuitBreaker.record_success(KEY)  # consecutive failures only
    assert [CircuitBreaker.record_failure(KEY, now=101, **fail) for _ in range(3)] == [False, False, True]
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=105) == pytest.approx(6)
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=111) == 0  # this caller probes
    assert CircuitBreaker.objects.get().state == "half_open"
    assert 0 < CircuitBreaker.acquire(KEY, probe_seconds=5, now=111.5) <= 1  # the others wait
    assert CircuitBreaker.record_failure(KEY, now=112, **fail)  # a failed probe reopens at once
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=113) == pytest.approx(9)
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=122) == 0
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=128) == 0  # the prober went quiet: retake
    CircuitBreaker.record_success(KEY)
    assert CircuitBreaker.objects.get().state == "closed" and CircuitBreaker.acquire(KEY, probe_seconds=5) == 0
    assert CircuitBreaker.trip(KEY, until=500, now=200)  # a ban
    assert not CircuitBreaker.trip(KEY, until=300, now=201)  # never shortened
    assert CircuitBreaker.acquire(KEY, probe_seconds=5, now=400) == pytest.approx(100)
    assert CircuitBreaker.objects.get().times_opened == 3


@pytest.mark.django_db
def test_against_a_failing_exchange_it_sends_one_probe_per_timeout_then_closes(emulator, settings):
    settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD, settings.CIRCUIT_BREAKER_TIMEOUT = 3, 1.0
    emulator.configure(error_rate=1.0, error_statuses=[503])
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"],
                                 max_retries=6, retry_backoff_seconds=0.05)
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=utc(2025, 1, 1), end=utc(2025, 1, 1, 23))
    began = time.monotonic()
    services.run_start(run_id=run.pk, inline=True)
    elapsed = time.monotonic() - began
    sent = emulator.stats()["by_path"]["/api/v3/klines"]
    # 3 failures open it; the symbol waits out the timeout once, its probe fails, and it gives up
    # (partial, resumable) instead of queueing behind the breaker.
    assert sent == 4 and 1.0 - 0.1 <= elapsed < 3, (sent, elapsed)
    breaker = CircuitBreaker.objects.get(key=emulator.url.split("//")[1])
    assert breaker.state == "open" and breaker.times_opened == 2 and "503" in breaker.last_error
    assert "circuit breaker" in run.symbols.get().error
    run.refresh_from_db()
    assert run.status == "failed"
    emulator.configure(error_rate=0.0)
    time.sleep(1.0)
    retry = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                                 start=utc(2025, 1, 1), end=utc(2025, 1, 1, 23))
    services.run_start(run_id=retry.pk, inline=True)
    retry.refresh_from_db()
    breaker.refresh_from_db()
    assert retry.status == "complete" and breaker.state == "closed" and breaker.failures == 0


@pytest.mark.django_db(transaction=True)
def test_workers_share_one_breaker_and_one_probe(emulator, settings):
    settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD, settings.CIRCUIT_BREAKER_TIMEOUT = 2, 0.5
    emulator.configure(error_rate=1.0, error_statuses=[500])
    errors = []

    def worker():
        upstream = Upstream(emulator.url, retries=3, backoff=0.01)
        try:
            upstream.get_json("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h", "limit": 1})
        except SourceError as error:
            errors.append(error)

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    sent = emulator.stats()["by_path"]["/api/v3/klines"]
    # Before it opens each worker may have one request in flight; after, one probe per 0.5 s.
    assert len(errors) == 3 and sent <= 2 + 2 + elapsed / 0.5 + 1, (sent, elapsed)


@pytest.mark.django_db
def test_a_418_ban_holds_the_breaker_open_until_the_ban_ends(emulator, settings):
    settings.CIRCUIT_BREAKER_TIMEOUT = 0.1  # the ban, not the timeout, must decide
    emulator.configure(ban_after_429s=0, ban_seconds=2)  # the first request gets a 2 s ban
    upstream = Upstream(emulator.url, retries=0)
    with pytest.raises(SourceError, match="418"):
        upstream.get_json("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h", "limit": 1})
    banned_at = time.monotonic()
    breaker = CircuitBreaker.objects.get()
    assert breaker.state == "open" and breaker.open_until - time.time() > 1.5
    emulator.configure(ban_after_429s=None)  # no new bans; the running one lasts
    rows = Upstream(emulator.url, retries=3).get_json("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h",
                                                                        "limit": 1})
    assert rows and time.monotonic() - banned_at >= 1.5
    assert emulator.stats()["banned"] == 1  # nothing was sent while the ban lasted
    assert CircuitBreaker.objects.get().state == "closed"


@pytest.mark.django_db
def test_the_api_lists_each_breaker_with_its_next_probe_and_budget(api):
    CircuitBreaker.trip(KEY, until=time.time() + 30, error="HTTP 418 (rate limited, retry after 30s)")
    body = api.get("/api/admin/circuit-breakers/").json()
    assert [(b["upstream"], b["state"]) for b in body] == [(KEY, "open")]
    assert body[0]["next_probe_at"].endswith("Z") and body[0]["rate_budget"]["limit"] > 0
    assert "418" in body[0]["last_error"]


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_waited_out_the_breaker_waits_for_anothers_probe_instead_of_failing(emulator):
    """After its wait, the breaker is half-open: another worker's probe is out. Its success
    closes the breaker, and this worker's request goes through; it does not fail meanwhile."""
    key = emulator.url.split("//")[1]
    CircuitBreaker.objects.create(key=key, state=CircuitBreaker.OPEN, open_until=time.time() + 0.3)
    answers = []

    def waiting_worker():
        try:
            answers.append(Upstream(emulator.url, retries=0).get_json(
                "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h", "limit": 1}))
        except SourceError as error:
            answers.append(error)

    thread = threading.Thread(target=waiting_worker)
    thread.start()
    time.sleep(0.15)  # while it waits, another worker takes the probe ...
    CircuitBreaker.objects.filter(key=key).update(state=CircuitBreaker.HALF_OPEN, open_until=0,
                                                  probe_until=time.time() + 5)
    time.sleep(0.6)  # ... and it succeeds
    CircuitBreaker.record_success(key)
    thread.join(10)
    assert len(answers) == 1 and isinstance(answers[0], list), answers
