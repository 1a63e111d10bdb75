import pytest
from django.urls import reverse

from backfills import services
from backfills.models import BackfillJob
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db


def test_the_add_form_shows_the_estimate_first_and_starts_only_on_confirmation(operator, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    url = reverse("admin:backfills_backfilljob_add")
    form = {"collector": collector.pk, "start_date": "2024-01-01", "end_date": "2024-01-10", "symbols": ""}
    page = operator.post(url, {**form, "_estimate": "1"}).content.decode()
    assert "Estimate: 240 candles, 1 requests" in page and 'name="_start"' in page
    assert BackfillJob.objects.count() == 0
    response = operator.post(url, {**form, "_start": "1"})
    job = BackfillJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{job.pk}/change/")
    assert (job.estimated_records, job.created_by) == (240, "admin:admin")


def test_the_add_form_names_bad_input(operator):
    collector = CollectorFactory(symbols=["BTCUSDT"])
    page = operator.post(reverse("admin:backfills_backfilljob_add"),
                         {"collector": collector.pk, "symbols": "DOGEUSDT", "_estimate": "1"}).content.decode()
    assert "Not a symbol of" in page and BackfillJob.objects.count() == 0


def test_the_job_page_shows_progress_per_symbol_refreshes_and_cancels(operator, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"})
    job, _ = services.backfill_create(collector=collector, start=None, end=None, symbols=None, created_by="t")
    BackfillJob.objects.filter(pk=job.pk).update(status="running")
    url = reverse("admin:backfills_backfilljob_change", args=[job.pk])
    page = operator.get(url).content.decode()
    assert 'http-equiv="refresh"' in page and "BTCUSDT" in page and "ETHUSDT" in page and "_cancel" in page
    operator.post(url, {"_cancel": "1"})
    assert BackfillJob.objects.get(pk=job.pk).status == "cancelled"
    page = operator.get(url).content.decode()
    assert 'http-equiv="refresh"' not in page and "_retry_failed" in page
