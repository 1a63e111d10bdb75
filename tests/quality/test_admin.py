"""The quality pages of the admin as an operator uses them."""

import re

import pytest
from django.urls import reverse

from collectors.models import CollectionRun
from quality import services
from quality.models import DriftAudit, QualitySnapshot
from tests.quality.conftest import utc

pytestmark = pytest.mark.django_db


def test_the_coverage_map_draws_every_symbol_and_state_and_links_cells_to_days(operator, covered):
    page = operator.get(reverse("admin:quality_coverage", args=[covered.pk]) + "?days=7&end=2025-03-06")
    html = page.content.decode()
    assert page.status_code == 200 and "2 symbols × 7 days up to 2025-03-06" in html
    titles = re.findall(r"<title>([^<]*)</title>", html)
    assert "BTCUSDT 2025-03-03: 50–90 % stored (20/24 stored)" in titles
    assert "BTCUSDT 2025-03-04: ≥ 90 % stored (23/24 stored, 1 quarantined)" in titles
    assert "NEWUSDT 2025-03-01 – 2025-03-02: the exchange had no data" in titles
    assert "BTCUSDT 2025-03-02: complete (19/19 stored, 5 with no data)" in titles
    assert 'data-symbols="[&quot;BTCUSDT&quot;, &quot;NEWUSDT&quot;]"' in html
    day_url = reverse("admin:quality_coverage_day", args=[covered.pk, "SYMBOL", "0000-00-00"])
    assert f'data-day-url="{day_url}"' in html


def test_a_day_page_shows_the_gap_and_its_button_starts_a_gap_fill_of_that_day(operator, covered):
    url = reverse("admin:quality_coverage_day", args=[covered.pk, "BTCUSDT", "2025-03-03"])
    html = " ".join(operator.get(url).content.decode().split())
    assert "20 of 24 expected candles stored; 4 missing in 1 gap" in html
    assert "2025-03-03 10:00 → 2025-03-03 14:00" in html and "Gap fill BTCUSDT on 2025-03-03" in html
    response = operator.post(url)
    run = CollectionRun.objects.latest("id")
    assert response.status_code == 302 and response.url == reverse("admin:collectors_collectionrun_change",
                                                                      args=[run.pk])
    assert (run.mode, run.requested_symbols, run.start, run.end) == (
        "gap_fill", ["BTCUSDT"], utc(2025, 3, 3), utc(2025, 3, 3, 23, 59, 59))
    assert operator.get(reverse("admin:quality_coverage_day", args=[covered.pk, "X", "nope"])).status_code == 404


def test_the_report_page_shows_figures_trend_and_takes_a_snapshot(operator, covered):
    url = reverse("admin:quality_report", args=[covered.pk])
    assert "The trend appears after two snapshots" in operator.get(url).content.decode()
    operator.post(url)
    operator.post(url)
    assert QualitySnapshot.objects.count() == 2
    html = operator.get(url).content.decode()
    assert "snapshot figures computed at" in html and "<polyline" in html
    assert "negative_volume" in html  # the validation errors


def test_the_audit_action_queues_an_audit_and_its_page_lists_the_differences(operator, covered, emulator, settings,
                                                                            django_capture_on_commit_callbacks):
    settings.AUDIT_SAMPLE_SIZE = 1000  # more than is stored: every candle is compared
    emulator.configure(revisions={f"BTCUSDT:{int(utc(2025, 3, 1, 5).timestamp() * 1000)}": {"high": "99999.0"}})
    with django_capture_on_commit_callbacks(execute=False):
        operator.post(reverse("admin:collectors_collector_changelist"),
                      {"action": "audit_drift", "_selected_action": [covered.pk]})
    audit = DriftAudit.objects.get()
    services.audit_run(audit_id=audit.pk)  # the worker's part
    html = operator.get(reverse("admin:quality_driftaudit_change", args=[audit.pk])).content.decode()
    assert "2025-03-01T05:00:00Z" in html and "99999.0" in html
    assert (DriftAudit.objects.get().status, DriftAudit.objects.get().differing) == ("complete", 1)


def test_dates_outside_1970_to_2099_are_404s_not_crashes(operator, covered):
    for query in ("?end=9999-12-31", "?end=0001-01-01", "?end=1970-01-05&days=30", "?end=x", "?days=y"):
        url = reverse("admin:quality_coverage", args=[covered.pk]) + query
        assert operator.get(url).status_code == 404, query
    for day in ("9999-12-31", "0001-01-01"):
        url = reverse("admin:quality_coverage_day", args=[covered.pk, "BTCUSDT", day])
        assert operator.get(url).status_code == 404, day
