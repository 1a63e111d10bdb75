"""Alerts through a webhook: raised where things go wrong, deduplicated, sent by a task.

Raising never raises: collection must not break because alerting does. The webhook gets a JSON
POST {"kind", "severity", "summary", "details", "key", "created_at", "service"}; it is not an
upstream data source, so it bypasses the exchange's HTTP wrapper (no weight budget, no breaker)
and gets its own timeout and retries.
"""

import time
from datetime import timedelta

import requests
import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from backfills.models import BackfillChunk
from collectors.models import Alert, Collector, RunSymbol
from quality.models import QualitySnapshot

log = structlog.get_logger(__name__)
SEND_ATTEMPTS = 3
_sleep = time.sleep  # between send attempts (tests replace it)


def alert_raise(*, kind: str, key: str, summary: str, details: dict | None = None,
                severity: str = "error") -> Alert | None:
    """Record an alert and send it once the transaction commits, unless alerting is off or the
    same key was alerted within ALERT_DEDUP_MINUTES (then it is kept as `suppressed`)."""
    if not settings.ENABLE_ALERTING:
        return None
    try:
        since = timezone.now() - timedelta(minutes=settings.ALERT_DEDUP_MINUTES)
        duplicate = Alert.objects.filter(key=key, created_at__gte=since).exclude(status=Alert.SUPPRESSED).exists()
        alert = Alert.objects.create(kind=kind, key=key, summary=summary[:300], details=details or {},
                                     severity=severity, status=Alert.SUPPRESSED if duplicate else Alert.PENDING)
        if not duplicate:
            transaction.on_commit(lambda: _enqueue_send(alert.pk))
        log.warning("alert_raised", kind=kind, key=key, summary=summary, suppressed=duplicate)
        return alert
    except Exception:  # alerting must never break what raised it
        log.exception("alert_raise_failed", kind=kind, key=key)
        return None


def _enqueue_send(alert_id: int):
    try:
        async_task("collectors.tasks.alert_send", alert_id, task_name=f"alert-{alert_id}")
    except Exception:
        log.exception("alert_enqueue_failed", alert_id=alert_id)


def alert_send(*, alert_id: int, sleep=None) -> Alert | None:
    """POST the alert to ALERT_WEBHOOK_URL, up to SEND_ATTEMPTS times (1, 2 s apart)."""
    sleep = sleep or _sleep
    alert = Alert.objects.filter(pk=alert_id, status=Alert.PENDING).first()
    if alert is None:
        return None  # sent already (a redelivered task) or suppressed
    url = settings.ALERT_WEBHOOK_URL
    if not url:
        Alert.objects.filter(pk=alert.pk).update(status=Alert.FAILED, last_error="ALERT_WEBHOOK_URL is not set")
        return alert
    error = ""
    for attempt in range(1, SEND_ATTEMPTS + 1):
        error = _post(url, alert)
        Alert.objects.filter(pk=alert.pk).update(attempts=attempt, last_error=error)
        if not error:
            Alert.objects.filter(pk=alert.pk).update(status=Alert.SENT, sent_at=timezone.now())
            break
        if attempt < SEND_ATTEMPTS:
            sleep(attempt)
    else:
        Alert.objects.filter(pk=alert.pk).update(status=Alert.FAILED)
        log.warning("alert_send_failed", alert_id=alert.pk, error=error)
    alert.refresh_from_db()
    return alert


def _post(url: str, alert: Alert) -> str:
    """'' when the webhook took it (2xx), else why not."""
    body = {"kind": alert.kind, "severity": alert.severity, "summary": alert.summary, "details": alert.details,
            "key": alert.key, "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
            "service": "collectors"}
    try:
        response = requests.post(url, json=body, timeout=settings.HTTP_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        return f"{type(error).__name__}: {error}"[:500]
    return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}: {response.text[:200]}"


def alert_test(*, requested_by: str) -> dict:
    """Send a test alert now (not deduplicated, not dependent on ENABLE_ALERTING)."""
    alert = Alert.objects.create(kind="test", key=f"test:{timezone.now().timestamp()}", severity="info",
                                 summary=f"Test alert requested by {requested_by}")
    alert = alert_send(alert_id=alert.pk, sleep=lambda s: None)
    return {"alert_id": alert.pk, "sent": alert.status == Alert.SENT, "attempts": alert.attempts,
            "error": alert.last_error or None, "webhook_configured": bool(settings.ALERT_WEBHOOK_URL)}


def alerts_check(*, now=None) -> list[int]:
    """Scheduled: stale data (from the latest quality snapshots) and an error rate over
    ALERT_ERROR_THRESHOLD among the symbols and chunks that finished in the last hour."""
    now = now or timezone.now()
    raised = []
    for collector in Collector.objects.filter(enabled=True):
        snapshot = QualitySnapshot.objects.filter(collector=collector).order_by("-taken_at").first()
        stale = [r["symbol"] for r in (snapshot.report.get("symbols", []) if snapshot else [])
                 if r.get("freshness_seconds") is not None and not r.get("is_fresh")]
        if stale:
            alert = alert_raise(kind="data_stale", key=f"data_stale:{collector.slug}", severity="warning",
                                summary=f"{collector.slug}: {len(stale)} symbol(s) have stale data",
                                details={"collector": collector.slug, "symbols": stale[:50]})
            raised += [alert.pk] if alert else []
        hour = now - timedelta(hours=1)
        finished = [*RunSymbol.objects.filter(run__collector=collector, finished_at__gte=hour)
                    .values_list("status", flat=True),
                    *BackfillChunk.objects.filter(job__collector=collector, finished_at__gte=hour)
                    .values_list("status", flat=True)]
        bad = sum(s in ("failed", "partial") for s in finished)
        if finished and bad / len(finished) > settings.ALERT_ERROR_THRESHOLD:
            alert = alert_raise(kind="error_rate", key=f"error_rate:{collector.slug}",
                                summary=f"{collector.slug}: {bad} of {len(finished)} symbols/chunks failed "
                                        f"in the last hour", details={"collector": collector.slug,
                                                                     "failed": bad, "finished": len(finished)})
            raised += [alert.pk] if alert else []
    return raised
