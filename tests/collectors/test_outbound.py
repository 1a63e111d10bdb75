"""Outbound requests (SSRF): which hosts collectors may call, checked when a URL is saved and on
every connection (after DNS, at each redirect hop); upstream bodies and URL credentials never
shown. The local emulator and small local servers stand in for upstreams."""

import json
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from collectors import services
from collectors.http import Upstream
from collectors.models import CircuitBreaker, CollectionRun, Collector, RateWindow, RunSymbol
from collectors.outbound import address_refused, literal_address, mask_url, url_refused
from collectors.sources import SourceError
from collectors.sources.binance import BinanceKlines
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
COLLECTORS = "/api/admin/collectors/"
START, END = datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2025, 1, 1, 23, 59, 59, tzinfo=timezone.utc)
INTERNAL = ["http://%31%30.0.0.1/", "http://10.0.0.1\\@evil.example/", "http://１０.０.０.１/",
            "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:8411/", "http://127.0.0.1.:8411/", "http://127.0.0.1..:8411/", "http://vm/",
            "http://ip6-localhost/", "http://127.0.0.1:9100/", "http://169.254.169.254/", "http://[fd00:ec2::254]/",
            "http://0x7f000001/", "http://2130706433/", "http://[::1]:8000", "http://127.1/",
            "http://0177.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://10.1.2.3/", "http://192.168.0.1/",
            "http://metadata.google.internal/", "http://localhost:8000/", "http://api.localhost/",
            "http://0.0.0.0/", "http://[64:ff9b::a9fe:a9fe]/", "http://224.0.0.1/", "http://100.64.0.1/"]


@pytest.fixture
def default_policy(settings):
    settings.UPSTREAM_ALLOWED_HOSTS = []  # production's default: public hosts only


@pytest.fixture
def resolve_as(monkeypatch):
    """Make chosen names resolve to chosen addresses (the system resolver, as DNS would)."""
    names = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real(names.get(host, host), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


class _Server:
    """A local HTTP server answering each path with a (status, headers, body) the test sets."""

    def __init__(self):
        routes = self.routes = {}
        self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                path = handler.path.partition("?")[0]
                self.hits.append(handler.path)
                status, headers, body = routes.get(path, (404, {}, b"no route"))
                handler.send_response(status)
                for name, value in headers.items():
                    handler.send_header(name, value)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def collect(collector):
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=START, end=END)
    services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    return run


# --- when a URL is saved -----------------------------------------------------------------------

@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_in_any_spelling_are_refused(default_policy, url):
    assert url_refused(url), url


@pytest.mark.parametrize("url", ["https://api.binance.com", "https://data-api.binance.vision/x",
                                 "http://8.8.8.8/", "http://[2606:4700::1111]/", "https://news.example.com/rss"])
def test_public_hosts_are_allowed(default_policy, url):
    assert url_refused(url) is None


def test_address_forms_are_read_as_the_resolver_reads_them():
    assert str(literal_address("0x7f000001")) == str(literal_address("2130706433")) == "127.0.0.1"
    assert str(literal_address("127.1")) == "127.0.0.1" and literal_address("api.binance.com") is None
    assert address_refused("2002:7f00:1::") and address_refused("::ffff:169.254.169.254")
    assert address_refused("1.1.1.1") is None


def test_the_allow_list_admits_listed_hosts_on_any_address_and_only_them(settings):
    settings.UPSTREAM_ALLOWED_HOSTS = ["127.0.0.1", "*.corp.example"]
    assert url_refused("http://127.0.0.1:9100") is None and url_refused("http://feeds.corp.example/x") is None
    assert "not in UPSTREAM_ALLOWED_HOSTS" in url_refused("https://api.binance.com")
    settings.UPSTREAM_ALLOWED_HOSTS = ["127.0.0.1", "*"]  # plus any public host
    assert url_refused("https://api.binance.com") is None and url_refused("http://10.0.0.1/")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9100/", "http://169.254.169.254/", "http://0x7f000001/",
                                 "http://[fd00:ec2::254]/", "http://metadata.google.internal/"])
def test_the_api_refuses_a_collector_that_would_call_an_internal_address(api, default_policy, url):
    body = {"slug": "evil", "name": "Evil", "kind": "binance_klines", "symbols": ["BTCUSDT"],
            "config": {"base_url": url, "interval": "1h"}}
    response = api.post(COLLECTORS, body, format="json")
    assert response.status_code == 400
    assert "base_url" in json.dumps(response.json()) and "UPSTREAM_ALLOWED_HOSTS" in json.dumps(response.json())

    news = {"slug": "evil-news", "name": "Evil news", "kind": "rss_news", "config": {"feeds": [url + "rss"]}}
    response = api.post(COLLECTORS, news, format="json")
    assert response.status_code == 400 and "feeds" in json.dumps(response.json())
    assert not Collector.objects.exists()


@pytest.mark.parametrize("url", ["https://api.binance.com/#", "https://api.binance.com/?x=",
                                 "https://user:pw@api.binance.com"])
def test_a_base_url_with_a_fragment_query_or_credentials_is_refused(api, url):
    body = {"slug": "odd", "name": "Odd", "kind": "binance_klines", "symbols": ["BTCUSDT"],
            "config": {"base_url": url, "interval": "1h"}}
    response = api.post(COLLECTORS, body, format="json")
    assert response.status_code == 400 and "base_url" in json.dumps(response.json())


def test_the_admin_refuses_an_internal_address_naming_the_key(operator, default_policy):
    form = {"slug": "evil", "name": "Evil", "kind": "binance_klines",
            "config": '{"base_url": "http://169.254.169.254", "interval": "1h"}', "symbols": '["BTCUSDT"]',
            "beginning_date": "2025-01-01", "schedule": "", "enabled": "on", "max_retries": "3",
            "retry_backoff_seconds": "2"}
    html = operator.post(reverse("admin:collectors_collector_add"), form).content.decode()
    assert "base_url: Must be an http(s) URL" in html and "169.254.169.254 is a link-local address" in html
    assert not Collector.objects.exists()


# --- when a connection is made -----------------------------------------------------------------

def test_a_public_looking_name_that_resolves_to_loopback_is_refused_at_fetch_time(
        emulator, default_policy, resolve_as, settings):
    resolve_as["exchange.example"] = "127.0.0.1"
    collector = CollectorFactory(symbols=["BTCUSDT"],
                                 config={"base_url": f"http://exchange.example:{emulator_port(emulator)}",
                                         "interval": "1h"})

    run = collect(collector)

    item = run.symbols.get()
    assert run.status == CollectionRun.FAILED and item.status == RunSymbol.FAILED
    assert "exchange.example resolves to 127.0.0.1, a loopback address" in item.error
    assert emulator.stats()["requests"] == 0  # not one request reached it
    # Listed by the operator, the same name is fetched: the policy was all that stopped it.
    settings.UPSTREAM_ALLOWED_HOSTS = ["exchange.example"]
    assert collect(collector).status == CollectionRun.COMPLETE and emulator.stats()["requests"] > 0


def test_a_redirect_to_a_private_address_fails_with_a_clear_reason(emulator, server, resolve_as, settings):
    # A listed (trusted) host answers every klines request with a redirect to the emulator on
    # loopback, which is not listed: the hop is refused.
    settings.UPSTREAM_ALLOWED_HOSTS = ["redirector.example", "*"]
    resolve_as["redirector.example"] = "127.0.0.1"
    target = f"http://127.0.0.1:{emulator_port(emulator)}/api/v3/klines"
    server.routes["/api/v3/klines"] = (302, {"Location": target}, b"")
    collector = CollectorFactory(symbols=["BTCUSDT"], config={
        "base_url": f"http://redirector.example:{server.port}", "interval": "1h"})

    run = collect(collector)

    item = run.symbols.get()
    assert item.status == RunSymbol.FAILED and server.hits and emulator.stats()["requests"] == 0
    assert item.error.startswith(f"redirected from redirector.example:{server.port}: refused to connect: "
                                 "127.0.0.1 is a loopback address")


def test_a_name_is_resolved_once_per_connection_and_connected_to_as_checked(default_policy, monkeypatch):
    # DNS rebinding: the first answer is public, any later one private. The wrapper connects to
    # the address it checked, so the private answer is never used.
    answers = iter(["93.184.215.14", "127.0.0.1", "127.0.0.1"])
    connected = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.example":
            return real(next(answers), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        connected.append(address[0])
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr("urllib3.util.connection.create_connection", create_connection)
    with pytest.raises(SourceError, match="ConnectionError"):
        Upstream("http://rebind.example", retries=0).get_json("/x")
    assert connected == ["93.184.215.14"]


# --- what comes back ---------------------------------------------------------------------------

def test_an_upstream_error_body_never_reaches_the_run(server):
    server.routes["/api/v3/klines"] = (403, {"Content-Type": "text/html"},
                                       b"<html>INTERNAL ADMIN PAGE: db password hunter2</html>")
    collector = CollectorFactory(symbols=["BTCUSDT"], config={"base_url": f"http://127.0.0.1:{server.port}",
                                                              "interval": "1h"})
    run = collect(collector)
    item = run.symbols.get()
    assert item.error == "HTTP 403 Forbidden" and "hunter2" not in str(run.error)
    assert "hunter2" not in str(list(run.events.values_list("fields", flat=True)))


def test_an_upstream_body_or_header_is_never_echoed_in_errors_or_quarantine(server, api):
    server.routes["/api/v3/klines"] = (200, {"Content-Type": "application/json"},
                                       json.dumps([["INTERNAL-TOKEN-xyz", 1, 2, 3]]).encode())
    server.routes["/feed.rss"] = (200, {"Content-Type": "text/html; SECRET-HEADER"}, b"<html>INTERNAL</html>")
    candles = CollectorFactory(symbols=["BTCUSDT"], max_retries=0,
                               config={"base_url": f"http://127.0.0.1:{server.port}", "interval": "1h"})
    assert api.post(COLLECTORS, {"slug": "news", "name": "News", "kind": "rss_news", "config": {
        "feeds": [f"http://127.0.0.1:{server.port}/feed.rss"]}}, format="json").status_code == 201
    news = Collector.objects.get(slug="news")
    runs = [collect(candles), collect(news)]
    shown = str([(run.error, list(run.symbols.values_list("error", flat=True)),
                  list(run.events.values_list("fields", flat=True))) for run in runs])
    shown += str(list(news.quarantined.values_list("payload", flat=True)))
    assert "bad kline row (a list of 4" in shown and "text/html is not an XML media type" in shown
    for secret in ("INTERNAL", "SECRET-HEADER"):
        assert secret not in shown


def test_a_refused_masked_url_sent_back_does_not_reveal_the_stored_one(api, settings):
    feed = "http://reader:s3cret@127.0.0.1:9/feeds/markets.rss?token=t0ken"
    response = api.post(COLLECTORS, {"slug": "news", "name": "News", "kind": "rss_news",
                                     "config": {"feeds": [feed]}}, format="json")
    shown = response.json()["config"]
    assert shown == {"feeds": ["http://***@127.0.0.1:9/feeds/markets.rss?token=***"]}
    settings.UPSTREAM_ALLOWED_HOSTS = []  # production tightened: the stored URL is now refused
    answer = api.patch(f"{COLLECTORS}news/", {"config": shown}, format="json")
    assert answer.status_code == 400 and "feeds" in json.dumps(answer.json())
    assert "s3cret" not in json.dumps(answer.json()) and "t0ken" not in json.dumps(answer.json())
    assert Collector.objects.get(slug="news").config["feeds"] == [feed]


def test_symbols_listed_by_the_exchange_are_checked_like_typed_ones(server):
    symbols = ["BTCUSDT", "<script>USDT", "A/BUSDT", "X?#USDT", "Q" * 40 + "USDT", "ETHUSDT", 7, "LTCUSDT\n"]
    server.routes["/api/v3/exchangeInfo"] = (200, {}, json.dumps({"symbols": [
        {"symbol": s, "quoteAsset": "USDT", "status": "TRADING"} for s in symbols]}).encode())
    server.routes["/api/v3/ticker/24hr"] = (200, {}, json.dumps(
        [{"symbol": s, "quoteVolume": str(1000 - i)} for i, s in enumerate(symbols)]
        + [{"symbol": "SOLUSDT", "quoteVolume": "NaN"}, "junk"]).encode())
    source = BinanceKlines({"base_url": f"http://127.0.0.1:{server.port}", "interval": "1h", "top_n": 10,
                            "quote_asset": "USDT"}, http=Upstream(f"http://127.0.0.1:{server.port}"))
    assert source.list_symbols() == ["BTCUSDT", "ETHUSDT"]


def test_credentials_in_a_feed_url_are_used_but_never_shown(api, client, emulator):
    secret = "s3cr3t-pw"
    feed = f"http://reader:{secret}@127.0.0.1:{emulator_port(emulator)}/feeds/markets.rss"
    response = api.post(COLLECTORS, {"slug": "news", "name": "News", "kind": "rss_news",
                                     "config": {"feeds": [feed]}}, format="json")
    assert response.status_code == 201, response.content
    shown = response.json()["config"]["feeds"]
    assert shown == [f"http://***@127.0.0.1:{emulator_port(emulator)}/feeds/markets.rss"]
    collector = Collector.objects.get(slug="news")
    assert collect(collector).status == CollectionRun.COMPLETE

    # A GET edited and sent back keeps the stored credentials.
    assert api.patch(f"{COLLECTORS}news/", {"config": {"feeds": shown}}, format="json").status_code == 200
    collector.refresh_from_db()
    assert collector.config["feeds"] == [feed]
    everything = [client.get("/metrics").content.decode(), json.dumps(api.get(f"{COLLECTORS}news/").json()),
                  json.dumps(api.get("/api/admin/runs/").json()),
                  json.dumps(api.get("/api/admin/logs/?collector=news").json()),
                  str(list(CircuitBreaker.objects.values_list("key", flat=True))),
                  str(list(RateWindow.objects.values_list("key", flat=True)))]
    assert f"127.0.0.1:{emulator_port(emulator)}" in everything[0]  # the upstream is labelled, without userinfo
    for text in everything:
        assert secret not in text and "reader:" not in text


def test_mask_url_hides_userinfo_and_secret_query_values_only():
    assert mask_url("https://u:p@h.example:8443/a?b=1") == "https://***@h.example:8443/a?b=1"
    assert mask_url("https://h.example/a@b?key=k&monkey=m;sig=s") == "https://h.example/a@b?key=***&monkey=m;sig=***"


def emulator_port(emulator) -> int:
    return int(emulator.url.rsplit(":", 1)[1])
