"""Who is asking (the client address behind trusted proxies), the lockout of addresses that send
wrong API keys, and the system checks that warn about unsafe production settings."""

import math
import time

from django.conf import settings
from django.core import checks
from django.core.cache import cache


def client_address(request) -> str:
    """The caller's IP address: the TCP peer, or with TRUSTED_PROXY_COUNT = N the address the
    outermost of the N trusted proxies saw (N-th X-Forwarded-For entry from the right; the
    entries left of it are the client's word and are ignored). Used by django-axes (admin
    logins), the API-key lockout and DRF's anonymous throttle (NUM_PROXIES)."""
    meta = getattr(request, "META", {})
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
        # Fewer hops than proxies: the request did not come through them (a direct hit on the pod).
    return meta.get("REMOTE_ADDR") or "unknown"


class ApiKeyLockout:
    """API_KEY_FAILURE_LIMIT wrong keys from one address within API_KEY_COOLOFF_MINUTES lock that
    address out for API_KEY_COOLOFF_MINUTES: every request presenting a key, even a right one,
    is refused with 429 and Retry-After before the key is looked at (a guesser must not learn
    that a guess was right). Counted in Django's cache (Redis or the database), so every web
    process on every machine shares the count; entries expire on their own."""

    PREFIX = "apikey-lockout"

    @classmethod
    def _keys(cls, address: str) -> tuple[str, str]:
        return f"{cls.PREFIX}:failures:{address}", f"{cls.PREFIX}:until:{address}"

    @classmethod
    def retry_after(cls, address: str) -> int | None:
        """Seconds the address stays locked out, or None when it is not."""
        if settings.API_KEY_FAILURE_LIMIT <= 0:
            return None
        until = cache.get(cls._keys(address)[1])
        if until is None:
            return None
        left = until - time.time()
        return max(1, math.ceil(left)) if left > 0 else None

    @classmethod
    def record_failure(cls, address: str) -> int | None:
        """Count a wrong key; returns the lockout's seconds when this failure starts one."""
        limit = settings.API_KEY_FAILURE_LIMIT
        if limit <= 0:
            return None
        seconds = int(settings.API_KEY_COOLOFF_MINUTES * 60)
        failures_key, until_key = cls._keys(address)
        cache.add(failures_key, 0, timeout=seconds)  # the window starts at the first failure
        try:
            failures = cache.incr(failures_key)
        except ValueError:  # expired between add() and incr()
            cache.set(failures_key, 1, timeout=seconds)
            failures = 1
        if failures < limit:
            return None
        cache.set(until_key, time.time() + seconds, timeout=seconds)
        cache.delete(failures_key)  # a fresh count once the lockout ends
        return seconds


@checks.register(checks.Tags.security)
def check_api_keys_required(app_configs, **kwargs):
    """API_KEY_REQUIRED=false outside DEBUG opens the whole API to anyone who can reach it."""
    if settings.API_KEY_REQUIRED or settings.DEBUG:
        return []
    return [checks.Warning(
        "API_KEY_REQUIRED is false and DEBUG is off: anyone who can reach the server may use "
        "/api/admin/ (trigger runs, change collectors) without a key.",
        hint="Unset API_KEY_REQUIRED (it defaults to true) outside development.",
        id="collectors.W001")]
