"""Alerts through a webhook: one per failure, none when off, a broken webhook breaks nothing."""

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone as tz

from collectors import alerts, services
from collectors.http import Upstream
from collectors.models import Alert, CollectionRun, RunSymbol
from collectors.sources import SourceError
from quality.models import QualitySnapshot
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


class Receiver:
    """A local webhook: records every POST body and answers `status`."""

    def __init__(self, status=200):
        self.bodies, self.status = [], status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver(settings, monkeypatch):
    hook = Receiver()
    settings.ENABLE_ALERTING, settings.ALERT_WEBHOOK_URL = True, hook.url
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # async_task runs the send at once
    monkeypatch.setattr(alerts, "_sleep", lambda seconds: None)
    yield hook
    hook.server.shutdown()


def failing_run(emulator, django_capture_on_commit_callbacks, symbols=("NOSUCHUSDT",)):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=list(symbols))
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=datetime(2025, 1, 1, tzinfo=timezone.utc),
                               end=datetime(2025, 1, 2, tzinfo=timezone.utc))
    with django_capture_on_commit_callbacks(execute=True):
        services.run_start(run_id=run.pk, inline=True)
        services.run_finish_if_done(run_id=run.pk)  # a second look changes nothing
    run.refresh_from_db()
    return run


def test_a_failed_run_sends_exactly_one_alert(receiver, emulator, django_capture_on_commit_callbacks):
    run = failing_run(emulator, django_capture_on_commit_callbacks)
    assert run.status == CollectionRun.FAILED
    assert [b["kind"] for b in receiver.bodies] == ["run_failed"]
    body = receiver.bodies[0]
    assert body["details"]["run_id"] == run.pk and "NOSUCHUSDT" in body["details"]["errors"]
    assert Alert.objects.get().status == Alert.SENT


def test_repeats_within_the_window_are_suppressed_not_sent(receiver, db):
    first = alerts.alert_raise(kind="circuit_open", key="circuit_open:x", summary="open")
    alerts.alert_send(alert_id=first.pk)
    again = alerts.alert_raise(kind="circuit_open", key="circuit_open:x", summary="open again")
    assert again.status == Alert.SUPPRESSED and alerts.alert_send(alert_id=again.pk) is None
    assert len(receiver.bodies) == 1


def test_no_alert_when_alerting_is_off(receiver, settings, emulator, django_capture_on_commit_callbacks):
    settings.ENABLE_ALERTING = False
    assert failing_run(emulator, django_capture_on_commit_callbacks).status == CollectionRun.FAILED
    assert receiver.bodies == [] and not Alert.objects.exists()


def test_a_webhook_answering_500_is_retried_and_breaks_nothing(receiver, emulator,
                                                               django_capture_on_commit_callbacks):
    receiver.status = 500
    run = failing_run(emulator, django_capture_on_commit_callbacks, symbols=("NOSUCHUSDT",))
    assert run.status == CollectionRun.FAILED and run.finished_at
    alert = Alert.objects.get()
    assert (alert.status, alert.attempts) == (Alert.FAILED, 3) and "HTTP 500" in alert.last_error
    assert len(receiver.bodies) == 3


def test_an_unreachable_webhook_does_not_stop_a_collection(receiver, settings, emulator,
                                                           django_capture_on_commit_callbacks):
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD, settings.CIRCUIT_BREAKER_TIMEOUT = 1, 0.1
    emulator.configure(error_rate=1.0, error_statuses=[503])
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(SourceError):  # one failure opens the breaker: an alert, undeliverable
            Upstream(emulator.url, retries=0).get_json("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h"})
    assert Alert.objects.get(kind="circuit_open").status == Alert.FAILED
    emulator.configure(error_rate=0.0)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=datetime(2025, 1, 1, tzinfo=timezone.utc),
                               end=datetime(2025, 3, 1, tzinfo=timezone.utc))
    with django_capture_on_commit_callbacks(execute=True):
        services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    assert run.status == CollectionRun.COMPLETE and run.symbols.get().records == 59 * 24 + 1


def test_the_api_sends_a_test_alert(api, receiver, settings):
    settings.ENABLE_ALERTING = False  # a test alert goes out anyway
    body = api.post("/api/admin/alerts/").json()
    assert body["sent"] is True and receiver.bodies[0]["kind"] == "test"
    settings.ALERT_WEBHOOK_URL = ""
    response = api.post("/api/admin/alerts/")
    assert response.status_code == 400 and "ALERT_WEBHOOK_URL" in response.json()


def test_the_scheduled_check_alerts_on_stale_data_and_on_the_error_rate_once(receiver, settings,
                                                                             django_capture_on_commit_callbacks):
    collector = CollectorFactory(slug="watch", symbols=["BTCUSDT", "ETHUSDT"])
    QualitySnapshot.objects.create(
        collector=collector, taken_at=tz.now(), score=100, completeness=1, freshness_seconds=90_000,
        total_records=2, invalid_records=0, duplicate_records=0, revisions=0, gaps=0, compute_seconds=0.1,
        report={"symbols": [{"symbol": "BTCUSDT", "freshness_seconds": 90_000, "is_fresh": False,
                             "completeness_ratio": 1.0},
                            {"symbol": "ETHUSDT", "freshness_seconds": 60, "is_fresh": True,
                             "completeness_ratio": 1.0}]})
    run = RunFactory(collector=collector, status="partial")
    for symbol, status in (("BTCUSDT", "failed"), ("ETHUSDT", "complete")):
        RunSymbol.objects.create(run=run, symbol=symbol, status=status, finished_at=tz.now())
    settings.ALERT_ERROR_THRESHOLD = 0.4  # 1 of 2 failed: over it
    with django_capture_on_commit_callbacks(execute=True):
        alerts.alerts_check()
        alerts.alerts_check()  # the next check within the window repeats nothing
    assert sorted(b["kind"] for b in receiver.bodies) == ["data_stale", "error_rate"]
    stale = [b for b in receiver.bodies if b["kind"] == "data_stale"][0]
    assert stale["details"]["symbols"] == ["BTCUSDT"]
