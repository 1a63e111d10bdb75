"""The Content-Security-Policy in a real browser (Debian's chromium, driven by Playwright): every
admin page of ours and the API docs render under it with no violation, and the scripts that moved
out of the templates into static files still do their work."""

import pytest

from backfills import services as backfill_services
from collectors import services
from tests.browser import MARKS, operator_context
from tests.quality.conftest import covered, utc  # noqa: F401 (the fixture)

pytestmark = MARKS

# Collects every violation the page reports (an init script runs before the page's own and is not
# subject to its policy).
WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " +
                              e.sourceFile + ":" + e.lineNumber);
});
"""

# ReDoc's footer always asks cdn.redoc.ly for its logo: the policy blocks it (nothing from outside
# the server; the image hides itself), which is the one violation expected anywhere.
REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOGO = f"img-src blocked {REDOC_LOGO_URL}"


@pytest.fixture
def browser(live_server, admin_user, client, monkeypatch):
    with operator_context(live_server, admin_user, client, monkeypatch) as context:
        context.add_init_script(WATCH_VIOLATIONS)
        yield context


class Visit:
    """Opens pages in one tab and keeps what the console said about the policy."""

    def __init__(self, context, base):
        self.page, self.base, self.console = context.new_page(), base, []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    def open(self, path, *, ready):
        self.console.clear()
        response = self.page.goto(self.base + path)
        assert response.status == 200, (path, response.status)
        policy = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, (path, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (path, policy)
        self.page.locator(ready).first.wait_for(state="visible", timeout=15_000)
        self.page.wait_for_load_state("networkidle")
        violations = [v for v in self.page.evaluate("window.__cspViolations") if not v.startswith(REDOC_LOGO)]
        policy_lines = [line for line in self.console
                        if "Content Security Policy" in line and REDOC_LOGO_URL not in line]
        assert violations == [] and policy_lines == [], (path, violations, policy_lines)
        return self.page


def test_admin_pages_and_api_docs_render_under_the_policy_with_no_violation(browser, live_server, covered):
    run = services.run_trigger(collector=covered, mode="gap_fill", triggered_by="tests", enqueue=False)
    job, _ = backfill_services.backfill_create(collector=covered, start=utc(2025, 3, 1), end=utc(2025, 3, 4),
                                               symbols=["BTCUSDT"], force=True, created_by="tests")
    assert run.is_active and job.is_active  # so their pages show live progress and refresh
    visit = Visit(browser, live_server.url)

    visit.open("/admin/", ready="#content-main")
    runs = visit.open("/admin/collectors/collectionrun/", ready="svg.progress")
    assert runs.locator("script[src*='runs_refresh.js']").count() == 1  # the live list reloads itself

    page = visit.open(f"/admin/collectors/collectionrun/{run.pk}/change/", ready="input[name=_cancel_run]")
    assert page.locator("meta[http-equiv=refresh]").count() == 1
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.locator("input[name=_cancel_run]").click()  # static/collectors/admin.js asks first
    page.wait_for_timeout(300)
    assert asked == ["Cancel this run? Data already stored stays."]
    run.refresh_from_db()
    assert run.is_active  # dismissed: nothing was posted

    visit.open("/admin/backfills/backfilljob/add/", ready="#backfill-form")
    page = visit.open(f"/admin/backfills/backfilljob/{job.pk}/change/", ready="svg.progress")
    assert page.locator("meta[http-equiv=refresh]").count() == 1
    colour = page.locator("input[name=_cancel]").evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(186, 33, 33)"

    page = visit.open(f"/admin/quality/qualitysnapshot/report/{covered.pk}/", ready="table.full")
    page = visit.open(f"/admin/quality/qualitysnapshot/coverage/{covered.pk}/?days=7&end=2025-03-06",
                      ready="svg.coverage-map")
    assert page.locator(".legend-item svg").count() == 8
    svg = page.locator("svg.coverage-map")
    data = svg.evaluate("s => ({...s.dataset})")
    svg.click(position={"x": int(data["left"]) + 3 * int(data["cellW"]) + 1, "y": int(data["top"]) + 2})
    page.wait_for_url("**/BTCUSDT/2025-03-03/")  # static/quality/coverage.js turned the click into the day

    page = visit.open("/api/docs/", ready=".opblock")
    assert page.locator(".opblock").count() > 20  # Swagger UI listed the operations
    page = visit.open("/api/redoc/", ready="h1")
    assert "Market-data collection control plane" in page.locator("h1").first.inner_text()
    assert page.locator("[role=menuitem]", has_text="runs").count() >= 1  # ReDoc's side menu
