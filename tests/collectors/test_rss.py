"""The rss_news source against the emulator's feeds, through the real engine and database."""

from datetime import date, datetime, timezone

import pytest
from django.core.exceptions import ValidationError

from collectors import engine, services
from collectors.emulator.feeds import FEEDS
from collectors.http import Document
from collectors.models import Article, CircuitBreaker, CollectionRun, Collector, HttpValidator, RunSymbol
from collectors.sources.rss import RssNews, feed_name, parse_feed
from quality.models import QuarantinedRow

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 12, 10, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)
MARKETS, RESEARCH, BROKEN = "127.0.0.1-FEEDS-MARKETS", "127.0.0.1-FEEDS-RESEARCH", "127.0.0.1-FEEDS-BROKEN"


def news_collector(emulator, *names, **fields) -> Collector:
    names = names or ("markets.rss", "research.atom", "broken.rss")
    collector = Collector(slug="news", name="News", kind="rss_news", schedule="",
                          config={"feeds": [f"{emulator.url}/feeds/{n}" for n in names]},
                          beginning_date=date(2025, 1, 1), retry_backoff_seconds=0.01, **fields)
    collector.full_clean()
    collector.save()
    return collector


def collect(collector, mode="forward"):
    run = services.run_trigger(collector=collector, mode=mode, triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    return run, {s.symbol: s for s in run.symbols.all()}


def window(feed: str, now_ms: int, items: int = 20) -> range:
    """Item numbers a feed shows at now_ms (the emulator's rule: the latest `items` periods)."""
    newest = now_ms // FEEDS[feed][0]
    return range(newest - items + 1, newest + 1)


@pytest.fixture
def feeds(emulator):
    emulator.configure(now_ms=NOW_MS)
    return emulator


def test_feed_names_are_readable_short_and_stable():
    assert feed_name("https://www.example.com/news/markets.rss") == "EXAMPLE.COM-NEWS-MARKETS"
    assert feed_name("http://127.0.0.1:9300/feeds/research.atom") == "127.0.0.1-FEEDS-RESEARCH"
    long = feed_name("https://www.coindesk.com/arc/outboundfeeds/rss/")
    assert len(long) <= 32 and long.startswith("COINDESK.COM-ARC-OUTBOUND")
    assert long == feed_name("https://www.coindesk.com/arc/outboundfeeds/rss/")
    # A query string makes a different feed: the name says so with a hash of the URL.
    assert feed_name("https://example.com/rss?cat=1") != feed_name("https://example.com/rss?cat=2")


@pytest.mark.parametrize("config, symbols, field, message", [
    ({}, [], "config", "feeds: Give a list of 1 to 100 feed URLs."),
    ({"feeds": "https://example.com/a.rss"}, [], "config", "feeds: Give a list"),
    ({"feeds": ["ftp://example.com/a.rss"]}, [], "config", "feeds: 'ftp://example.com/a.rss': not an http(s) URL"),
    ({"feeds": ["http://:80/feed"]}, [], "config", "not an http(s) URL with a host"),
    ({"feeds": ["http://example.com:99999/feed"]}, [], "config", "Port out of range"),
    ({"feeds": ["http://example.com:abc/feed"]}, [], "config", "feeds: 'http://example.com:abc/feed'"),
    ({"feeds": ["http://[abc/feed"]}, [], "config", "Invalid IPv6 URL"),
    ({"feeds": ["https://example.com/a.rss"] * 2}, [], "config", "feeds: Feeds must not repeat."),
    ({"feeds": ["http://a.com/x", "https://a.com/x"]}, [], "config", "same name, A.COM-X: they differ only"),
    ({"feeds": ["https://example.com/a.rss"], "interval": "1h"}, [], "config", "interval: Unknown key"),
])
def test_bad_news_config_is_refused_naming_the_key(config, symbols, field, message):
    collector = Collector(slug="n", name="n", kind="rss_news", config=config, symbols=symbols, schedule="")
    with pytest.raises(ValidationError) as raised:
        collector.full_clean()
    assert any(message in text for text in raised.value.message_dict[field])


def test_feeds_become_the_collectors_symbols_and_changing_them_renames(feeds):
    collector = news_collector(feeds)
    assert collector.symbols == [MARKETS, RESEARCH, BROKEN]
    assert collector.grain is None and collector.series == ""
    # An edit form sends the old names back with new feeds: the names follow the feeds.
    collector.config = {"feeds": [f"{feeds.url}/feeds/research.atom"]}
    collector.full_clean()
    assert collector.symbols == [RESEARCH]


def test_news_run_stores_each_article_once_and_quarantines_what_it_cannot_read(feeds):
    collector = news_collector(feeds)
    run, items = collect(collector)

    markets = window("markets.rss", NOW_MS)
    unreadable = [n for n in markets if n % 7 == 0]  # neither guid nor link
    assert items[MARKETS].records == len(markets) - len(unreadable)
    assert items[MARKETS].invalid == len(unreadable) > 0
    assert items[RESEARCH].records == 20
    # Not a feed at all: quarantined, and the feed fails (the run says so, not fatal to the others).
    assert items[BROKEN].records == 0 and items[BROKEN].invalid == 1
    assert items[BROKEN].status == RunSymbol.FAILED and "Not an RSS or Atom feed" in items[BROKEN].error
    assert items[MARKETS].status == items[RESEARCH].status == RunSymbol.COMPLETE
    assert run.status == CollectionRun.PARTIAL

    articles = Article.objects.filter(collector=collector)
    assert articles.count() == len(markets) - len(unreadable) + 20
    assert articles.values("guid").distinct().count() == articles.count()
    # Without a guid, the link is the article's identity.
    no_guid = [n for n in markets if n % 5 == 0 and n % 7]
    assert set(articles.filter(guid__contains="/news/markets/").values_list("guid", flat=True)) == \
        {f"{feeds.url}/news/markets/{n}" for n in no_guid}
    latest = articles.get(guid=f"urn:emulator:markets:{markets[-1]}") if markets[-1] % 5 and markets[-1] % 7 \
        else articles.filter(source=MARKETS).first()
    assert latest.published_at <= NOW and latest.title and latest.url
    # "desk@news.example (Markets desk)": the name, whole (feedparser alone cuts long domains).
    assert {name for a in articles.filter(source=MARKETS) for name in a.authors} == \
        {"Markets desk", "Derivatives desk", "Asia desk"}
    atom = articles.get(guid=f"tag:news.example,2025:research/{window('research.atom', NOW_MS)[-1]}")
    assert atom.source == RESEARCH and 1 <= len(atom.authors) <= 2 and atom.summary.startswith("Support")
    assert atom.published_at == datetime.fromtimestamp(
        window("research.atom", NOW_MS)[-1] * FEEDS["research.atom"][0] / 1000, tz=timezone.utc)

    rules = dict(QuarantinedRow.objects.filter(collector=collector).values_list("symbol", "rule").distinct())
    assert rules == {MARKETS: "no_id", BROKEN: "malformed_feed"}
    broken = QuarantinedRow.objects.get(collector=collector, symbol=BROKEN)
    # What the document is, never what it says (it could be an internal page's content).
    assert broken.run_id == run.pk and broken.payload["bytes"] > 0 and broken.payload["url"].endswith("broken.rss")
    assert "feed generator crashed" not in str(broken.payload)


def test_a_second_forward_run_costs_one_304_per_feed_and_stores_nothing(feeds):
    collector = news_collector(feeds)
    collect(collector)
    stored, quarantined = Article.objects.count(), QuarantinedRow.objects.count()
    feeds.reset_stats()

    run, items = collect(collector)

    # The broken document is read again (no validators kept for it) and fails again, quietly
    # for the quarantine (once), loudly for the run.
    assert feeds.stats()["status_counts"] == {"304": 2, "200": 1}
    assert items[BROKEN].status == RunSymbol.FAILED and run.status == CollectionRun.PARTIAL
    assert sum(i.records for i in items.values()) == 0 and sum(i.requests for i in items.values()) == 3
    assert (Article.objects.count(), QuarantinedRow.objects.count()) == (stored, quarantined)


def test_forward_collects_what_is_new_and_nothing_twice(feeds):
    collector = news_collector(feeds, "markets.rss", "research.atom")
    collect(collector)
    before = set(Article.objects.values_list("guid", flat=True))
    later = NOW_MS + 3 * 3_600_000
    feeds.configure(now_ms=later)

    run, items = collect(collector)

    new_markets = [n for n in window("markets.rss", later) if n not in window("markets.rss", NOW_MS)]
    new_research = [n for n in window("research.atom", later) if n not in window("research.atom", NOW_MS)]
    assert items[MARKETS].records == len([n for n in new_markets if n % 7])
    assert items[MARKETS].invalid == len([n for n in new_markets if n % 7 == 0])
    assert items[MARKETS].duplicates == 20 - len(new_markets)  # still in the window: seen again
    assert items[RESEARCH].records == len(new_research) == 1
    after = Article.objects.filter(collector=collector)
    assert after.count() == len(before) + items[MARKETS].records + items[RESEARCH].records
    assert after.values("guid").distinct().count() == after.count()


def test_gap_fill_and_backward_read_the_window_again_and_bring_back_deleted_articles(feeds):
    collector = news_collector(feeds, "markets.rss")
    collect(collector)
    total = Article.objects.count()
    gone = Article.objects.order_by("published_at").first()
    gone.delete()

    run, items = collect(collector, "gap_fill")  # unconditional: the feed has not changed

    assert items[MARKETS].records == 1 and items[MARKETS].duplicates == 20 - 1
    assert items[MARKETS].invalid == 0  # quarantined once, on the first read
    assert Article.objects.count() == total and Article.objects.filter(guid=gone.guid).exists()
    run, items = collect(collector, "backward")
    assert items[MARKETS].records == 0 and Article.objects.count() == total


def test_a_truncated_feed_is_retried_and_never_stored_cut(feeds):
    collector = news_collector(feeds, "markets.rss", max_retries=2)
    feeds.configure(malformed_rate=1.0)

    run, items = collect(collector)

    assert items[MARKETS].status == RunSymbol.FAILED and items[MARKETS].requests == 3
    assert "feed ends early" in items[MARKETS].error
    assert not Article.objects.exists() and not HttpValidator.objects.exists()
    feeds.configure(malformed_rate=0.0)
    run, items = collect(collector)  # no validators were kept: the feed is read whole
    assert items[MARKETS].status == RunSymbol.COMPLETE and items[MARKETS].records > 0


def test_validators_are_kept_only_with_the_articles(feeds, monkeypatch):
    collector = news_collector(feeds, "markets.rss")

    def crash(**kwargs):
        raise RuntimeError("database went away")
    monkeypatch.setattr(engine, "records_insert_new", crash)
    run, items = collect(collector)
    assert items[MARKETS].status == RunSymbol.FAILED and not HttpValidator.objects.exists()

    monkeypatch.undo()
    run, items = collect(collector)  # not a 304: the articles were never stored
    assert items[MARKETS].records > 0
    validator = HttpValidator.objects.get()
    assert validator.etag and validator.scope == f"collector:{collector.pk}"


def test_two_collectors_of_one_feed_each_get_the_articles(feeds):
    first = news_collector(feeds, "markets.rss")
    second = Collector.objects.create(slug="news-2", name="News 2", kind="rss_news", schedule="",
                                      config=first.config, symbols=first.symbols)
    collect(first)
    run, items = collect(second)  # the first one's ETag must not make this a 304
    assert items[MARKETS].records == Article.objects.filter(collector=first).count() > 0


def test_an_unreachable_feed_fails_alone(feeds):
    collector = news_collector(feeds, "markets.rss", "missing.rss")
    run, items = collect(collector)
    missing = feed_name(f"{feeds.url}/feeds/missing.rss")
    assert items[missing].status == RunSymbol.FAILED and "HTTP 404" in items[missing].error
    assert items[MARKETS].status == RunSymbol.COMPLETE and run.status == CollectionRun.PARTIAL


def test_the_api_shows_news_runs_and_a_per_feed_quality_report(feeds, api):
    created = api.post("/api/admin/collectors/", {
        "slug": "news", "name": "News", "kind": "rss_news", "schedule": "",
        "config": {"feeds": [f"{feeds.url}/feeds/markets.rss", f"{feeds.url}/feeds/broken.rss"]}},
        format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["symbols"] == [MARKETS, BROKEN]
    collect(Collector.objects.get(slug="news"))

    runs = api.get("/api/admin/runs/", {"collector": "news"}).json()["results"]
    assert len(runs) == 1 and runs[0]["status"] == "partial" and runs[0]["progress"]["records"] > 0
    detail = api.get(f"/api/admin/runs/{runs[0]['id']}/").json()
    assert {s["symbol"]: s["invalid"] for s in detail["details"]} == \
        {MARKETS: len([n for n in window("markets.rss", NOW_MS) if n % 7 == 0]), BROKEN: 1}

    report = api.get("/api/admin/data-quality/", {"collector": "news", "live": "true"}).json()
    stored = Article.objects.count()
    assert report["records_kind"] == "events" and report["completeness_ratio"] is None
    assert report["valid_records"] == stored
    assert report["invalid_records"] == sum(s["invalid"] for s in detail["details"])
    assert report["data_quality_score"] == round(100 * stored / report["total_records"], 2)
    feed = {row["symbol"]: row for row in report["symbols"]}
    newest = Article.objects.filter(source=MARKETS).latest("published_at").published_at
    assert feed[MARKETS]["latest"] == newest.isoformat().replace("+00:00", "Z")
    assert feed[BROKEN]["records"] == 0 and feed[BROKEN]["freshness_seconds"] is None
    assert any(e.startswith("malformed_feed: The document is not an RSS or Atom feed")
               for e in report["validation_errors"])


@pytest.mark.parametrize("method, path, body", [
    ("post", "/api/admin/backfills/", {"collector": "news"}),
    ("post", "/api/admin/backfills/estimate/", {"collector": "news"}),
    ("get", "/api/admin/gaps/", {"collector": "news"}),
    ("post", "/api/admin/validate-data/", {"collector": "news", "records": [[1, "1"]]}),
    ("post", "/api/admin/audits/", {"collector": "news"}),
])
def test_candle_only_endpoints_refuse_a_news_collector_naming_it(feeds, api, method, path, body):
    news_collector(feeds, "markets.rss")
    response = getattr(api, method)(path, body, **({"format": "json"} if method == "post" else {}))
    assert response.status_code == 400
    assert "collects events, not interval data" in response.json()["collector"][0]


def test_admin_pages_of_a_news_collector_load(feeds, operator):
    collector = news_collector(feeds)
    run, _ = collect(collector)
    pages = ["/admin/collectors/collector/", f"/admin/collectors/collectionrun/{run.pk}/change/",
             f"/admin/collectors/article/?collector__id__exact={collector.pk}",
             f"/admin/quality/qualitysnapshot/report/{collector.pk}/"]
    for page in pages:
        response = operator.get(page)
        assert response.status_code == 200, page
    listing = operator.get(pages[2]).content.decode()
    assert Article.objects.first().title[:40] in listing
    report = operator.get(pages[3]).content.decode()
    assert "Per feed" in report and MARKETS in report
    # Coverage maps are for candles: the admin says so instead of drawing an empty map.
    response = operator.get(f"/admin/quality/qualitysnapshot/coverage/{collector.pk}/", follow=True)
    assert "collects events, not interval data" in response.content.decode()


def test_articles_are_listed_newest_first_by_feed_and_time(feeds, api):
    collector = news_collector(feeds, "markets.rss", "research.atom")
    collect(collector)
    page = api.get("/api/admin/articles/", {"collector": "news", "page_size": 5}).json()
    times = [a["published_at"] for a in page["results"]]
    assert len(times) == 5 and times == sorted(times, reverse=True) and page["next"]
    everything, url = [], "/api/admin/articles/?collector=news&source=127.0.0.1-feeds-research"
    while url:
        body = api.get(url).json()
        everything += body["results"]
        url = body["next"]
    assert len(everything) == 20 and {a["source"] for a in everything} == {RESEARCH}
    assert everything[0]["authors"] and everything[0]["url"].startswith(feeds.url)
    since = api.get("/api/admin/articles/", {"collector": "news", "start": times[2]}).json()["results"]
    assert [a["published_at"] for a in since] == times[:3]


@pytest.mark.parametrize("params, field", [
    ({}, "collector"), ({"collector": "nope"}, "collector"), ({"collector": "candles"}, "collector"),
    ({"collector": "news", "source": "OTHER"}, "source"), ({"collector": "news", "start": "yesterday"}, "start"),
    ({"collector": "news", "start": "2026-01-02", "end": "2026-01-01"}, "end"),
])
def test_bad_article_filters_are_400s_naming_the_field(feeds, api, params, field):
    news_collector(feeds, "markets.rss")
    Collector.objects.create(slug="candles", name="c", kind="binance_klines", schedule="",
                             config={"base_url": feeds.url, "interval": "1h"}, symbols=["BTCUSDT"])
    response = api.get("/api/admin/articles/", params)
    assert response.status_code == 400 and field in response.json()


def read(xml: bytes):
    document = Document(url="http://feeds.example/x.rss", content=xml)
    document.parsed = parse_feed(document)
    return RssNews.read(document, symbol="FEEDS.EXAMPLE-X", now=NOW)


def test_entries_are_read_safely_whatever_the_feed_says():
    rows, invalid = read(b"""<rss version="2.0"><channel>
        <item><guid>a</guid><link>javascript:alert(1)</link><title>Script</title>
              <pubDate>Fri, 20 Nov 2026 10:00:00 GMT</pubDate></item>
        <item><guid>b</guid><title>Old</title><pubDate>Mon, 01 Jan 1900 00:00:00 GMT</pubDate></item>
        <item><guid>c</guid><title>Later</title><pubDate>Sat, 28 Nov 2026 10:00:00 GMT</pubDate></item>
        <item><guid>d</guid><title>Undated</title></item>
        <item><guid>e</guid><author>ann@news.finance (Ann Example)</author>
              <pubDate>Fri, 20 Nov 2026 09:00:00 GMT</pubDate></item>
        </channel></rss>""")
    assert [(r["guid"], r["url"]) for r in rows] == [("a", ""), ("e", "")]  # only web links are URLs
    assert rows[1]["authors"] == ["Ann Example"]
    assert [(p["id"], rule) for p, rule in invalid] == [("b", "no_time"), ("c", "future_time"), ("d", "no_time")]


@pytest.mark.parametrize("content", [b"", b"<html><body>Gateway error</body></html>", b'{"error": 1}'])
def test_a_document_that_is_not_a_feed_is_quarantined_not_crashed_on(content):
    rows, invalid = read(content)
    assert rows == [] and [rule for _, rule in invalid] == ["malformed_feed"]


def test_a_feed_dropped_from_the_config_while_its_run_waits_fails_with_a_reason(feeds, monkeypatch):
    collector = news_collector(feeds, "markets.rss", "research.atom")
    run = services.run_trigger(collector=collector, mode="forward", triggered_by="tests", enqueue=False)
    monkeypatch.setattr(services, "_enqueue_symbols", lambda run, pks: None)  # queued, not yet run
    services.run_start(run_id=run.pk)
    collector.config = {"feeds": [f"{feeds.url}/feeds/research.atom"]}
    collector.full_clean()
    collector.save()
    services.run_symbol_collect(run_symbol_id=run.symbols.get(symbol=MARKETS).pk)
    item = run.symbols.get(symbol=MARKETS)
    assert item.status == RunSymbol.FAILED and "no longer one of the collector's feeds" in item.error
    assert item.missing_ranges == []  # a feed has no range to fill later


def test_cut_feeds_do_not_open_their_hosts_breaker_for_the_others(feeds, settings):
    settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD, settings.CIRCUIT_BREAKER_TIMEOUT = 2, 1
    collector = news_collector(feeds, "markets.rss", max_retries=3)
    feeds.configure(malformed_rate=1.0)
    collect(collector)
    assert not CircuitBreaker.objects.filter(state=CircuitBreaker.OPEN).exists()
    feeds.configure(malformed_rate=0.0, error_rate=1.0, error_statuses=[503])
    collect(collector)  # a 5xx is the host's trouble: that one counts
    assert CircuitBreaker.objects.filter(state=CircuitBreaker.OPEN).exists()


def test_a_run_with_dates_stores_only_the_articles_published_between_them(feeds):
    collector = news_collector(feeds, "research.atom")
    newest = window("research.atom", NOW_MS)[-1] * FEEDS["research.atom"][0]
    start = datetime.fromtimestamp((newest - 2 * FEEDS["research.atom"][0]) / 1000, tz=timezone.utc)
    end = datetime.fromtimestamp((newest - FEEDS["research.atom"][0]) / 1000, tz=timezone.utc)
    run = services.run_trigger(collector=collector, mode="backward", start=start, end=end,
                               triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    # Entries are three hours apart: the two at start and at end (inclusive) are in.
    assert sorted(Article.objects.values_list("published_at", flat=True)) == [start, end]
    assert run.events.filter(event="entries_outside_range", fields__skipped=18).exists()


def test_asking_for_a_feed_the_collector_does_not_have_is_a_400_that_lists_its_feeds(feeds, api):
    news_collector(feeds, "markets.rss")
    trigger = api.post("/api/admin/collect/trigger", {"mode": "forward", "collector": "news", "symbols": ["BTCUSDT"]},
                       format="json")
    assert trigger.status_code == 400 and trigger.json()["choices"] == [MARKETS]
    quality = api.get("/api/admin/data-quality/", {"collector": "news", "symbol": "NOPE"})
    assert quality.status_code == 400 and MARKETS in quality.json()["symbol"][0]
    assert api.get("/api/admin/data-quality/", {"collector": "news", "symbol": MARKETS.lower()}).status_code == 200
    candles = api.get("/api/admin/candles/", {"collector": "news"})
    assert candles.status_code == 400 and "collects events" in candles.json()["collector"][0]
