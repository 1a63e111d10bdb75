"""What every endpoint answers alike (config.api, config.parsers, config.views): JSON errors
for crashes, unknown paths and methods and over-deep bodies; 400s naming the field for
out-of-range dates, ids and symbols, whichever app the endpoint belongs to."""

import pytest

from tests.collectors.conftest import TRIGGER
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db


def test_an_unexpected_error_is_a_json_500_without_details(api, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("collectors.services.run_trigger", crash)
    collector = CollectorFactory()

    response = api.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal error; it has been logged."}


def test_unknown_paths_and_methods_answer_json(api):
    missing = api.get("/api/admin/nothing-here/")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}

    wrong_method = api.get(TRIGGER)
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


@pytest.mark.parametrize("method, path, body, field", [
    ("post", "/api/admin/collect/trigger", {"mode": "backward", "end_date": "9999-12-31"}, "end_date"),
    ("post", "/api/admin/backfills/estimate/", {"start_date": "2025-01-01", "end_date": "9999-12-31"}, "end_date"),
    ("get", "/api/admin/gaps/?collector={slug}&end=9999-12-31", None, "end"),
    ("get", "/api/admin/logs/?run_id=9223372036854775808", None, "run_id"),
    ("get", "/api/admin/logs/?backfill_id=9223372036854775808", None, "backfill_id"),
])
def test_far_future_dates_and_huge_ids_are_400s_naming_the_field(api, method, path, body, field):
    collector = CollectorFactory(symbols=["BTCUSDT"])
    if body is not None:
        body = {**body, "collector": collector.slug}
    response = getattr(api, method)(path.format(slug=collector.slug), body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


def test_a_gap_report_for_an_unknown_or_malformed_symbol_is_a_400_naming_it(api):
    CollectorFactory(slug="gaps-400", symbols=["BTCUSDT"])
    for symbol in ("NOSUCHUSDT", "<b>x</b>"):
        answer = api.get("/api/admin/gaps/", {"collector": "gaps-400", "symbol": symbol})
        assert answer.status_code == 400 and "symbol" in answer.json(), (symbol, answer.content[:200])


def test_a_json_body_nested_thousands_deep_is_a_400_not_a_500(api):
    body = "[" * 5000 + "]" * 5000
    answer = api.post("/api/admin/collect/trigger", data=body, content_type="application/json")
    assert answer.status_code == 400 and "nested too deep" in answer.json()["detail"]
