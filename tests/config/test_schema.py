"""The OpenAPI schema (/api/schema/) documents the contract and validates; the API docs pages
load their assets from the installed packages, not a CDN."""

import io

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_documents_every_endpoint_of_the_contract(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/admin/collect/trigger", "/api/admin/collect/status", "/api/admin/runs/",
            "/api/admin/runs/{id}/", "/api/admin/runs/{id}/cancel/", "/api/admin/collectors/",
            "/api/admin/collectors/{slug}/", "/api/admin/candles/", "/health", "/ready"} <= set(schema["paths"])
    trigger = schema["paths"]["/api/admin/collect/trigger"]["post"]
    assert {"202", "400", "409"} <= set(trigger["responses"])
    assert {"ApiKeyHeader", "Bearer"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_their_assets_from_the_installed_packages(client, url):
    response = client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower() and "https://" not in html
    assets = [part.split('"')[0] for attribute in ('src="/static/', 'href="/static/')
              for part in html.split(attribute)[1:]]
    assert assets, "expected script tags pointing at /static/"
    for asset in assets:
        assert finders.find(asset), f"{asset} is not in any installed static directory"


def test_schema_generates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())
