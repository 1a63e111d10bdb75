"""The coverage map's cell links carry symbols URL-encoded: a feed-like name with '/', '?', '#',
'%', '&', quotes or '$&' opens its own day page."""

import json
import re
from html import escape, unescape

import pytest
from django.urls import reverse

from quality.charts import coverage_svg
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
ODD = 'A/B C?#%&"<$&x'


def map_links(html: str) -> tuple[str, list[str]]:
    day_url = unescape(re.search(r'data-day-url="([^"]*)"', html).group(1))
    symbols = json.loads(unescape(re.search(r'data-symbols="([^"]*)"', html).group(1)))
    return day_url, symbols


def test_a_cell_link_of_a_symbol_with_reserved_characters_opens_that_symbols_day(operator):
    collector = CollectorFactory(symbols=["BTCUSDT", ODD])
    html = operator.get(reverse("admin:quality_coverage", args=[collector.pk]) + "?days=3&end=2025-03-03") \
        .content.decode()
    day_url, symbols = map_links(html)
    assert symbols == ["A%2FB%20C%3F%23%25%26%22%3C%24%26x", "BTCUSDT"]
    # What the click script does with a click on the first row's first day:
    url = day_url.replace("SYMBOL", symbols[0]).replace("0000-00-00", "2025-03-01")
    page = operator.get(url)
    assert page.status_code == 200, url
    assert f"{escape(ODD)} on 2025-03-01" in page.content.decode()


def test_the_svg_never_carries_a_symbol_raw_in_an_attribute():
    grid = {"days": [], "rows": [('"><script>x</script>', [])]}
    svg = coverage_svg(grid, day_url="/d/SYMBOL/0000-00-00/")
    assert '"><script>' not in svg and "&quot;&gt;&lt;script&gt;" in svg  # the label, escaped
    assert map_links(svg)[1] == ["%22%3E%3Cscript%3Ex%3C%2Fscript%3E"]
