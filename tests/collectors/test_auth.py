"""Who may call /api/admin/: API keys (header, Bearer, query), staff sessions, scopes."""

import logging
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from collectors.models import ApiKey, CollectionRun, Collector
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db

TRIGGER = "/api/admin/collect/trigger"
RUNS = "/api/admin/runs/"
COLLECTORS = "/api/admin/collectors/"


@pytest.fixture
def anonymous():
    return APIClient()


def assert_401(response):
    assert response.status_code == 401, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize("url", [TRIGGER, "/api/admin/collect/status", RUNS, COLLECTORS,
                                 "/api/admin/candles/?collector=x"])
def test_admin_api_without_a_key_is_401(anonymous, url):
    assert_401(anonymous.get(url))


def test_trigger_without_key_is_401_and_starts_nothing(anonymous):
    collector = CollectorFactory()

    assert_401(anonymous.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json"))
    assert not CollectionRun.objects.exists()


@pytest.mark.parametrize("credentials", [
    {"HTTP_X_API_KEY": "not-a-key"},
    {"HTTP_X_API_KEY": "abcdefgh.wrongsecretwrongsecretwrongsec"},
    {"HTTP_X_API_KEY": "ключ.ключ"},
    {"HTTP_X_API_KEY": "x" * 5000},
    {"HTTP_AUTHORIZATION": "Bearer not-a-key"},
])
def test_a_wrong_key_is_401(anonymous, credentials):
    anonymous.credentials(**credentials)

    assert_401(anonymous.get(RUNS))


def test_a_key_with_the_right_prefix_but_wrong_secret_is_401(anonymous, admin_key):
    prefix = admin_key.partition(".")[0]
    anonymous.credentials(HTTP_X_API_KEY=f"{prefix}.{'0' * 32}")

    assert_401(anonymous.get(RUNS))


def test_a_revoked_key_is_401(anonymous, admin_key):
    ApiKey.objects.update(revoked=True)
    anonymous.credentials(HTTP_X_API_KEY=admin_key)

    response = anonymous.get(RUNS)

    assert_401(response)
    assert "revoked" in response.json()["detail"]


def test_an_expired_key_is_401(anonymous, admin_key):
    ApiKey.objects.update(expiry_date=timezone.now() - timedelta(seconds=1))
    anonymous.credentials(HTTP_X_API_KEY=admin_key)

    response = anonymous.get(RUNS)

    assert_401(response)
    assert "expired" in response.json()["detail"]


def test_a_key_that_has_not_expired_yet_is_accepted(anonymous, admin_key):
    ApiKey.objects.update(expiry_date=timezone.now() + timedelta(days=1))
    anonymous.credentials(HTTP_X_API_KEY=admin_key)

    assert anonymous.get(RUNS).status_code == 200


@pytest.mark.parametrize("how", ["header", "bearer", "query"])
def test_a_key_is_accepted_in_the_header_as_bearer_or_in_the_query(anonymous, admin_key, how):
    collector = CollectorFactory()
    url = TRIGGER
    if how == "header":
        anonymous.credentials(HTTP_X_API_KEY=admin_key)
    elif how == "bearer":
        anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    else:
        url = f"{TRIGGER}?api_key={admin_key}"

    response = anonymous.post(url, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 202
    assert CollectionRun.objects.get().triggered_by == "api:tests"


def test_the_query_parameter_can_be_switched_off(anonymous, admin_key, settings):
    settings.API_KEY_QUERY_PARAM_ENABLED = False

    response = anonymous.get(RUNS, {"api_key": admin_key})

    assert_401(response)
    assert "X-API-Key" in response.json()["detail"]


def test_a_key_in_the_query_is_not_logged_in_clear(anonymous, admin_key, caplog):
    with caplog.at_level(logging.INFO):
        assert anonymous.get(RUNS, {"api_key": admin_key, "status": "failed"}).status_code == 200

    logged = [str(record.msg) for record in caplog.records]
    assert any("GET /api/admin/runs/?status=failed'" in line for line in logged), logged  # the key is taken out
    assert not any(admin_key in line for line in logged)
    assert not any(admin_key.partition(".")[2] in line for line in logged)


def test_a_read_only_key_may_read(anonymous, read_key):
    RunFactory()
    anonymous.credentials(HTTP_X_API_KEY=read_key)

    assert anonymous.get(RUNS).status_code == 200
    assert anonymous.get(COLLECTORS).status_code == 200
    assert anonymous.get("/api/admin/collect/status").status_code == 200


def test_a_read_only_key_may_not_change_anything(anonymous, read_key):
    collector = CollectorFactory()
    run = RunFactory(collector=collector)
    anonymous.credentials(HTTP_X_API_KEY=read_key)

    responses = [
        anonymous.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json"),
        anonymous.post(f"{RUNS}{run.pk}/cancel/"),
        anonymous.patch(f"{COLLECTORS}{collector.slug}/", {"enabled": False}, format="json"),
        anonymous.post(COLLECTORS, {"slug": "new", "name": "New", "kind": "binance_klines",
                                    "symbols": ["BTCUSDT"]}, format="json"),
    ]

    assert [r.status_code for r in responses] == [403] * 4
    assert all(r.json()["detail"] for r in responses)
    assert CollectionRun.objects.get().status == "queued"
    assert Collector.objects.get().enabled is True


def test_a_staff_session_may_read_and_change(anonymous):
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    collector = CollectorFactory()
    anonymous.force_login(staff)

    assert anonymous.get(RUNS).status_code == 200
    response = anonymous.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 202
    assert CollectionRun.objects.get().triggered_by == "user:ops"


def test_a_session_without_staff_status_is_403(anonymous):
    anonymous.force_login(get_user_model().objects.create_user("visitor", password="pw"))

    response = anonymous.get(RUNS)

    assert response.status_code == 403
    assert "Staff" in response.json()["detail"]


def test_a_staff_session_must_pass_the_csrf_check_to_change_anything():
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_user("ops", password="pw", is_staff=True))
    collector = CollectorFactory()

    response = client.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not CollectionRun.objects.exists()


def test_the_browsable_api_works_with_a_key(anonymous, admin_key):
    CollectorFactory()
    anonymous.credentials(HTTP_X_API_KEY=admin_key)

    response = anonymous.get(COLLECTORS, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"binance-" in response.content


def test_keys_can_be_made_optional(anonymous, settings):
    settings.API_KEY_REQUIRED = False
    collector = CollectorFactory()

    response = anonymous.post(TRIGGER, {"mode": "forward", "collector": collector.slug}, format="json")

    assert response.status_code == 202
    assert CollectionRun.objects.get().triggered_by == "anonymous"


@pytest.mark.parametrize("url", ["/health", "/ready", "/metrics", "/api/schema/", "/api/docs/"])
def test_probes_metrics_and_docs_need_no_key(anonymous, url):
    assert anonymous.get(url).status_code == 200


def test_look_alike_secret_parameters_are_dropped_and_key_links_still_work(anonymous, admin_key, caplog):
    with caplog.at_level(logging.INFO):
        response = anonymous.get(f"{RUNS}?API_KEY=s3cr3t-one&apikey=s3cr3t-two&token=s3cr3t-3&page_size=1",
                                 HTTP_X_API_KEY=admin_key)
    assert response.status_code == 200
    assert not any("s3cr3t" in str(record.msg) for record in caplog.records)
    RunFactory(), RunFactory()
    page = anonymous.get(f"/api/admin/logs/?api_key={admin_key}&limit=5")
    assert page.status_code == 200  # not "unknown field api_key"
    runs = anonymous.get(f"{RUNS}?api_key={admin_key}&page_size=1").json()
    assert runs["next"] and "api_key" not in runs["next"]
