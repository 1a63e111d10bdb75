"""The admin shows a service's refusal (config.errors) as a message: conflicts as warnings,
bad input as errors, with the error's own words."""

from datetime import datetime, timezone as dt_timezone

import pytest
from django.contrib import messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import RequestFactory
from django.urls import reverse

from backfills.models import BackfillJob
from collectors import services
from collectors.models import CollectionRun
from config.admin import refusal_message
from config.errors import InputError, NotActive, NotFound
from tests.factories import CollectorFactory, RunFactory


def shown(error, **kwargs):
    request = RequestFactory().get("/")
    request._messages = CookieStorage(request)
    refusal_message(request, error, **kwargs)
    return [(m.level, m.message) for m in request._messages]


@pytest.mark.parametrize("error, prefix, level, text", [
    (NotActive("Backfill 3 is complete.", status="complete"), "", messages.WARNING, "Backfill 3 is complete."),
    (InputError("symbols", "Not a symbol: 'x'."), "Not started: ", messages.ERROR, "Not started: Not a symbol: 'x'."),
    (NotFound("No such feed."), "", messages.ERROR, "No such feed."),
])
def test_a_conflict_is_a_warning_and_other_refusals_are_errors(error, prefix, level, text):
    assert shown(error, prefix=prefix) == [(level, text)]


@pytest.mark.django_db
def test_cancelling_a_finished_backfill_in_the_admin_warns_with_the_services_words(operator):
    job = BackfillJob.objects.create(collector=CollectorFactory(), status=BackfillJob.COMPLETE,
                                     start=datetime(2024, 1, 1, tzinfo=dt_timezone.utc),
                                     end=datetime(2024, 1, 2, tzinfo=dt_timezone.utc))

    page = operator.post(reverse("admin:backfills_backfilljob_change", args=[job.pk]), {"_cancel": "1"},
                         follow=True)

    sent = [(m.level, m.message) for m in page.context["messages"]]
    assert sent == [(messages.WARNING,
                     f"Backfill {job.pk} is complete; only queued or running jobs can be cancelled.")]
    assert BackfillJob.objects.get(pk=job.pk).status == BackfillJob.COMPLETE


@pytest.mark.django_db
def test_cancelling_a_run_that_finished_meanwhile_in_the_admin_warns_instead_of_failing(operator, monkeypatch):
    run = RunFactory(status=CollectionRun.RUNNING)
    real_cancel = services.run_cancel

    def worker_finishes_first(*, run):
        CollectionRun.objects.filter(pk=run.pk).update(status=CollectionRun.COMPLETE)
        return real_cancel(run=run)

    monkeypatch.setattr(services, "run_cancel", worker_finishes_first)
    page = operator.post(reverse("admin:collectors_collectionrun_change", args=[run.pk]),
                         {"_cancel_run": "1"}, follow=True)

    refusal = f"Run {run.pk} is complete; only queued or running runs can be cancelled."
    assert page.status_code == 200
    assert [(m.level, m.message) for m in page.context["messages"]] == [(messages.WARNING, refusal)]
    assert CollectionRun.objects.get(pk=run.pk).status == CollectionRun.COMPLETE
