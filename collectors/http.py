"""The one HTTP wrapper every upstream call goes through.

It owns the keep-alive session, timeouts, the request-weight budget shared by all workers
(RateWindow rows in the database), the circuit breaker shared the same way (CircuitBreaker),
retries with exponential backoff that honour Retry-After, conditional GET (ETag and
Last-Modified kept per caller in HttpValidator rows), the metrics, and the counters a run
reports. Budget and breaker are per host, so one Upstream may call absolute URLs on several
hosts (feeds). Tests mock upstreams here (or use the emulator), never deeper.
"""

import time
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
import requests
import structlog
from django.conf import settings

from collectors.alerts import alert_raise
from collectors.metrics import observe_upstream
from collectors.models import CircuitBreaker, HttpValidator, RateWindow
from collectors.outbound import GuardedAdapter, UpstreamRefused, host_key, mask_url
from collectors.sources import Document, MalformedResponse, SourceError

log = structlog.get_logger(__name__)

_sessions: dict[str, requests.Session] = {}


def _session(host: str) -> requests.Session:
    session = _sessions.get(host)
    if session is None:
        session = _sessions[host] = requests.Session()
        session.headers["User-Agent"] = "market-data-collectors/1"
        # Every connection, redirects included, goes where the outbound policy allows
        # (collectors.outbound); no proxy or .netrc from the environment: a proxy would resolve
        # names where the policy cannot see them.
        session.trust_env = False
        session.max_redirects = 5
        for scheme in ("http://", "https://"):
            session.mount(scheme, GuardedAdapter())
    return session


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "client error"


def _retry_after(response) -> float | None:
    try:
        return max(float(response.headers.get("Retry-After", "")), 0.0)
    except ValueError:
        return None


class Upstream:
    """Calls to one upstream (or to absolute URLs), with the shared budget, retries and counters."""

    def __init__(self, base_url: str = "", *, retries: int = 3, backoff: float = 2.0,
                 weight_header: str | None = None, on_wait: Callable[[], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, validator_scope: str = "",
                 use_validators: bool = True):
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self.weight_header = weight_header
        self.on_wait = on_wait
        self.validator_scope = validator_scope  # whose conditional-GET validators (a collector)
        self.use_validators = use_validators    # False: read documents whole even if unchanged
        self._sleep = sleep
        self.requests = 0            # HTTP requests sent
        self.retried = 0             # of which retries
        self.throttled_seconds = 0.0  # time spent waiting for the weight budget or the breaker

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def wait(self, seconds: float):
        """Sleep in short slices so the caller's heartbeat stays fresh."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._sleep(min(left, 5.0))
            if self.on_wait:
                self.on_wait()

    def _reserve(self, key: str, weight: int):
        if not settings.ENABLE_RATE_LIMITING:
            return
        while wait := RateWindow.reserve(key, weight=weight, limit=settings.EXCHANGE_WEIGHT_BUDGET,
                                         window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS):
            self.throttled_seconds += wait
            log.debug("rate_budget_wait", upstream=key, seconds=round(wait, 2))
            self.wait(wait)

    def _pass_breaker(self, key: str, waited: list):
        """Wait once per call while the upstream's breaker is open; refused again after that (its
        probe failed too) or for longer than HTTP_MAX_RETRY_AFTER_SECONDS, the call fails, so a
        dead upstream ends symbols `partial` in about one timeout instead of queueing them."""
        probe = settings.HTTP_TIMEOUT_SECONDS + 5  # a probe's worker is presumed dead after this
        while wait := CircuitBreaker.acquire(key, probe_seconds=probe):
            # Polls while another worker's probe is out (half-open) are not the wait: only an
            # open breaker after we waited (that probe failed too) ends the call.
            is_open = CircuitBreaker.objects.filter(key=key, state=CircuitBreaker.OPEN).exists()
            if (waited[0] and is_open) or wait > settings.HTTP_MAX_RETRY_AFTER_SECONDS:
                raise SourceError(f"circuit breaker of {key} is open for {wait:.0f} s more",
                                  retry_after=wait, upstream_down=True)
            if is_open:
                waited[0] = True
            self.throttled_seconds += wait
            log.info("circuit_open_wait", upstream=key, seconds=round(wait, 2))
            self.wait(wait)

    def _failed(self, key: str, error: SourceError):
        if CircuitBreaker.record_failure(key, threshold=settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD,
                                         timeout=settings.CIRCUIT_BREAKER_TIMEOUT, error=str(error)):
            self._opened(key, str(error), settings.CIRCUIT_BREAKER_TIMEOUT)

    @staticmethod
    def _opened(key: str, error: str, seconds: float):
        log.warning("circuit_opened", upstream=key, error=error, seconds=seconds)
        alert_raise(kind="circuit_open", key=f"circuit_open:{key}",
                    summary=f"Circuit breaker of {key} opened for {seconds:g} s: {error}",
                    details={"upstream": key, "error": error, "seconds": seconds})

    def _observe(self, key: str, response):
        if not (settings.ENABLE_RATE_LIMITING and self.weight_header):
            return
        used = response.headers.get(self.weight_header)
        if used and used.isdigit():
            RateWindow.observe(key, used=int(used), window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS)

    @staticmethod
    def _block(key: str, seconds: float):
        if settings.ENABLE_RATE_LIMITING:
            RateWindow.block(key, until=time.time() + seconds)

    def get_json(self, path: str, params: dict | None = None, *, weight: int = 1,
                 parse: Callable[[Any], Any] = lambda data: data) -> Any:
        """GET and decode JSON; retry transient failures; raise SourceError when done trying."""
        return self._request(path, params, weight, lambda response: parse(orjson.loads(response.content)))

    def get_document(self, url: str, *, conditional: bool = True, weight: int = 1,
                     parse: Callable[["Document"], Any] | None = None) -> Document:
        """GET a document (a feed) as bytes, `parsed` by `parse` (raise MalformedResponse there
        to have it retried). With `conditional`, send the ETag/Last-Modified remembered for this
        scope and URL; an unchanged document comes back `not_modified`. Call `remember()` once
        what was read from it is stored, not before."""
        url = self._url(url)
        headers = {}
        if conditional and self.use_validators:
            known = HttpValidator.lookup(scope=self.validator_scope, url=url)
            if known and known.etag:
                headers["If-None-Match"] = known.etag
            if known and known.last_modified:
                headers["If-Modified-Since"] = known.last_modified

        def document(response) -> Document:
            if response.status_code == 304:
                return Document(url=url, not_modified=True)
            fetched = Document(url=url, content=response.content,
                               content_type=response.headers.get("Content-Type", ""),
                               etag=response.headers.get("ETag", ""),
                               last_modified=response.headers.get("Last-Modified", ""))
            if parse:
                fetched.parsed = parse(fetched)
            return fetched

        # A document that will not parse is that URL's fault, not its host's: it is retried but
        # does not count towards the host's breaker (other feeds there are fine).
        return self._request(url, None, weight, document, headers=headers, malformed_trips=False)

    def remember(self, document: Document):
        """Keep the document's validators for the next conditional GET (and when it was checked)."""
        HttpValidator.remember(scope=self.validator_scope, url=document.url, etag=document.etag,
                               last_modified=document.last_modified, changed=not document.not_modified)

    def _request(self, path: str, params, weight: int, decode, *, headers=None, malformed_trips=True):
        url = self._url(path)
        key = host_key(url)  # no userinfo: keys show in metrics, the breaker list and logs
        attempt, waited = 0, [False]
        while True:
            self._pass_breaker(key, waited)
            self._reserve(key, weight)
            try:
                self.requests += 1
                return self._get_once(url, key, params, decode, headers, malformed_trips)
            except SourceError as error:
                # Failing again after waiting out its open breaker: the upstream is down, not
                # one of its pages (the caller stops asking instead of waiting page after page).
                if waited[0] and not (error.permanent or error.upstream_down):
                    raise SourceError(f"{error}, again after the circuit breaker of {key} was open",
                                      status=error.status, upstream_down=True) from error
                if error.permanent or error.upstream_down or attempt >= self.retries:
                    raise
                if error.retry_after is not None and error.retry_after > settings.HTTP_MAX_RETRY_AFTER_SECONDS:
                    raise  # a ban of this length is not something to sleep through in a task
                attempt += 1
                self.retried += 1
                delay = max(self.backoff * 2 ** (attempt - 1), error.retry_after or 0.0)
                log.info("upstream_retry", url=mask_url(path), attempt=attempt, delay=delay, error=str(error))
                self.wait(delay)

    def _get_once(self, url, key, params, decode, headers, malformed_trips):
        """One request. The breaker counts network errors, 5xx and malformed bodies as failures,
        any other answer as success; a 418 (IP ban) opens it until the ban ends."""
        endpoint = urlsplit(url).path
        began = time.perf_counter()
        try:
            try:
                response = _session(key).get(url, params=params, headers=headers,
                                             timeout=settings.HTTP_TIMEOUT_SECONDS)
            except UpstreamRefused as error:
                observe_upstream(key, endpoint, "refused", time.perf_counter() - began)
                where = "" if error.host == urlsplit(url).hostname else f"redirected from {key}: "
                raise SourceError(f"{where}{error}", permanent=True) from error
            except requests.RequestException as error:
                observe_upstream(key, endpoint, "error", time.perf_counter() - began)
                raise SourceError(f"{type(error).__name__}: {error}") from error
            observe_upstream(key, endpoint, str(response.status_code), time.perf_counter() - began)
            self._observe(key, response)
            status = response.status_code
            if status in (418, 429):
                retry_after = _retry_after(response) or 1.0
                self._block(key, retry_after)
                error = SourceError(f"HTTP {status} (rate limited, retry after {retry_after:g}s)",
                                    status=status, retry_after=retry_after)
                if status == 418 and CircuitBreaker.trip(key, until=time.time() + retry_after,
                                                         error=str(error)):
                    self._opened(key, str(error), retry_after)
                raise error
            if status >= 500:
                raise SourceError(f"HTTP {status} from upstream", status=status)
            result = self._decode(response, decode)
        except SourceError as error:
            if error.permanent or (error.malformed and not malformed_trips):
                CircuitBreaker.record_success(key)  # the upstream itself is answering
            elif error.status not in (418, 429):  # rate limits belong to the weight budget
                self._failed(key, error)
            raise
        CircuitBreaker.record_success(key)
        return result

    @staticmethod
    def _decode(response, decode):
        status = response.status_code
        if status >= 400:
            # The body stays out of the error (runs, status and logs are readable by read-only
            # keys, and an upstream could be made to echo anything): the status, its reason and
            # a numeric error code (Binance's `code`) only; the body goes to the debug log.
            log.debug("upstream_error_body", url=mask_url(response.url), status=status,
                      body=response.content[:500].decode("utf-8", "replace"))
            try:
                code = orjson.loads(response.content).get("code")
            except (orjson.JSONDecodeError, AttributeError):
                code = None
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            detail = "" if code is None else f" (upstream code {code})"
            raise SourceError(f"HTTP {status} {_reason(status)}{detail}", permanent=True, status=status,
                              code=code)
        try:
            return decode(response)
        except (orjson.JSONDecodeError, MalformedResponse, ValueError, TypeError, KeyError,
                IndexError) as error:
            raise SourceError(f"Malformed response body: {error}", status=status, malformed=True) from error
