"""A key sent in the query string appears in no log, whatever separates it (`&`, `;`, `&amp;`)
and whichever server logs the request line (runserver, gunicorn)."""

import logging
import sys

import pytest
import requests

from collectors.models import ApiKey
from config.logging import redact_query
from tests.e2e import Process, _port_open, child_env, free_port, start_web, wait_for

RUNS = "/api/admin/runs/"


@pytest.mark.parametrize("line, expected", [
    ('"GET /x?api_key=K1 HTTP/1.1" 401 58', '"GET /x?api_key=[redacted] HTTP/1.1" 401 58'),
    ('"GET /x?a=1;api_key=K1 HTTP/1.1" 401', '"GET /x?a=1;api_key=[redacted] HTTP/1.1" 401'),
    ('"GET /x?a=1&amp;API-KEY=K1&b=2 HTTP/1.1"', '"GET /x?a=1&amp;API-KEY=[redacted]&b=2 HTTP/1.1"'),
    ('"GET /x?api%5Fkey=K1&token=T&password=P HTTP/1.1"',
     '"GET /x?api%5Fkey=[redacted]&token=[redacted]&password=[redacted] HTTP/1.1"'),
    ('"GET /x?page=2&status=failed HTTP/1.1" 404', '"GET /x?page=2&status=failed HTTP/1.1" 404'),
])
def test_secret_looking_query_parameters_are_redacted_in_a_request_line(line, expected):
    assert redact_query(line) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["x=1;api_key={key}", "api_key={key};x=1", "x=1&amp;api_key={key}",
                                   "api%5Fkey={key}&x=1", "x=1;y=2;api_key={key}"])
def test_the_middleware_takes_the_key_out_whatever_the_separator(client, admin_key, caplog, query):
    secret = admin_key.partition(".")[2]
    with caplog.at_level(logging.INFO):
        response = client.get(f"{RUNS}?{query.format(key=admin_key)}")

    assert response.status_code in (200, 401)
    assert response.wsgi_request.META["QUERY_STRING"].startswith(("x=1", "y=2", "")), response.wsgi_request.META
    assert "api" not in response.wsgi_request.META["QUERY_STRING"].lower()
    assert not any(secret in str(record.msg) for record in caplog.records)


@pytest.mark.django_db
def test_a_key_after_a_semicolon_is_taken_as_the_key_and_out_of_the_query(client, admin_key):
    # Django alone would read `x=1;api_key=KEY` as x = "1;api_key=KEY"; the caller meant a key.
    response = client.get(f"{RUNS}?x=1;api_key={admin_key}")
    assert response.status_code == 200 and response.wsgi_request.META["QUERY_STRING"] == "x=1"
    assert client.get(f"{RUNS}?api_key={admin_key}&x=1").status_code == 200
    assert client.get(f"{RUNS}?x=1;api_key={admin_key}x").status_code == 401


@pytest.mark.django_db
def test_a_referer_that_carries_a_key_is_redacted_before_anything_logs_it(client, admin_key):
    referer = f"http://testserver/api/admin/collect/status?x=1&api_key={admin_key}"
    response = client.get("/api/admin/runs/", HTTP_REFERER=referer, HTTP_X_API_KEY=admin_key)
    assert response.wsgi_request.META["HTTP_REFERER"] == \
        "http://testserver/api/admin/collect/status?x=1&api_key=[redacted]"


def start_runserver(tmp_path, port) -> Process:
    proc = Process([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                   env=child_env(), log_path=tmp_path / "runserver.log")
    wait_for(lambda: _port_open(port), timeout=20, what="runserver to listen")
    return proc


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["runserver", "gunicorn"])
def test_no_server_logs_a_key_from_the_query_string(tmp_path, server):
    _, key = ApiKey.objects.create_key(name="logged")
    port = free_port()
    proc = start_runserver(tmp_path, port) if server == "runserver" else start_web(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        # A page opened with ?api_key= is the Referer of what the browser loads next.
        referer = {"Referer": f"{base}/api/admin/collect/status?api_key={key}"}
        answers = [requests.get(f"{base}{path}", timeout=10, headers=referer).status_code for path in (
            f"{RUNS}?api_key={key}",  # 200
            f"{RUNS}?x=1;api_key={key}",  # 200: taken after a `;` too
            f"{RUNS}?x=1&amp;api_key={key}",  # 200: and after `&amp;`
            f"/api/admin/nothing?api_key={key}",  # 404
            f"{RUNS}?api_key={key}x",  # 401: a wrong key is as secret as a right one
        )]
    finally:
        proc.stop()
    assert answers == [200, 200, 200, 404, 401]
    output = proc.output()
    for secret in (key, key.partition(".")[2]):
        assert secret not in output, f"{server} logged the key"
    # The lines were logged (4xx at least), with the key taken out or redacted.
    assert "GET /api/admin/nothing" in output and "/api/admin/runs/?x=1" in output, output[-3000:]
