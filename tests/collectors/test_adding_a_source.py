"""docs/adding-a-source.md, followed for a third source: last prices from a JSON endpoint.

What the guide puts in collectors/sources/<name>.py, the line in SOURCES and the model with its
migration are done here, in the test: the class below, `monkeypatch.setitem(SOURCES, ...)`, and
the model's table made by the schema editor as its migration would. Nothing else changes: the
engine, the API, the admin and the quality report take the new kind as they are.
"""

from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation

import pytest
from django.apps import apps
from django.db import connection, models

from collectors import services
from collectors.http import Upstream
from collectors.models import CollectionRun, Collector, RunSymbol
from collectors.sources import SOURCES, ConfigError, Page, unknown_keys
from quality.models import QuarantinedRow
from quality.services import quality_report

pytestmark = pytest.mark.django_db(transaction=True)  # the schema editor cannot run in a test's transaction
NOW_MS = 1_763_640_000_000  # 2025-11-20T12:00:00Z


# --- 1. the class (collectors/sources/json_prices.py) -----------------------------------------

class JsonPrices:
    """The last price of each symbol, from GET /api/v3/ticker/24hr?symbol=..."""

    model = "collectors.Price"
    key = ("symbol", "time")
    time_field = "time"
    symbol_field = "symbol"
    rules = {"bad_price": "The last price is not a positive decimal."}

    def __init__(self, config: dict, *, http: Upstream):
        self.http = http

    @classmethod
    def grain(cls, config):
        return None

    @classmethod
    def validate_config(cls, config: dict, symbols: list) -> tuple[dict, list]:
        if errors := unknown_keys(config, {"base_url"}):
            raise ConfigError(errors)
        if not isinstance(config.get("base_url"), str) or not config["base_url"].startswith(("http://", "https://")):
            raise ConfigError({"base_url": "Must be an http(s) URL."})
        if not symbols:
            raise ConfigError({"symbols": "Give at least one symbol."})
        return config, [s.strip().upper() for s in symbols]

    def fetch(self, symbol: str, start: datetime, end: datetime):
        ticker = self.http.get_json("/api/v3/ticker/24hr", {"symbol": symbol}, weight=2)
        try:
            valid = Decimal(ticker["lastPrice"]) > 0
        except (KeyError, TypeError, InvalidOperation):
            valid = False
        if not valid:
            yield Page(rows=[], start=start, end=end, invalid=[(ticker, "bad_price")])
            return
        when = datetime.fromtimestamp(ticker["closeTime"] / 1000, tz=timezone.utc)
        yield Page(rows=[{"symbol": symbol, "time": when, "price": ticker["lastPrice"]}], start=start, end=end)


# --- 2. registered (one line in SOURCES), 3. its table (model + migration) ---------------------

@pytest.fixture
def price_source(monkeypatch):
    monkeypatch.setitem(SOURCES, "json_prices", f"{__name__}.JsonPrices")

    class Price(models.Model):
        collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="+")
        symbol = models.CharField(max_length=32)
        time = models.DateTimeField()
        price = models.DecimalField(max_digits=30, decimal_places=8)

        class Meta:
            app_label = "collectors"
            constraints = [models.UniqueConstraint(fields=["collector", "symbol", "time"], name="uniq_guide_price")]

    with connection.schema_editor() as editor:
        editor.create_model(Price)
    yield Price
    with connection.schema_editor() as editor:
        editor.delete_model(Price)
    del apps.all_models["collectors"]["price"]
    apps.clear_cache()


def collect(collector, mode="forward"):
    run = services.run_trigger(collector=collector, mode=mode, triggered_by="tests", enqueue=False)
    services.run_start(run_id=run.pk, inline=True)
    run.refresh_from_db()
    return run, {s.symbol: s for s in run.symbols.all()}


def prices_collector(url, symbols=("btcusdt", "ETHUSDT")) -> Collector:
    collector = Collector(slug="prices", name="Prices", kind="json_prices", schedule="", symbols=list(symbols),
                          config={"base_url": url}, beginning_date=date(2025, 1, 1), retry_backoff_seconds=0.01)
    collector.full_clean()
    collector.save()
    return collector


# --- 4. tested with the emulator, and with a mock at the HTTP wrapper -------------------------

def test_a_source_added_by_the_guide_collects_once_per_price_with_the_emulator(price_source, emulator, api):
    emulator.configure(now_ms=NOW_MS)
    collector = prices_collector(emulator.url)
    assert collector.symbols == ["BTCUSDT", "ETHUSDT"]

    run, items = collect(collector)
    assert run.status == CollectionRun.COMPLETE and {i.records for i in items.values()} == {1}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        served = emulator._ticker_one(emulator._cfg, symbol, NOW_MS)["lastPrice"]
        assert price_source.objects.get(collector=collector, symbol=symbol).price == Decimal(served)

    run, items = collect(collector)  # same moment: read again, stored nothing
    assert {(i.records, i.duplicates) for i in items.values()} == {(0, 1)}
    emulator.configure(now_ms=NOW_MS + 60_000)
    run, items = collect(collector, "gap_fill")
    assert {i.records for i in items.values()} == {1}
    assert price_source.objects.count() == 4

    runs = api.get("/api/admin/runs/", {"collector": "prices"}).json()["results"]
    assert [r["status"] for r in runs] == ["complete"] * 3
    report = api.get("/api/admin/data-quality/", {"collector": "prices", "live": "true"}).json()
    assert report["records_kind"] == "events" and report["valid_records"] == 4
    assert {row["symbol"]: row["records"] for row in report["symbols"]} == {"BTCUSDT": 2, "ETHUSDT": 2}


def test_a_source_added_by_the_guide_quarantines_a_bad_price_with_a_mock_at_the_wrapper(price_source, monkeypatch):
    def ticker(self, path, params=None, **kwargs):
        assert path == "/api/v3/ticker/24hr"
        self.requests += 1
        price = "-1.5" if params["symbol"] == "ETHUSDT" else "64000.12345678"
        return {"symbol": params["symbol"], "lastPrice": price, "closeTime": NOW_MS}
    monkeypatch.setattr(Upstream, "get_json", ticker)
    collector = prices_collector("http://prices.invalid")

    run, items = collect(collector)

    assert items["BTCUSDT"].records == 1 and items["ETHUSDT"].invalid == 1
    assert all(i.status == RunSymbol.COMPLETE for i in items.values())
    bad = QuarantinedRow.objects.get(collector=collector)
    assert (bad.symbol, bad.rule, bad.payload["lastPrice"]) == ("ETHUSDT", "bad_price", "-1.5")
    collect(collector)  # the same bad price again: quarantined once
    assert QuarantinedRow.objects.filter(collector=collector).count() == 1
    report = quality_report(collector=collector)
    assert report["invalid_records"] == 1 and report["valid_records"] == 1
    assert report["validation_errors"] == ["bad_price: The last price is not a positive decimal. (1)"]
