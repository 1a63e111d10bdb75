"""The coverage map in a real browser (Debian's chromium, driven by Playwright): it renders,
a screenshot is taken, and a click on a cell leads to that day and on to a gap fill."""

from pathlib import Path

import pytest

from collectors.models import CollectionRun
from tests.browser import MARKS, operator_context

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = MARKS


@pytest.fixture
def browser_page(live_server, admin_user, client, monkeypatch):
    with operator_context(live_server, admin_user, client, monkeypatch) as context:
        yield context.new_page()


def test_the_map_renders_is_screenshotted_and_a_cell_click_leads_to_a_gap_fill(browser_page, live_server, covered):
    page = browser_page
    page.goto(f"{live_server.url}/admin/quality/qualitysnapshot/coverage/{covered.pk}/?days=7&end=2025-03-06")
    svg = page.locator("svg.coverage-map")
    assert svg.is_visible() and page.locator("svg.coverage-map text", has_text="BTCUSDT").count() == 1
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "coverage-map.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
    # Click the middle of BTCUSDT's 2025-03-03 cell: column 3 (from 02-28), row 0.
    data = svg.evaluate("s => ({...s.dataset})")
    x = int(data["left"]) + 3 * int(data["cellW"]) + int(data["cellW"]) // 2
    y = int(data["top"]) + int(data["rowH"]) // 2
    svg.click(position={"x": x, "y": y})
    page.wait_for_url("**/BTCUSDT/2025-03-03/")
    assert "4 missing in 1 gap" in " ".join(page.locator("#content").inner_text().split())
    page.get_by_role("button", name="Gap fill BTCUSDT on 2025-03-03").click()
    page.wait_for_url("**/collectionrun/*/change/")
    run = CollectionRun.objects.latest("id")
    assert (run.mode, run.requested_symbols) == ("gap_fill", ["BTCUSDT"])
