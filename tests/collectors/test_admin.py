"""The admin as an operator uses it: actions, live run pages, guarded deletes, validation."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import reverse

from backfills.models import MissingRange
from collectors import services
from collectors.models import Candle, CollectionRun, Collector
from collectors.storage import upsert_candles
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db


def act(client, collector, action):
    return client.post(reverse("admin:collectors_collector_changelist"),
                       {"action": action, "_selected_action": [collector.pk]}, follow=True)


def test_collect_now_action_queues_a_run_and_links_to_it(operator):
    collector = CollectorFactory()
    page = act(operator, collector, "collect_backward")
    run = CollectionRun.objects.get()
    assert (run.mode, run.status, run.triggered_by) == ("backward", "queued", "admin:admin")
    assert reverse("admin:collectors_collectionrun_change", args=[run.pk]) in page.content.decode()


def test_a_second_action_while_a_run_is_active_warns_and_starts_nothing(operator):
    collector = CollectorFactory()
    act(operator, collector, "collect_forward")
    page = act(operator, collector, "collect_gap_fill")
    assert CollectionRun.objects.count() == 1
    assert "already queued" in page.content.decode()


def test_the_page_of_an_active_run_refreshes_itself_and_offers_cancel_but_not_delete(operator):
    run = RunFactory(status="running")
    html = operator.get(reverse("admin:collectors_collectionrun_change", args=[run.pk])).content.decode()
    assert 'http-equiv="refresh"' in html and "_cancel_run" in html
    assert reverse("admin:collectors_collectionrun_delete", args=[run.pk]) not in html
    finished = RunFactory(status="complete")
    html = operator.get(reverse("admin:collectors_collectionrun_change", args=[finished.pk])).content.decode()
    assert 'http-equiv="refresh"' not in html and "_cancel_run" not in html


def test_cancel_button_cancels_the_run(operator):
    run = RunFactory(status="running")
    operator.post(reverse("admin:collectors_collectionrun_change", args=[run.pk]), {"_cancel_run": "1"})
    assert CollectionRun.objects.get(pk=run.pk).status == "cancelled"


def test_bulk_delete_refuses_active_runs_and_deletes_finished_ones(operator):
    active, done = RunFactory(status="running"), RunFactory(status="failed")
    url = reverse("admin:collectors_collectionrun_changelist")
    operator.post(url, {"action": "delete_selected", "_selected_action": [active.pk, done.pk], "post": "yes"})
    assert CollectionRun.objects.count() == 2
    operator.post(url, {"action": "delete_selected", "_selected_action": [done.pk], "post": "yes"})
    assert list(CollectionRun.objects.values_list("pk", flat=True)) == [active.pk]


def test_candles_are_read_only_and_searchable_by_symbol_prefix(operator):
    collector = CollectorFactory()
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=[
        (1_735_689_600_000, "1", "2", "0.5", "1.5", "10", 1_735_693_199_999, "15", 3, "1", "1")])
    candle = Candle.objects.get()
    listing = operator.get(reverse("admin:collectors_candle_changelist") + "?q=BTC").content.decode()
    assert "BTCUSDT" in listing and "delete_selected" not in listing
    assert operator.get(reverse("admin:collectors_candle_delete", args=[candle.pk])).status_code == 403


def test_saving_a_collector_with_a_bad_config_or_cron_names_the_problem(operator):
    collector = CollectorFactory(config={"base_url": "http://127.0.0.1:9", "interval": "1h"})
    url = reverse("admin:collectors_collector_change", args=[collector.pk])
    form = {"slug": collector.slug, "name": collector.name, "kind": "binance_klines",
            "config": '{"base_url": "http://127.0.0.1:9", "interval": "7h"}', "symbols": '["BTCUSDT"]',
            "beginning_date": "2025-01-01", "schedule": "99 * * * *", "enabled": "on",
            "max_retries": "3", "retry_backoff_seconds": "2"}
    html = operator.post(url, form).content.decode()
    assert "interval: Unsupported interval" in html and "Not a cron expression" in html
    assert Collector.objects.get(pk=collector.pk).config["interval"] == "1h"
    form.update(config='{"base_url": "http://127.0.0.1:9", "interval": "4h"}', schedule="0 */6 * * *")
    assert operator.post(url, form).status_code == 302
    assert Collector.objects.get(pk=collector.pk).config["interval"] == "4h"


def test_every_admin_list_page_loads(operator, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["NEWCOINUSDT"])
    emulator.configure(invalid_rows={"NEWCOINUSDT:1748739600000": "negative_volume"})

    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)

    MissingRange.record(collector_id=collector.pk, symbol="NEWCOINUSDT", series="1h", reason="HTTP 503",
                        ranges=[(run.created_at.replace(minute=0, second=0, microsecond=0),
                                 run.created_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2))])
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert operator.get(url).status_code == 200, url


def test_the_run_page_lists_the_runs_events_once(operator, emulator):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    html = operator.get(reverse("admin:collectors_collectionrun_change", args=[run.pk])).content.decode()
    assert html.count('id="events"') == 1
    assert "run_started" in html and "symbol_finished" in html and "run_finished" in html
