"""Where collectors may connect: the defence against server-side request forgery (SSRF).

Whoever defines a collector (a staff user, an admin API key) chooses the URLs it fetches.
Without a policy such a URL could reach this machine's own services, the private network or a
cloud's metadata endpoint, and what came back would show in runs and quarantined rows.

The policy (settings.UPSTREAM_ALLOWED_HOSTS, read at each call):
- empty (the default): any host whose every address is public (globally routable unicast);
- a list of patterns, `api.binance.com` or `*.example.com` (its subdomains): only those hosts,
  and on whatever address they have (listing a host vouches for it: that is how the demo and
  the tests allow the local emulator, `127.0.0.1`); the pattern `*` adds any other host on
  public addresses, so `127.0.0.1,*` is the emulator plus the internet.

It is checked twice:
- when a URL is saved (`url_refused`): the scheme, literal addresses in any spelling
  (`0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`), names that are internal by definition
  (`localhost`, `*.internal`, `metadata.google.internal`) and the allow list; no DNS there;
- on every connection the HTTP wrapper opens (`GuardedAdapter`): the host's addresses after DNS
  resolution, at every redirect hop, and the socket is connected to the address that was
  checked, so a name cannot answer differently in between (no DNS-rebinding window).

Our own code, not a library: advocate, the one library that did this for requests, was last
released in 2020 and predates urllib3 2; the whole check is the two hooks below.
"""

import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

import structlog
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from config.logging import redact_query

log = structlog.get_logger(__name__)

MASK = "***"
# Names that never mean a public host (RFC 6761 localhost, cloud metadata services, the
# .internal/.local/.localdomain private namespaces).
INTERNAL_NAMES = re.compile(r"(^|\.)(localhost|localdomain|internal|local|home\.arpa)$|^(metadata|instance-data)$")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A host as a URL may spell it for us: ASCII labels (punycode for other scripts), no empty label.
# Anything else (%-escapes, full-width digits, a trailing dot) is read differently by different
# parsers and resolvers, so the name checked here might not be the one connected to.
HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
HINT = "add it to UPSTREAM_ALLOWED_HOSTS to allow it"


class UpstreamRefused(Exception):
    """A connection the outbound policy does not allow (not an OSError: nothing retries it)."""

    def __init__(self, host: str, why: str):
        super().__init__(f"refused to connect: {why}")
        self.host = host


def _patterns() -> list[str]:
    return [p.strip().lower().rstrip(".") for p in settings.UPSTREAM_ALLOWED_HOSTS if p.strip()]


def _listed(host: str, patterns: list[str]) -> bool:
    """Whether `host` is one of the listed hosts (`*` is not a listing: it means public ones)."""
    for pattern in patterns:
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if pattern == host:
            return True
    return False


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name spells, in any form the system resolver accepts (`127.1`,
    `0x7f000001`, `2130706433`, `0177.0.0.1`, an IPv6 literal), or None for a real name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host) and re.search(r"\d", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def address_refused(address) -> str | None:
    """Why an address is not public (loopback, private, link-local, ...), or None."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (why := address_refused(embedded)):
            return why
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind.replace('_', '-')} address"
    if not ip.is_global:
        return "not a public address"
    return None


def host_refused(host: str) -> str | None:
    """Why the policy refuses `host` whatever it resolves to, or None (checked again after DNS)."""
    host = (host or "").lower().rstrip(".")
    patterns = _patterns()
    if _listed(host, patterns):
        return None
    if patterns and "*" not in patterns:
        return f"{host} is not in UPSTREAM_ALLOWED_HOSTS"
    if (address := literal_address(host)) is not None:
        if why := address_refused(address):
            return f"{host} is {why}; {HINT}"
    elif INTERNAL_NAMES.search(host):
        return f"{host} is an internal name; {HINT}"
    elif "." not in host:
        return f"{host} is a single-label name (this machine's local names); {HINT}"
    return None


def url_refused(url: str) -> str | None:
    """Why a collector may not use `url` (its syntax is checked by the caller), or None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if "\\" in url or "%" in parts.netloc.rpartition("@")[2]:
        return "a backslash or %-escape in the URL's host part is read differently by different parsers"
    if not (host.startswith("[") or ":" in host or HOSTNAME.fullmatch(host)):
        return (f"the host {host[:80]!r} must be ASCII letters, digits, dots and hyphens (punycode, "
                "xn--..., for other scripts) without a trailing dot, or an IP address")
    return host_refused(host)


def resolve(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host`, each allowed by the policy (UpstreamRefused if
    any is not: a name with one private address among public ones is refused whole)."""
    name = host.lower().rstrip(".")
    if why := host_refused(name):
        raise UpstreamRefused(name, why)
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not _listed(name, _patterns()):
        for address in addresses:
            if why := address_refused(address.split("%")[0]):
                raise UpstreamRefused(name, f"{host} resolves to {address}, {why}; {HINT}")
    return addresses


class _Guarded:
    """Connects to the addresses `resolve` vetted, never to what a second lookup might say.
    TLS still verifies the certificate against the host name (server_hostname is self.host)."""

    def _new_conn(self):
        host = self._dns_host
        addresses = resolve(host, self.port)
        for i, address in enumerate(addresses):
            self._dns_host = address
            try:
                return super()._new_conn()
            except OSError:  # urllib3's NewConnectionError / ConnectTimeoutError: try the next
                if i == len(addresses) - 1:
                    raise
            finally:
                self._dns_host = host


class GuardedHTTPConnection(_Guarded, HTTPConnection):
    pass


class GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """requests' adapter whose every connection (each redirect hop too) passes `resolve`."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def mask_url(url: str) -> str:
    """`url` as it may be shown or logged: its userinfo (user:password@) as ***@ and the values of
    secret-looking query parameters (token=, key=, api_key=, signature=...) as ***."""
    if not isinstance(url, str) or not ("@" in url or "=" in url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if "@" in parts.netloc:
        parts = parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}")
    if parts.query:
        parts = parts._replace(query=redact_query(f"?{parts.query}", mask=MASK)[1:])
    return urlunsplit(parts)


def host_key(url: str) -> str:
    """host[:port] of `url` without userinfo: the key of its weight budget, breaker and metrics."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()
