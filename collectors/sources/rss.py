"""News articles from RSS 2.0 and Atom feeds (parsed by feedparser).

Config: {"feeds": ["https://example.com/news.rss", ...]}. Each feed is one "symbol" of the
collector, named from its URL (feed_name), so runs, progress, quarantine and the quality report
are per feed like they are per symbol for candles.

A feed is a window on its latest entries, not an archive that can be asked for a range, so
every mode reads the window and stores the entries not stored yet (deduplicated by guid, or by
link when an entry has no guid, across all feeds of the collector). Forward runs send the
ETag/Last-Modified of the last stored fetch: an unchanged feed costs one 304 and stores
nothing. Backward and gap_fill read the window unconditionally (an entry deleted here, or
quarantined and since fixed upstream, comes back); they cannot reach further back than the
window. The engine stores only entries published in [start, end) (a run's dates, else the
collector's beginning date onwards). Entries that cannot be read are quarantined with a rule
from RULES; a document that is not a feed at all is quarantined and fails its feed (the run is
partial, not aborted).
"""

import calendar
import hashlib
import io
import re
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import feedparser

from collectors.outbound import mask_url
from collectors.sources import (
    ConfigError,
    Document,
    MalformedResponse,
    Page,
    SourceError,
    unknown_keys,
    url_error,
)
from collectors.times import EARLIEST

if TYPE_CHECKING:  # the wrapper is handed in; a leaf does not import it
    from collectors.http import Upstream

CONFIG_KEYS = {"feeds"}
MAX_FEEDS = 100
FUTURE_TOLERANCE = timedelta(days=1)  # feeds' clocks run ahead; further ahead is a wrong time
ROOT_ENDS = (b"</rss>", b"</feed>", b"</rdf:RDF>")

RULES = {
    "malformed_feed": "The document is not an RSS or Atom feed that can be read (kept: its URL, "
                      "why, its media type and size; never its content).",
    "no_id": "The entry has neither a guid/id nor a link, so it cannot be told apart from others.",
    "no_time": "The entry has no published or updated time that can be read (or one before 1970).",
    "future_time": "The entry's time is more than a day ahead of the clock.",
}


def feed_name(url: str) -> str:
    """A feed's name (its symbol): host and path, upper-cased, without www., the port and the
    extension (so a feed keeps its name when its server moves), e.g.
    https://www.example.com/news/markets.rss -> EXAMPLE.COM-NEWS-MARKETS; names longer than 32
    characters are cut and end in a hash of the URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    path = re.sub(r"\.(rss|xml|atom|rdf)$", "", parts.path.strip("/"), flags=re.IGNORECASE)
    name = re.sub(r"[^A-Z0-9._]+", "-", f"{host}/{path}{parts.query}".upper()).strip("-._")
    if len(name) > 32 or parts.query:
        name = f"{name[:25].rstrip('-._')}-{_digest(url)[:6]}"
    return name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest().upper()


def parse_feed(document: Document):
    """feedparser's reading of a document. A feed cut short (not well-formed, and no closing
    root tag) is a transport failure and retried: read leniently, its last entry could be
    stored with a cut title. Other flaws feedparser reads through, as feed readers do."""
    # A stream, not bytes or str: feedparser fetches a string that looks like a URL itself.
    parsed = feedparser.parse(io.BytesIO(document.content),
                              response_headers={"content-type": document.content_type})
    if parsed.bozo and parsed.get("version") and not document.content.rstrip().endswith(ROOT_ENDS):
        raise MalformedResponse(f"feed ends early ({why_not_a_feed(parsed, document)})")
    return parsed


def media_type(document: Document) -> str:
    """The document's media type (`text/html`), nothing else of the header the upstream wrote."""
    kind = document.content_type.partition(";")[0].strip().lower()
    return kind if re.fullmatch(r"[a-z0-9.+-]{1,60}/[a-z0-9.+-]{1,60}", kind) else "unknown"


def why_not_a_feed(parsed, document: Document) -> str:
    """feedparser's complaint in our words: the XML parser's message and position, or the kind of
    problem; never text of the document or its headers (an upstream chooses those)."""
    error = parsed.get("bozo_exception")
    if error is None:
        return "no RSS or Atom root element"
    if hasattr(error, "getLineNumber"):  # xml.sax's SAXParseException: message and position
        return f"not well-formed XML: {error.getMessage()[:80]} (line {error.getLineNumber()}, " \
               f"column {error.getColumnNumber()})"
    if type(error).__name__ == "NonXMLContentType":
        return f"{media_type(document)} is not an XML media type"
    return type(error).__name__


def _authors(entry) -> list[str]:
    names = [a.get("name") or a.get("email") for a in entry.get("authors", []) if a.get("name") or a.get("email")]
    raw = dict.get(entry, "author") or ""
    if "@" in raw:
        # feedparser's e-mail pattern cuts domains whose last part is over 4 letters
        # ("desk@news.example (Desk)" -> "ple (Desk"): read an RSS author address ourselves.
        name, email = parseaddr(raw)
        names = [name or email or raw] + names[1:]
    return [name[:200] for name in names]


def _utc(struct) -> datetime | None:
    try:
        return datetime.fromtimestamp(calendar.timegm(struct), tz=timezone.utc) if struct else None
    except (ValueError, OverflowError, OSError):
        return None


def _excerpt(entry) -> dict:
    """What a quarantined entry is kept as: its identifying fields, as text."""
    return {key: str(dict.get(entry, key))[:500] for key in ("id", "link", "title", "published", "updated")
            if dict.get(entry, key)}


class RssNews:
    """Articles of a list of RSS/Atom feeds, one work item per feed."""

    model = "collectors.Article"  # where rows go: dicts of its fields, plus the collector
    key = ("guid",)               # with the collector, what makes an article the same article
    time_field = "published_at"   # for freshness in the quality report
    symbol_field = "source"       # the model field that holds the feed's name
    rules = RULES

    def __init__(self, config: dict, *, http: "Upstream"):
        self.http = http
        self.feeds = {feed_name(url): url for url in config["feeds"]}

    @classmethod
    def grain(cls, config: dict) -> None:
        return None  # events, not a series of periods

    @classmethod
    def validate_config(cls, config: dict, symbols: list) -> tuple[dict, list]:
        errors = unknown_keys(config, CONFIG_KEYS)
        feeds = config.get("feeds")
        if not isinstance(feeds, list) or not 1 <= len(feeds) <= MAX_FEEDS:
            errors["feeds"] = f"Give a list of 1 to {MAX_FEEDS} feed URLs."
        elif bad := [(f, why) for f in feeds if (why := url_error(f))]:
            errors["feeds"] = f"{mask_url(str(bad[0][0]))[:100]!r}: {bad[0][1]}."
        elif len(set(feeds)) != len(feeds):
            errors["feeds"] = "Feeds must not repeat."
        if errors:
            raise ConfigError(errors)
        names = [feed_name(url) for url in feeds]
        if len(set(names)) != len(names):
            twice = next(name for name in names if names.count(name) > 1)
            raise ConfigError({"feeds": f"Two feeds get the same name, {twice}: they differ only in "
                                        "scheme, port, case or punctuation."})
        # The symbols are always the feeds' names: whatever was given (an edit form shows the
        # old ones) is replaced, and the response shows the new ones.
        return {"feeds": feeds}, names

    def fetch(self, symbol: str, start: datetime, end: datetime) -> Iterator[Page]:
        """One page: the feed's current entries (none when it is unchanged since the last fetch)."""
        if symbol not in self.feeds:
            raise SourceError(f"{symbol} is no longer one of the collector's feeds.", permanent=True)
        document = self.http.get_document(self.feeds[symbol], parse=parse_feed)
        remember = lambda: self.http.remember(document)  # noqa: E731
        if document.not_modified:
            yield Page(rows=[], start=start, end=end, on_stored=remember)
            return
        rows, invalid = self.read(document, symbol=symbol, now=datetime.now(timezone.utc))
        if rows or not invalid or invalid[0][1] != "malformed_feed":
            yield Page(rows=rows, start=start, end=end, invalid=invalid, on_stored=remember)
            return
        # Not a feed: quarantined (once), then the feed fails, so the run says so every time
        # (its validators are not kept: an unchanged broken document is not hidden by a 304).
        yield Page(rows=[], start=start, end=end, invalid=invalid)
        raise SourceError(f"Not an RSS or Atom feed ({invalid[0][0]['error'][:200]}); quarantined.",
                          permanent=True)

    @staticmethod
    def read(document: Document, *, symbol: str, now: datetime) -> tuple[list[dict], list[tuple]]:
        """Article rows and quarantined (payload, rule) pairs of a fetched feed document."""
        parsed = document.parsed
        if not parsed.get("version") and not parsed.entries:
            # What the document is, not what it says: a URL that answers with something else
            # than a feed (an internal page, an error) must not be readable through quarantine.
            return [], [({"url": mask_url(document.url), "error": why_not_a_feed(parsed, document),
                          "content_type": media_type(document), "bytes": len(document.content)},
                         "malformed_feed")]
        rows, invalid = [], []
        for entry in parsed.entries:
            link = entry.get("link", "")
            guid = entry.get("id") or link
            # dict.get: FeedParserDict.get("updated_parsed") falls back to published, with a warning.
            when = _utc(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed"))
            rule = "no_id" if not guid else "no_time" if when is None or when < EARLIEST else None
            if rule is None and when > now + FUTURE_TOLERANCE:
                rule = "future_time"
            if rule:
                invalid.append((_excerpt(entry), rule))
                continue
            rows.append({"source": symbol, "guid": guid if len(guid) <= 500 else f"sha256:{_digest(guid)}",
                         # Only web links are kept as the URL (a feed may say javascript:...).
                         "url": link[:2000] if link.startswith(("http://", "https://")) else "",
                         "title": entry.get("title", ""), "summary": entry.get("summary", ""),
                         "published_at": when, "authors": _authors(entry)})
        return rows, invalid
