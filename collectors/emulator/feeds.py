"""News feeds served by the exchange emulator, so the news collector's demo and tests run offline.

Plain Python (stdlib only); no Django. Paths (GET, weightless):

- ``/feeds/markets.rss``: RSS 2.0, an item every 20 minutes. Every 7th item has neither guid
  nor link (a reader must quarantine it); of the rest, every 5th has no guid (told apart by its
  link).
- ``/feeds/research.atom``: Atom 1.0, an entry every 3 hours, one or two authors each.
- ``/feeds/broken.rss``: not a feed at all (a JSON error body sent as RSS).

Entries are a deterministic function of time: item n covers [n * period, (n + 1) * period) and
is published at its start; each feed shows its latest ``feed_items`` (default 20) up to "now"
(the emulator's ``now_ms`` or the real clock). ETag and Last-Modified follow the newest entry;
a matching If-None-Match, or an If-Modified-Since not older than it, is answered 304.
``?edition=X`` serves another feed of the same shape with other guids and links (benchmarks).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from xml.sax.saxutils import escape

from collectors.times import utc_from_ms

_MIN = 60_000
_WORDS = ("BTC", "ETH", "SOL", "XRP", "BNB", "ADA", "DOGE", "LINK", "DOT", "AVAX")
_DESKS = ("Markets desk", "Derivatives desk", "Asia desk")
_ANALYSTS = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov")


def _pick(seq, n: int, salt: int = 0):
    return seq[(n * 7919 + salt) % len(seq)]


def _markets_item(n: int, period: int, base: str, edition: str) -> str:
    coin = _pick(_WORDS, n)
    move = ((n * 37) % 90) / 10
    verb = "rises" if n % 3 else "falls"
    parts = [f"<title>{coin} {verb} {move:.1f}% (update #{n})</title>",
             f"<description>{escape(f'{coin} {verb} {move:.1f}% in twenty minutes; volumes <b>steady</b>.')}"
             f"</description>",
             f"<pubDate>{format_datetime(utc_from_ms(n * period), usegmt=True)}</pubDate>",
             f"<author>desk@news.example ({_pick(_DESKS, n)})</author>"]
    if n % 7:  # every 7th item: neither guid nor link
        parts.append(f"<link>{base}/news/markets{edition}/{n}</link>")
        if n % 5:  # every 5th of the others: no guid, the link is its identity
            parts.append(f'<guid isPermaLink="false">urn:emulator:markets{edition}:{n}</guid>')
    return "<item>" + "".join(parts) + "</item>"


def _research_entry(n: int, period: int, base: str, edition: str) -> str:
    stamp = utc_from_ms(n * period).isoformat().replace("+00:00", "Z")
    authors = "".join(f"<author><name>{_pick(_ANALYSTS, n, salt)}</name></author>"
                      for salt in range(1 + n % 2))
    coin = _pick(_WORDS, n, 3)
    return (f"<entry><id>tag:news.example,2025:research{edition}/{n}</id>"
            f"<title>{coin}: weekly structure note #{n}</title>"
            f'<link rel="alternate" href="{base}/news/research{edition}/{n}"/>'
            f"<published>{stamp}</published><updated>{stamp}</updated>{authors}"
            f'<summary type="text">Support and resistance for {coin}, note {n}.</summary></entry>')


def _markets(numbers, period, base, updated, edition):
    items = "".join(_markets_item(n, period, base, edition) for n in reversed(numbers))
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>Emulator markets news</title><link>{base}/news/markets</link>"
            f"<description>Market moves, every 20 minutes</description>"
            f"<lastBuildDate>{format_datetime(updated, usegmt=True)}</lastBuildDate>{items}"
            "</channel></rss>"), "application/rss+xml; charset=utf-8"


def _research(numbers, period, base, updated, edition):
    entries = "".join(_research_entry(n, period, base, edition) for n in reversed(numbers))
    stamp = updated.isoformat().replace("+00:00", "Z")
    return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<id>tag:news.example,2025:research</id><title>Emulator research notes</title>"
            f'<link rel="self" href="{base}/feeds/research.atom"/><updated>{stamp}</updated>'
            f"{entries}</feed>"), "application/atom+xml; charset=utf-8"


def _broken(numbers, period, base, updated, edition):
    return '{"error": "feed generator crashed"}', "application/rss+xml"


# name -> (period ms, renderer)
FEEDS = {
    "markets.rss": (20 * _MIN, _markets),
    "research.atom": (180 * _MIN, _research),
    "broken.rss": (24 * 60 * _MIN, _broken),
}


def feed_response(name: str, *, now_ms: int, items: int, base: str, if_none_match: str | None,
                  if_modified_since: str | None, edition: str = ""):
    """-> (status, body bytes, content type, extra headers), or None for an unknown feed."""
    if name not in FEEDS:
        return None
    period, render = FEEDS[name]
    newest = now_ms // period
    numbers = list(range(max(0, newest - items + 1), newest + 1))
    updated = utc_from_ms(newest * period)
    edition = f"-{edition}" if edition else ""
    etag = '"' + hashlib.sha256(f"{name}:{newest}:{items}:{base}{edition}".encode()).hexdigest()[:16] + '"'
    headers = [("ETag", etag), ("Last-Modified", format_datetime(updated, usegmt=True)),
               ("Cache-Control", "max-age=60")]
    if if_none_match is not None:
        # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
        fresh = etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")] \
            or if_none_match.strip() == "*"
    else:
        fresh = _not_older(if_modified_since, updated)
    if fresh:
        return 304, b"", "text/plain", headers
    body, ctype = render(numbers, period, base, updated, edition)
    return 200, body.encode(), ctype, headers


def _not_older(header: str | None, updated: datetime) -> bool:
    if not header:
        return False
    try:
        return parsedate_to_datetime(header) >= updated
    except (TypeError, ValueError):
        return False
