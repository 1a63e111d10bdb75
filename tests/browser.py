"""Browser tests' plumbing: Debian's chromium driven by Playwright (never `playwright install`),
and a browser context logged in as the test's staff user."""

import shutil
from contextlib import contextmanager

import pytest

CHROMIUM = "/usr/bin/chromium"
MARKS = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"needs {CHROMIUM} (apt-get install -y chromium)"),
]


@contextmanager
def operator_context(live_server, admin_user, client, monkeypatch):
    """A 1400x900 browser context with `admin_user`'s session cookie for `live_server`."""
    from playwright.sync_api import sync_playwright  # optional: only browser tests need it

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes in
    # between are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    client.force_login(admin_user)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                              "url": live_server.url}])
        try:
            yield context
        finally:
            chromium.close()
