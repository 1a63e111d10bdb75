"""Domain errors are answered in one place (config.api.exception_handler): a service's
InputError, Conflict (RunConflict, NotActive) or NotFound that no view catches gives the same
status and body on every endpoint, and on any plain view."""

import ast
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

import pytest
from rest_framework.permissions import AllowAny
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from backfills.models import BackfillJob
from collectors.models import CollectionRun
from config.api import ApiView
from config.errors import Conflict, DomainError, InputError, NotActive, NotFound
from tests.factories import CollectorFactory, RunFactory

ROOT = Path(__file__).resolve().parents[2]
TRIGGER = "/api/admin/collect/trigger"


# --- through the endpoints ------------------------------------------------------------

@pytest.mark.django_db
def test_a_bad_symbol_for_gaps_is_a_400_naming_it_with_the_choices(api):
    CollectorFactory(slug="gaps-c", symbols=["BTCUSDT", "ETHUSDT"])

    response = api.get("/api/admin/gaps/", {"collector": "gaps-c", "symbol": "DOGEUSDT"})

    assert response.status_code == 400
    message = "Not a symbol of gaps-c: DOGEUSDT."
    # Named as the query names it (`symbol`), not as the service's other callers do (`symbols`).
    assert response.json() == {"detail": message, "symbol": [message], "choices": ["BTCUSDT", "ETHUSDT"]}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/admin/backfills/", "/api/admin/backfills/estimate/"])
def test_bad_backfill_input_from_the_service_is_the_same_400(api, url):
    CollectorFactory(slug="bf-c", symbols=["BTCUSDT"])

    unknown = api.post(url, {"collector": "bf-c", "symbols": ["DOGEUSDT"]}, format="json")
    backwards = api.post(url, {"collector": "bf-c", "start_date": "2024-02-01", "end_date": "2024-01-01"},
                         format="json")

    message = "Not a symbol of bf-c: DOGEUSDT."
    assert (unknown.status_code, unknown.json()) == (400, {"detail": message, "symbols": [message],
                                                           "choices": ["BTCUSDT"]})
    message = "end_date is before start_date."
    assert (backwards.status_code, backwards.json()) == (400, {"detail": message, "end_date": [message]})
    assert not BackfillJob.objects.exists()


@pytest.mark.django_db
def test_a_trigger_while_a_run_is_going_is_a_409_with_the_envelope_and_the_run(api):
    collector = CollectorFactory(slug="busy")
    running = RunFactory(collector=collector, status=CollectionRun.RUNNING)

    response = api.post(TRIGGER, {"mode": "forward", "collector": "busy"}, format="json")

    assert response.status_code == 409
    message = f"Collector busy already has run {running.pk} running."
    assert response.json() == {"success": False, "message": message, "detail": message, "run_id": running.pk}


@pytest.mark.django_db
def test_bad_trigger_input_from_the_service_is_a_400_with_the_envelope_and_choices(api):
    CollectorFactory(slug="only-one")

    response = api.post(TRIGGER, {"mode": "forward", "collector": "nope"}, format="json")

    assert response.status_code == 400
    message = "Unknown collector 'nope'."
    assert response.json() == {"success": False, "message": message, "detail": message,
                               "collector": [message], "choices": ["only-one"]}


@pytest.mark.django_db
def test_retry_failed_answers_like_the_trigger(api):
    collector = CollectorFactory(slug="rt")
    nothing_failed = RunFactory(collector=collector, status=CollectionRun.COMPLETE)
    active = RunFactory(collector=collector, status=CollectionRun.RUNNING)

    refused = api.post(f"/api/admin/runs/{nothing_failed.pk}/retry-failed/")
    busy = api.post(f"/api/admin/runs/{active.pk}/retry-failed/")

    message = f"Run {nothing_failed.pk} has no failed, partial or cancelled symbols to retry."
    assert (refused.status_code, refused.json()) == (400, {"success": False, "message": message,
                                                           "detail": message, "run": [message]})
    message = f"Collector rt already has run {active.pk} running."
    assert (busy.status_code, busy.json()) == (409, {"success": False, "message": message, "detail": message,
                                                     "run_id": active.pk})


@pytest.mark.django_db
@pytest.mark.parametrize("status", [CollectionRun.COMPLETE, CollectionRun.FAILED, CollectionRun.CANCELLED])
def test_cancelling_a_finished_run_is_a_409_with_its_status(api, status):
    run = RunFactory(status=status)

    response = api.post(f"/api/admin/runs/{run.pk}/cancel/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Run {run.pk} is {status}; only queued or running runs can be cancelled.", "status": status}
    run.refresh_from_db()
    assert run.status == status


@pytest.mark.django_db
def test_cancelling_a_finished_backfill_or_retrying_a_running_one_is_a_409_with_its_status(api):
    window = {"start": datetime(2024, 1, 1, tzinfo=dt_timezone.utc),
              "end": datetime(2024, 1, 2, tzinfo=dt_timezone.utc)}
    done = BackfillJob.objects.create(collector=CollectorFactory(), status=BackfillJob.COMPLETE, **window)
    running = BackfillJob.objects.create(collector=CollectorFactory(), status=BackfillJob.RUNNING, **window)

    cancel = api.post(f"/api/admin/backfills/{done.pk}/cancel/")
    retry = api.post(f"/api/admin/backfills/{running.pk}/retry-failed/")

    assert (cancel.status_code, cancel.json()) == (409, {
        "detail": f"Backfill {done.pk} is complete; only queued or running jobs can be cancelled.",
        "status": "complete"})
    assert (retry.status_code, retry.json()) == (409, {
        "detail": f"Backfill {running.pk} is running; wait until it has finished.", "status": "running"})


# --- on a plain view ------------------------------------------------------------------

class Raises(ApiView, APIView):
    """A view that only calls a 'service' which refuses: the handler alone makes the answer."""

    authentication_classes = throttle_classes = []  # no key, no database: the handler alone
    permission_classes = [AllowAny]
    error = None

    def get(self, request):
        raise self.error


class RaisesWithEnvelope(Raises):
    error_envelope = True


def answer(error, view=Raises):
    response = view.as_view(error=error)(APIRequestFactory().get("/"))
    response.render()
    assert response["Content-Type"].startswith("application/json")
    return response.status_code, response.data


@pytest.mark.parametrize("error, status, body", [
    (InputError("symbols", "Not a symbol: 'x'."), 400,
     {"detail": "Not a symbol: 'x'.", "symbols": ["Not a symbol: 'x'."]}),
    (InputError("collector", "Name the collector: none is enabled.", choices=[]), 400,
     {"detail": "Name the collector: none is enabled.", "collector": ["Name the collector: none is enabled."],
      "choices": []}),
    (InputError("mode", "Unknown mode.", choices=("backward", "forward")), 400,
     {"detail": "Unknown mode.", "mode": ["Unknown mode."], "choices": ["backward", "forward"]}),
    (NotFound("No such feed."), 404, {"detail": "No such feed."}),
    (Conflict("Run 7 is going.", run_id=7), 409, {"detail": "Run 7 is going.", "run_id": 7}),
    (NotActive("Backfill 3 is complete.", status="complete"), 409,
     {"detail": "Backfill 3 is complete.", "status": "complete"}),
    (DomainError("Cannot.", hint="later"), 400, {"detail": "Cannot.", "hint": "later"}),
])
def test_the_handler_maps_each_kind_of_domain_error(error, status, body):
    assert answer(error) == (status, body)


@pytest.mark.parametrize("error, status, body", [
    (InputError("symbols", "Not a symbol: 'x'.", choices=["BTCUSDT"]), 400,
     {"success": False, "message": "Not a symbol: 'x'.", "detail": "Not a symbol: 'x'.",
      "symbols": ["Not a symbol: 'x'."], "choices": ["BTCUSDT"]}),
    (Conflict("Run 7 is going.", run_id=7), 409,
     {"success": False, "message": "Run 7 is going.", "detail": "Run 7 is going.", "run_id": 7}),
    (NotFound("No such run."), 404, {"success": False, "message": "No such run.", "detail": "No such run."}),
])
def test_a_view_with_error_envelope_adds_success_and_message(error, status, body):
    assert answer(error, view=RaisesWithEnvelope) == (status, body)


# --- and no view answers them by hand -------------------------------------------------

DOMAIN_ERRORS = {"DomainError", "InputError", "NotFound", "Conflict", "RunConflict", "NotActive", "PlanTooLarge"}


def caught_names(handler: ast.ExceptHandler) -> set[str]:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "") for t in types if t is not None}


@pytest.mark.parametrize("path", ["collectors/api.py", "backfills/api.py", "quality/api.py", "config/api.py"])
def test_no_api_module_catches_a_domain_error(path):
    tree = ast.parse((ROOT / path).read_text())
    caught = [f"line {node.lineno}: except {', '.join(sorted(caught_names(node) & DOMAIN_ERRORS))}"
              for node in ast.walk(tree)
              if isinstance(node, ast.ExceptHandler) and caught_names(node) & DOMAIN_ERRORS]
    assert caught == [], "raise it and let config.api.exception_handler answer"


# --- refusals the services added with the one mapping -----------------------------------

@pytest.mark.django_db
def test_a_gaps_window_that_ends_before_it_starts_is_a_400_naming_end(api):
    CollectorFactory(slug="gaps-w", symbols=["BTCUSDT"])

    backwards = api.get("/api/admin/gaps/", {"collector": "gaps-w", "start": "2024-02-01", "end": "2024-01-01"})
    future = api.get("/api/admin/gaps/", {"collector": "gaps-w", "start": "2099-01-01"})

    assert (backwards.status_code, backwards.json()) == (400, {"detail": "end is before start.",
                                                               "end": ["end is before start."]})
    assert (future.status_code, future.json()) == (400, {"detail": "start is in the future.",
                                                         "start": ["start is in the future."]})


@pytest.mark.django_db
def test_an_estimate_whose_symbol_list_the_exchange_cannot_give_is_a_502_not_a_500(api, emulator):
    CollectorFactory(slug="top", symbols=[], max_retries=0, retry_backoff_seconds=0,
                     config={"base_url": emulator.url, "interval": "1h", "top_n": 3, "quote_asset": "USDT"})
    emulator.stop()  # the exchange is gone: listing the top 3 fails

    response = api.post("/api/admin/backfills/estimate/", {"collector": "top"}, format="json")

    assert response.status_code == 502
    assert response.json()["detail"].startswith("Could not list top's symbols from the exchange (")
    assert not BackfillJob.objects.exists()


@pytest.mark.django_db
def test_a_cancel_that_loses_the_race_answers_with_the_status_the_winner_left(api):
    run = RunFactory(status=CollectionRun.RUNNING)
    stale = CollectionRun.objects.get(pk=run.pk)  # what the view loaded ...
    CollectionRun.objects.filter(pk=run.pk).update(status=CollectionRun.COMPLETE)  # ... before the worker closed it

    with pytest.raises(NotActive) as refused:
        stale.cancel()

    assert refused.value.extra == {"status": "complete"} and stale.status == "complete"
    assert str(refused.value) == f"Run {run.pk} is complete; only queued or running runs can be cancelled."
