"""The Content-Security-Policy header, and pages that need nothing it forbids (no inline script,
style or event handler), checked in the HTML; tests/config/test_csp_browser.py checks them in a browser."""

import re

import pytest

from backfills import services as backfill_services
from collectors import services
from tests.quality.conftest import covered, utc  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db

INLINE = [
    re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I),  # inline script
    re.compile(rb"<style", re.I),
    re.compile(rb"\sstyle=", re.I),
    re.compile(rb"\son[a-z]+=", re.I),  # onclick=, onsubmit=...
    re.compile(rb"javascript:", re.I),
]


def assert_strict_policy(response):
    policy = response["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                      "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'"):
        assert directive in policy, (directive, policy)
    assert "unsafe" not in policy and "http" not in policy


def assert_nothing_inline(response, url):
    assert response.status_code == 200, url
    assert_strict_policy(response)
    found = [m.group(0) for pattern in INLINE for m in pattern.finditer(response.content)]
    assert found == [], (url, found)


def test_every_page_of_ours_has_the_policy_and_nothing_inline_it_would_block(admin_client, client, covered):
    run = services.run_trigger(collector=covered, mode="gap_fill", triggered_by="tests", enqueue=False)
    job, _ = backfill_services.backfill_create(collector=covered, start=utc(2025, 3, 1), end=utc(2025, 3, 4),
                                               symbols=["BTCUSDT"], created_by="tests")
    pages = ["/admin/", "/admin/collectors/collectionrun/",
             f"/admin/collectors/collectionrun/{run.pk}/change/", "/admin/collectors/collector/",
             f"/admin/collectors/collector/{covered.pk}/change/", "/admin/backfills/backfilljob/",
             "/admin/backfills/backfilljob/add/", f"/admin/backfills/backfilljob/{job.pk}/change/",
             f"/admin/quality/qualitysnapshot/report/{covered.pk}/",
             f"/admin/quality/qualitysnapshot/coverage/{covered.pk}/?days=7&end=2025-03-06",
             f"/admin/quality/qualitysnapshot/coverage/{covered.pk}/BTCUSDT/2025-03-03/",
             "/api/docs/", "/api/redoc/"]
    for url in pages:
        assert_nothing_inline(admin_client.get(url), url)
    assert_nothing_inline(client.get("/admin/login/"), "/admin/login/")


def test_swagger_ui_gets_its_init_script_as_a_file_from_this_server(client):
    page = client.get("/api/docs/").content.decode()
    script = re.search(r'<script src="(/api/docs/\?[^"]*script[^"]*)"', page)

    assert script, page
    response = client.get(script.group(1).replace("&amp;", "&"))
    assert response.status_code == 200 and response["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in response.content and b"/api/schema/" in response.content


def test_probes_and_the_json_api_carry_the_header_too(api):
    for url in ("/health", "/api/admin/runs/"):
        assert_strict_policy(api.get(url))
