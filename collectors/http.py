"""The one HTTP wrapper every upstream call goes through.

It owns the keep-alive session, timeouts, the request-weight budget shared by all workers
(RateWindow rows in the database), the circuit breaker shared the same way (CircuitBreaker),
retries with exponential backoff that honour Retry-After, and the counters a run reports. Tests mock upstreams here (or use the emulator), never deeper.
"""

import time
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
import requests
import structlog
from django.conf import settings

from collectors.metrics import observe_upstream
from collectors.sources import SourceError

log = structlog.get_logger(__name__)

_sessions: dict[str, requests.Session] = {}


class MalformedResponse(ValueError):
    """A 200 whose body is not what the endpoint promises (retried like a 5xx)."""


def _session(base_url: str) -> requests.Session:
    session = _sessions.get(base_url)
    if session is None:
        session = _sessions[base_url] = requests.Session()
        session.headers["User-Agent"] = "market-data-collectors/1"
    return session


def _retry_after(response) -> float | None:
    try:
        return max(float(response.headers.get("Retry-After", "")), 0.0)
    except ValueError:
        return None


class Upstream:
    """Calls to one upstream host, with the shared budget, retries and counters."""

    def __init__(self, base_url: str, *, retries: int = 3, backoff: float = 2.0,
                 weight_header: str | None = None, on_wait: Callable[[], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.budget_key = urlsplit(self.base_url).netloc
        self.retries, self.backoff = retries, backoff
        self.weight_header = weight_header
        self.on_wait = on_wait
        self._sleep = sleep
        self.requests = 0            # HTTP requests sent
        self.retried = 0             # of which retries
        self.throttled_seconds = 0.0  # time spent waiting for the weight budget or the breaker

    def wait(self, seconds: float):
        """Sleep in short slices so the caller's heartbeat stays fresh."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._sleep(min(left, 5.0))
            if self.on_wait:
                self.on_wait()

    def _reserve(self, weight: int):
        if not settings.ENABLE_RATE_LIMITING:
            return
        from collectors.models import RateWindow  # the budget lives in the shared database

        while wait := RateWindow.reserve(self.budget_key, weight=weight,
                                         limit=settings.EXCHANGE_WEIGHT_BUDGET,
                                         window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS):
            self.throttled_seconds += wait
            log.debug("rate_budget_wait", upstream=self.budget_key, seconds=round(wait, 2))
            self.wait(wait)

    def _pass_breaker(self, waited: list):
        """Wait once per call while the upstream's breaker is open; refused again after that (its
        probe failed too) or for longer than HTTP_MAX_RETRY_AFTER_SECONDS, the call fails, so a
        dead upstream ends symbols `partial` in about one timeout instead of queueing them."""
        from collectors.models import CircuitBreaker

        probe = settings.HTTP_TIMEOUT_SECONDS + 5  # a probe's worker is presumed dead after this
        while wait := CircuitBreaker.acquire(self.budget_key, probe_seconds=probe):
            if waited[0] or wait > settings.HTTP_MAX_RETRY_AFTER_SECONDS:
                raise SourceError(f"circuit breaker of {self.budget_key} is open for {wait:.0f} s more",
                                  retry_after=wait)
            # Polls while another worker's probe is out (half-open) do not count as the wait.
            if CircuitBreaker.objects.filter(key=self.budget_key, state=CircuitBreaker.OPEN).exists():
                waited[0] = True
            self.throttled_seconds += wait
            log.info("circuit_open_wait", upstream=self.budget_key, seconds=round(wait, 2))
            self.wait(wait)

    def _failed(self, error: SourceError):
        from collectors.models import CircuitBreaker

        if CircuitBreaker.record_failure(self.budget_key, threshold=settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD,
                                         timeout=settings.CIRCUIT_BREAKER_TIMEOUT, error=str(error)):
            self._opened(str(error), settings.CIRCUIT_BREAKER_TIMEOUT)

    def _opened(self, error: str, seconds: float):
        from collectors.alerts import alert_raise

        log.warning("circuit_opened", upstream=self.budget_key, error=error, seconds=seconds)
        alert_raise(kind="circuit_open", key=f"circuit_open:{self.budget_key}",
                    summary=f"Circuit breaker of {self.budget_key} opened for {seconds:g} s: {error}",
                    details={"upstream": self.budget_key, "error": error, "seconds": seconds})

    def _observe(self, response):
        if not (settings.ENABLE_RATE_LIMITING and self.weight_header):
            return
        from collectors.models import RateWindow

        used = response.headers.get(self.weight_header)
        if used and used.isdigit():
            RateWindow.observe(self.budget_key, used=int(used),
                               window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS)

    def _block(self, seconds: float):
        if settings.ENABLE_RATE_LIMITING:
            from collectors.models import RateWindow

            RateWindow.block(self.budget_key, until=time.time() + seconds)

    def get_json(self, path: str, params: dict | None = None, *, weight: int = 1,
                 parse: Callable[[Any], Any] = lambda data: data) -> Any:
        """GET and decode JSON; retry transient failures; raise SourceError when done trying."""
        url = self.base_url + path
        attempt, waited = 0, [False]
        while True:
            self._pass_breaker(waited)
            self._reserve(weight)
            try:
                self.requests += 1
                return self._get_once(url, params, parse)
            except SourceError as error:
                if error.permanent or attempt >= self.retries:
                    raise
                if error.retry_after is not None and error.retry_after > settings.HTTP_MAX_RETRY_AFTER_SECONDS:
                    raise  # a ban of this length is not something to sleep through in a task
                attempt += 1
                self.retried += 1
                delay = max(self.backoff * 2 ** (attempt - 1), error.retry_after or 0.0)
                log.info("upstream_retry", url=path, attempt=attempt, delay=delay, error=str(error))
                self.wait(delay)

    def _get_once(self, url, params, parse):
        """One request. The breaker counts network errors, 5xx and malformed bodies as failures,
        any other answer as success; a 418 (IP ban) opens it until the ban ends."""
        from collectors.models import CircuitBreaker

        endpoint = urlsplit(url).path
        began = time.perf_counter()
        try:
            try:
                response = _session(self.base_url).get(url, params=params,
                                                       timeout=settings.HTTP_TIMEOUT_SECONDS)
            except requests.RequestException as error:
                observe_upstream(self.budget_key, endpoint, "error", time.perf_counter() - began)
                raise SourceError(f"{type(error).__name__}: {error}") from error
            observe_upstream(self.budget_key, endpoint, str(response.status_code), time.perf_counter() - began)
            self._observe(response)
            status = response.status_code
            if status in (418, 429):
                retry_after = _retry_after(response) or 1.0
                self._block(retry_after)
                error = SourceError(f"HTTP {status} (rate limited, retry after {retry_after:g}s)",
                                    status=status, retry_after=retry_after)
                if status == 418 and CircuitBreaker.trip(self.budget_key, until=time.time() + retry_after,
                                                         error=str(error)):
                    self._opened(str(error), retry_after)
                raise error
            if status >= 500:
                raise SourceError(f"HTTP {status} from upstream", status=status)
            result = self._decode(response, parse)
        except SourceError as error:
            if error.permanent:  # a 4xx about the request: the upstream itself is answering
                CircuitBreaker.record_success(self.budget_key)
            elif error.status not in (418, 429):  # rate limits belong to the weight budget
                self._failed(error)
            raise
        CircuitBreaker.record_success(self.budget_key)
        return result

    def _decode(self, response, parse):
        status = response.status_code
        if status >= 400:
            try:
                body = orjson.loads(response.content)
                message = f"{body.get('msg', body)} (code {body.get('code')})"
            except (orjson.JSONDecodeError, AttributeError):
                message = response.text[:200]
            raise SourceError(f"HTTP {status}: {message}", permanent=True, status=status)
        try:
            return parse(orjson.loads(response.content))
        except (orjson.JSONDecodeError, MalformedResponse, ValueError, TypeError, KeyError,
                IndexError) as error:
            raise SourceError(f"Malformed response body: {error}", status=status) from error
