"""Production settings: the documented environment passes `check --deploy`, a missing secret key
stops the start, HTTPS settings leave the probes alone, an open API is warned about."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def documented_environment() -> dict:
    """The `sh` block under "## Production environment" in SECURITY.md, with a real key."""
    text = (ROOT / "SECURITY.md").read_text()
    section = text.split("## Production environment", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    env = dict(line.split("=", 1) for line in block.strip().splitlines())
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


def manage(*args, env) -> subprocess.CompletedProcess:
    """manage.py in a child with only the given settings variables (nothing from .env or ours)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "DATABASE_URL": "sqlite:////tmp/collectors-check-deploy.sqlite3", **env},
                          timeout=60)


def test_check_deploy_is_clean_with_the_documented_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=documented_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("left_out, warning", [("SECURE_HSTS_SECONDS", "security.W004"),
                                               ("SESSION_COOKIE_SECURE", "security.W012"),
                                               ("SECURE_SSL_REDIRECT", "security.W008")])
def test_check_deploy_names_a_production_setting_that_is_left_out(left_out, warning):
    env = documented_environment()
    del env[left_out]

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0 and warning in result.stderr, result.stderr


@pytest.mark.parametrize("secret_key", [None, ""])
def test_without_debug_a_missing_secret_key_stops_the_start_naming_it(secret_key):
    env = documented_environment()
    del env["SECRET_KEY"]
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr  # how to make one


def test_the_demo_runs_without_a_secret_key_when_debug_is_on():
    result = manage("check", env={"DEBUG": "true"})

    assert result.returncode == 0, result.stderr


def test_an_open_api_outside_debug_is_a_warning_at_every_command_and_at_web_start():
    env = {**documented_environment(), "API_KEY_REQUIRED": "false"}

    deploy = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    plain = manage("check", env=env)
    debug = manage("check", env={"DEBUG": "true", "API_KEY_REQUIRED": "false"})
    web = subprocess.run([sys.executable, "-c", "import config.wsgi"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **env, "LOG_FORMAT": "json"}, timeout=60)

    assert deploy.returncode != 0 and "collectors.W001" in deploy.stderr
    assert plain.returncode == 0 and "collectors.W001" in plain.stderr and "API_KEY_REQUIRED is false" in plain.stderr
    assert "collectors.W001" not in debug.stderr + debug.stdout
    assert web.returncode == 0, web.stderr
    assert '"event": "unsafe_setting"' in web.stderr and '"id": "collectors.W001"' in web.stderr, web.stderr


def test_the_proxy_ssl_header_is_read_in_either_spelling_and_a_bad_one_is_refused():
    for text in ("X-Forwarded-Proto,https", "HTTP_X_FORWARDED_PROTO, https"):
        result = manage("shell", "-c", "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)",
                        env={"DEBUG": "true", "SECURE_PROXY_SSL_HEADER": text})
        assert result.stdout.strip().endswith("('HTTP_X_FORWARDED_PROTO', 'https')"), result.stdout + result.stderr
    bad = manage("check", env={"DEBUG": "true", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"})
    assert bad.returncode != 0 and "SECURE_PROXY_SSL_HEADER must be like" in bad.stderr


@pytest.mark.django_db
def test_with_ssl_redirect_the_probes_stay_on_plain_http_and_the_rest_moves_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    for probe in ("/health", "/ready", "/metrics"):
        assert client.get(probe).status_code in (200, 503), probe  # answered, not redirected
    admin = client.get("/admin/")
    assert admin.status_code == 301 and admin["Location"] == "https://testserver/admin/"
    api = client.get("/api/admin/runs/?page=2")
    assert api.status_code == 301 and api["Location"].startswith("https://")
    behind_proxy = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert behind_proxy.status_code == 200
    assert behind_proxy["Strict-Transport-Security"] == "max-age=3600"
    assert re.search(r"frame-ancestors 'none'", behind_proxy["Content-Security-Policy"])
