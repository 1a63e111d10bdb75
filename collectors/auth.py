"""API authentication: X-API-Key, Authorization: Bearer, ?api_key=, or a staff session."""

from django.conf import settings
from django.dispatch import receiver
from django_structlog import signals as structlog_signals
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from collectors.models import ApiKey

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

    def __str__(self):
        return self.username


def key_from_request(request) -> str | None:
    """The key the caller sent, from the first place that has one (header, Bearer, query)."""
    key = request.META.get(settings.API_KEY_CUSTOM_HEADER, "").strip()
    if key:
        return key
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = request.GET.get(QUERY_PARAM, "").strip()
    if key and not settings.API_KEY_QUERY_PARAM_ENABLED:
        raise exceptions.AuthenticationFailed(
            "The api_key query parameter is disabled here; send the key in the X-API-Key header.")
    return key or None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Failures are 401 (not DRF's default 403) because this class names a challenge."""

    def authenticate(self, request):
        key = key_from_request(request)
        if key is None:
            return None
        try:
            api_key = ApiKey.objects.get_from_key(key)
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
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


# django-structlog logs every request line with its query string; a key given as ?api_key=
# must not reach the logs in clear (the contract says so).
@receiver(structlog_signals.bind_extra_request_metadata)
@receiver(structlog_signals.bind_extra_request_finished_metadata)
@receiver(structlog_signals.bind_extra_request_failed_metadata)
def redact_api_key_in_logs(sender, request, log_kwargs, **kwargs):
    if QUERY_PARAM in request.GET and "request" in log_kwargs:
        query = request.GET.copy()
        query.setlist(QUERY_PARAM, ["[redacted]"])
        log_kwargs["request"] = f"{request.method} {request.path}?{query.urlencode(safe='[]/')}"
