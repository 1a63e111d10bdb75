"""Guessing is throttled per client address: wrong API keys (ApiKeyLockout) and admin logins
(django-axes); behind proxies the address comes from X-Forwarded-For only as configured."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from config.security import client_address

pytestmark = pytest.mark.django_db

RUNS = "/api/admin/runs/"
WRONG = "abcdefgh.wrongsecretwrongsecretwrongsec"


@pytest.fixture
def limit(settings):
    settings.API_KEY_FAILURE_LIMIT = 3
    settings.API_KEY_COOLOFF_MINUTES = 1
    return 3


def get(client, key, address="203.0.113.7", **headers):
    return client.get(RUNS, HTTP_X_API_KEY=key, REMOTE_ADDR=address, **headers)


def test_wrong_keys_lock_the_address_out_even_for_the_right_key(client, admin_key, limit):
    assert [get(client, WRONG).status_code for _ in range(limit)] == [401] * limit

    refused = get(client, admin_key)

    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("application/json")
    assert "Too many wrong API keys from 203.0.113.7" in refused.json()["detail"]
    assert 0 < int(refused["Retry-After"]) <= 60
    assert get(client, admin_key, address="203.0.113.8").status_code == 200  # another address is not
    assert client.get("/health", REMOTE_ADDR="203.0.113.7").status_code == 200  # probes need no key


def test_the_lockout_ends_after_the_cool_off(client, admin_key, settings):
    settings.API_KEY_FAILURE_LIMIT = 2
    settings.API_KEY_COOLOFF_MINUTES = 0.02  # 1.2 s
    get(client, WRONG), get(client, WRONG)
    assert get(client, admin_key).status_code == 429

    time.sleep(1.5)

    assert get(client, admin_key).status_code == 200
    assert get(client, WRONG).status_code == 401  # a fresh count: one wrong key is not a lockout
    assert get(client, admin_key).status_code == 200


def test_fewer_wrong_keys_than_the_limit_do_not_lock_out(client, admin_key, limit):
    assert [get(client, WRONG).status_code for _ in range(limit - 1)] == [401] * (limit - 1)

    assert [get(client, admin_key).status_code for _ in range(5)] == [200] * 5


def test_the_lockout_can_be_switched_off(client, admin_key, settings):
    settings.API_KEY_FAILURE_LIMIT = 0

    assert {get(client, WRONG).status_code for _ in range(30)} == {401}
    assert get(client, admin_key).status_code == 200


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_escape_the_lockout(client, admin_key, limit):
    for i in range(limit):
        get(client, WRONG, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")

    assert get(client, admin_key, HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429


def test_behind_a_trusted_proxy_each_client_is_counted_by_the_address_the_proxy_saw(client, admin_key, limit,
                                                                                   settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.5"
    for i in range(limit):  # the client forges the left part; the proxy appends what it saw
        get(client, WRONG, address=proxy, HTTP_X_FORWARDED_FOR=f"1.1.1.{i}, 198.51.100.1")

    assert get(client, admin_key, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert get(client, admin_key, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200


@pytest.mark.parametrize("proxies, remote, forwarded, expected", [
    (0, "10.0.0.5", "6.6.6.6", "10.0.0.5"),
    (1, "10.0.0.5", "6.6.6.6, 198.51.100.1", "198.51.100.1"),
    (2, "10.0.0.5", "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),
    (1, "10.0.0.5", "", "10.0.0.5"),  # not through the proxy (a probe on the pod)
    (2, "10.0.0.5", "198.51.100.1", "10.0.0.5"),
])
def test_the_client_address_trusts_only_the_configured_proxies(settings, proxies, remote, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

    assert client_address(request) == expected


# --- admin logins (django-axes) ---------------------------------------------------------------

@pytest.fixture
def ops(settings):
    settings.AXES_FAILURE_LIMIT = 3
    get_user_model().objects.create_user("ops", password="right-password", is_staff=True)
    return "ops"


def login(client, password, address="203.0.113.7", username="ops"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_failed_admin_logins_lock_the_address_out_even_with_the_right_password(client, ops):
    assert [login(client, "guess").status_code for _ in range(2)] == [200, 200]  # the form again
    assert login(client, "guess").status_code == 429  # the third failure locks

    locked = login(client, "right-password")

    assert locked.status_code == 429
    assert "too many login attempts" in locked.content.decode().lower()
    assert "_auth_user_id" not in client.session


def test_the_admin_lockout_is_per_address_so_a_guesser_cannot_lock_the_user_out(client, ops):
    for _ in range(3):
        login(client, "guess", address="203.0.113.7")

    ok = login(client, "right-password", address="192.0.2.10")

    assert ok.status_code == 302 and ok["Location"] == "/admin/"
    assert client.session["_auth_user_id"]
