"""End to end: HTTP trigger -> real qcluster workers -> database -> status, and kill -9."""

import signal
import time
from datetime import datetime, timezone

import pytest
import requests

from collectors import services
from collectors.emulator import kline
from collectors.models import ApiKey, Article, Candle, CollectionRun, Collector, RunSymbol
from quality.models import QuarantinedRow
from tests.e2e import free_port, start_qcluster, start_web, wait_for
from tests.factories import CollectorFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
HOUR_MS = 3_600_000


def ms(moment):
    return int(moment.timestamp() * 1000)


def assert_exact(collector, symbols, start, end):
    expected = list(range(ms(start), ms(end), HOUR_MS))
    for symbol in symbols:
        rows = list(Candle.objects.filter(collector=collector, symbol=symbol).order_by("open_time")
                    .values_list("open_time", "close", "volume"))
        assert [ms(r[0]) for r in rows] == expected, symbol
        for open_time, close, volume in rows[:: max(len(rows) // 50, 1)]:
            k = kline(symbol, "1h", ms(open_time))
            assert (format(close, "f"), format(volume, "f")) == (k[4], k[5])


def test_trigger_over_http_is_collected_by_qcluster_and_a_rerun_skips_everything(emulator, tmp_path):
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "NEWCOINUSDT"]
    collector = CollectorFactory(slug="e2e", config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=symbols)
    _, key = ApiKey.objects.create_key(name="e2e")
    port = free_port()
    web, worker = start_web(tmp_path, port), start_qcluster(tmp_path)
    try:
        base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": key}
        body = {"mode": "backward", "collector": "e2e", "start_date": "2025-01-01",
                "end_date": "2025-08-31"}
        trigger = requests.post(f"{base}/api/admin/collect/trigger", json=body, headers=headers, timeout=10)
        assert trigger.status_code == 202, trigger.text
        run_id = trigger.json()["run_id"]

        def finished():
            status = requests.get(f"{base}/api/admin/collect/status?collector=e2e", headers=headers,
                                  timeout=10).json()
            return status if status["status"] not in ("queued", "running") else None

        status = wait_for(finished, timeout=120, what="the run to finish")
        assert status["run_id"] == run_id and status["status"] == "complete"
        details = {d["symbol"]: d for d in status["last_results"]["details"]}
        assert status["last_results"]["complete"] == 4 and set(details) == set(symbols)
        assert details["BTCUSDT"]["records"] == 243 * 24 and details["NEWCOINUSDT"]["records"] == 92 * 24
        assert_exact(collector, ["BTCUSDT", "ETHUSDT", "BNBUSDT"], datetime(2025, 1, 1, tzinfo=timezone.utc),
                     datetime(2025, 9, 1, tzinfo=timezone.utc))

        emulator.reset_stats()
        again = requests.post(f"{base}/api/admin/collect/trigger", json=body, headers=headers, timeout=10)
        assert again.status_code == 202
        status = wait_for(finished, timeout=60, what="the second run to finish")
        assert status["run_id"] == again.json()["run_id"]
        assert status["last_results"]["skipped"] == 4
        assert sum(emulator.stats()["klines_by_symbol"].values()) == 0
    finally:
        web.stop()
        worker.stop()


SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "ETHBTC"]


def long_run(emulator, slug):
    """A queued backward run of 8 symbols x 2.5 years, slowed so a signal lands mid-run."""
    emulator.configure(slow_ms=40)
    collector = CollectorFactory(slug=slug, config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=SYMBOLS, beginning_date=datetime(2023, 1, 1).date())
    run = services.run_trigger(collector=collector, mode="backward",
                               end=datetime(2025, 6, 30, 23, tzinfo=timezone.utc), triggered_by="tests")
    return collector, run


def test_a_run_survives_kill_minus_9_of_its_qcluster_and_finishes_with_exact_data(emulator, tmp_path):
    collector, run = long_run(emulator, "e2e-kill")
    symbols = SYMBOLS
    first = start_qcluster(tmp_path, "first")
    try:
        wait_for(lambda: RunSymbol.objects.filter(run=run, status=RunSymbol.COMPLETE).exists()
                 and RunSymbol.objects.filter(run=run, status=RunSymbol.RUNNING).exists(),
                 timeout=60, what="the run to be under way")
    finally:
        first.kill_group()
    stored_at_kill = Candle.objects.filter(collector=collector).count()
    states = dict(RunSymbol.objects.filter(run=run).values_list("symbol", "status"))
    # Work was left: symbols in flight (usually) and symbols not started yet.
    assert {"running", "pending"} & set(states.values())
    assert CollectionRun.objects.get(pk=run.pk).status == "running"
    time.sleep(3.5)  # the dead workers' lease (RUN_LEASE_SECONDS=3) runs out
    emulator.configure(slow_ms=0)
    second = start_qcluster(tmp_path, "second")
    try:
        wait_for(lambda: CollectionRun.objects.get(pk=run.pk).status not in CollectionRun.ACTIVE,
                 timeout=120, what="the restarted cluster to finish the run")
    except AssertionError:
        print(second.output())  # shown by pytest on failure
        print(list(RunSymbol.objects.filter(run=run).values()))
        raise
    finally:
        second.stop()
    run.refresh_from_db()
    assert run.status == CollectionRun.COMPLETE, run.error
    assert stored_at_kill < len(symbols) * 21840
    assert_exact(collector, symbols, datetime(2023, 1, 1, tzinfo=timezone.utc),
                 datetime(2025, 7, 1, tzinfo=timezone.utc))
    resumed = RunSymbol.objects.filter(run=run, symbol__in=[s for s, st in states.items() if st == "running"])
    assert all(item.attempts == 2 for item in resumed)


def test_sigterm_to_qcluster_mid_run_stops_it_and_the_run_resumes_exactly(emulator, tmp_path):
    collector, run = long_run(emulator, "e2e-term")
    symbols = SYMBOLS
    first = start_qcluster(tmp_path, "first")
    try:
        wait_for(lambda: RunSymbol.objects.filter(run=run, status=RunSymbol.RUNNING).exists(),
                 timeout=60, what="the run to be under way")
        began = time.monotonic()
        first.popen.send_signal(signal.SIGTERM)  # what systemd, Docker and Kubernetes send
        first.popen.wait(60)
        stopped_in = time.monotonic() - began
    finally:
        first.kill_group()
    print(f"qcluster stopped {stopped_in:.1f} s after SIGTERM")
    assert first.popen.returncode is not None and stopped_in < 60
    states = dict(RunSymbol.objects.filter(run=run).values_list("symbol", "status"))
    assert CollectionRun.objects.get(pk=run.pk).status == "running" and set(states.values()) - {"complete"}
    time.sleep(3.5)  # any symbol left 'running' has a dead lease now
    emulator.configure(slow_ms=0)
    second = start_qcluster(tmp_path, "second")
    try:
        wait_for(lambda: CollectionRun.objects.get(pk=run.pk).status not in CollectionRun.ACTIVE,
                 timeout=120, what="the restarted cluster to finish the run")
    finally:
        second.stop()
    run.refresh_from_db()
    assert run.status == CollectionRun.COMPLETE, run.error
    assert_exact(collector, symbols, datetime(2023, 1, 1, tzinfo=timezone.utc),
                 datetime(2025, 7, 1, tzinfo=timezone.utc))


def test_news_collected_by_qcluster_stores_each_article_once_across_runs(emulator, tmp_path):
    emulator.configure(now_ms=1_763_640_000_000)
    collector = Collector(slug="news", name="News", kind="rss_news", schedule="",
                          config={"feeds": [f"{emulator.url}/feeds/{name}"
                                            for name in ("markets.rss", "research.atom", "broken.rss")]})
    collector.full_clean()
    collector.save()
    _, key = ApiKey.objects.create_key(name="e2e")
    port = free_port()
    web, worker = start_web(tmp_path, port), start_qcluster(tmp_path)
    try:
        base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": key}

        def run(mode):
            trigger = requests.post(f"{base}/api/admin/collect/trigger", json={"mode": mode, "collector": "news"},
                                    headers=headers, timeout=10)
            assert trigger.status_code == 202, trigger.text
            run_id = trigger.json()["run_id"]
            return wait_for(lambda: (r := requests.get(f"{base}/api/admin/runs/{run_id}/", headers=headers,
                                                       timeout=10).json())["status"] not in ("queued", "running")
                            and r, timeout=60, what=f"the {mode} run to finish")

        first = run("forward")  # partial: broken.rss is not a feed (quarantined, and it fails)
        assert first["status"] == "partial" and first["progress"]["records"] > 0
        stored, quarantined = Article.objects.count(), QuarantinedRow.objects.count()
        assert stored == first["progress"]["records"] and quarantined == sum(d["invalid"] for d in first["details"])
        assert {d["symbol"]: d["invalid"] for d in first["details"]}["127.0.0.1-FEEDS-BROKEN"] == 1
        for mode in ("forward", "gap_fill", "forward"):
            again = run(mode)
            assert again["status"] == "partial" and again["progress"]["records"] == 0, mode
        assert (Article.objects.count(), QuarantinedRow.objects.count()) == (stored, quarantined)
        assert Article.objects.values("guid").distinct().count() == stored
        listed = requests.get(f"{base}/api/admin/runs/?collector=news", headers=headers, timeout=10).json()
        assert listed["count"] == 4
    finally:
        web.stop()
        worker.stop()
