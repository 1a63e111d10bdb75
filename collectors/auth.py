"""API authentication: X-API-Key, Authorization: Bearer, ?api_key=, or a staff session."""

from urllib.parse import unquote_plus

import structlog
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling

from collectors.models import ApiKey
from config.logging import SECRET_NAME, redact_query
from config.security import ApiKeyLockout, client_address

log = structlog.get_logger(__name__)

QUERY_PARAM = "api_key"


class ApiKeyUser:
    """The caller behind an API key (enough of a user for DRF and the logs)."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False
    pk = id = None

    def __init__(self, key: ApiKey):
        self.key = key
        self.username = f"api:{key.name}"

    def get_username(self):
        return self.username

    @property
    def caller_name(self) -> str:
        """How runs and jobs record this caller (config.api.who): `api:<key name>`."""
        return self.username

    def __str__(self):
        return self.username


def key_from_request(request) -> str | None:
    """The key the caller sent: X-API-Key (where ?api_key= ends up too), else Bearer."""
    key = request.META.get(settings.API_KEY_CUSTOM_HEADER, "").strip()
    if key:
        return key
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if request.META.get(QUERY_KEY_SEEN) and not settings.API_KEY_QUERY_PARAM_ENABLED:
        raise exceptions.AuthenticationFailed(
            "The api_key query parameter is disabled here; send the key in the X-API-Key header.")
    return None  # ApiKeyQueryMiddleware moved a ?api_key= into the header above


class LockedOut(exceptions.Throttled):
    """429 for an address locked out by ApiKeyLockout (DRF appends the wait to the detail)."""

    extra_detail_singular = extra_detail_plural = "try again in {wait} seconds."


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Failures are 401 (not DRF's default 403) because this class names a challenge. An address
    that sent too many wrong keys gets 429 for any key until its lockout ends (ApiKeyLockout)."""

    def authenticate(self, request):
        key = key_from_request(request)
        if key is None:
            return None
        address = client_address(request)
        wait = ApiKeyLockout.retry_after(address)
        if wait:  # before the key is looked at: a right guess must not be told apart
            raise LockedOut(wait=wait, detail=f"Too many wrong API keys from {address};")
        try:
            api_key = ApiKey.objects.get_from_key(key)
        except ApiKey.DoesNotExist:
            if ApiKeyLockout.record_failure(address):
                log.warning("api_key_lockout", address=address, limit=settings.API_KEY_FAILURE_LIMIT,
                            minutes=settings.API_KEY_COOLOFF_MINUTES)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from None
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request):
        return 'X-API-Key realm="api"'


class HasAdminAccess(permissions.BasePermission):
    """Staff sessions and admin keys may do anything; read-only keys may only read."""

    message = "This API key may only read; use an admin key to change anything."

    def has_permission(self, request, view):
        if not settings.API_KEY_REQUIRED:
            return True
        if isinstance(request.auth, ApiKey):
            return request.method in permissions.SAFE_METHODS or request.auth.scope == ApiKey.ADMIN
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if not user.is_staff:
            self.message = "Staff access is required."
            return False
        return True


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """OpenAPI: any one of the header, Bearer or (when enabled) query-parameter schemes."""

    target_class = ApiKeyAuthentication

    @property
    def name(self):
        return ["ApiKeyHeader", "Bearer"] + (["ApiKeyQuery"] if settings.API_KEY_QUERY_PARAM_ENABLED else [])

    def get_security_requirement(self, auto_schema):
        return [{name: []} for name in self.name]  # alternatives (OR), not all at once

    def get_security_definition(self, auto_schema):
        definitions = [{"type": "apiKey", "in": "header", "name": "X-API-Key"},
                       {"type": "http", "scheme": "bearer"},
                       {"type": "apiKey", "in": "query", "name": QUERY_PARAM}]
        return definitions[:len(self.name)]


class ApiKeyQueryMiddleware:
    """First middleware: a key sent as ?api_key= is moved into the X-API-Key header, and it and
    any other secret-looking parameter (apikey, API_KEY, token, secret, password...) are taken
    out of the query string, so no log line (ours, django-structlog's, gunicorn's access log,
    which reads RAW_URI from the same environ afterwards), no error page and no pagination link
    ever holds them. `;` counts as a separator too (`?x=1;api_key=KEY`, `&amp;api_key=`): Django
    reads that as part of x's value, but a log or another server may not. With
    API_KEY_QUERY_PARAM_ENABLED off the key is dropped and the request is refused by the
    authentication class. Runserver's own access line is redacted in config.logging."""

    SECRET = SECRET_NAME

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        query = meta.get("QUERY_STRING", "")
        if query and self.SECRET.search(unquote_plus(query)):
            kept_fields, keys, dropped = [], [], False
            for field in query.split("&"):
                # The first piece is the parameter Django sees; pieces after a ';' are its value's
                # tail for Django, separate parameters for other servers and for the caller.
                kept = []
                for piece in field.split(";"):
                    name, _, value = piece.partition("=")
                    if not self.SECRET.search(unquote_plus(name)):
                        kept.append(piece)
                    elif unquote_plus(name) == QUERY_PARAM:
                        keys.append(unquote_plus(value))
                dropped |= len(kept) != field.count(";") + 1
                if kept:
                    kept_fields.append(";".join(kept))
            if keys:
                if settings.API_KEY_QUERY_PARAM_ENABLED and not meta.get(settings.API_KEY_CUSTOM_HEADER):
                    meta[settings.API_KEY_CUSTOM_HEADER] = keys[0]
                meta[QUERY_KEY_SEEN] = True
            if dropped:
                meta["QUERY_STRING"] = "&".join(kept_fields)
                if "RAW_URI" in meta:
                    path = meta["RAW_URI"].partition("?")[0]
                    meta["RAW_URI"] = f"{path}?{meta['QUERY_STRING']}" if meta["QUERY_STRING"] else path
                request.__dict__.pop("GET", None)  # parse the rewritten query if it was read
        # A page opened with ?api_key= makes the browser send that URL as the Referer of every
        # asset it loads (same origin), and access logs print the Referer.
        referer = meta.get("HTTP_REFERER", "")
        if "?" in referer and self.SECRET.search(unquote_plus(referer)):
            meta["HTTP_REFERER"] = redact_query(referer)
        return self.get_response(request)


QUERY_KEY_SEEN = "collectors.api_key_in_query"


class PerKeyRateThrottle(throttling.SimpleRateThrottle):
    """API_RATE_LIMIT_PER_MINUTE requests per minute per API key (or per staff user); a 429 with
    Retry-After beyond it. Probes, metrics and the admin are not throttled (not DRF views)."""

    scope = "api"

    def get_rate(self):
        limit = settings.API_RATE_LIMIT_PER_MINUTE
        return f"{limit}/min" if limit > 0 else None

    def allow_request(self, request, view):
        self.rate = self.get_rate()  # read at each request: settings may change (tests)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"
