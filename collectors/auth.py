"""API authentication: X-API-Key, Authorization: Bearer, ?api_key=, or a staff session."""

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from collectors.models import ApiKey


class ApiKeyUser:
    """The caller behind an API key (enough of a user for DRF and the logs)."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_anonymous = False

    def __init__(self, key: ApiKey):
        self.key = key
        self.username = f"api:{key.name}"
        self.pk = None

    def __str__(self):
        return self.username


def key_from_request(request) -> str | None:
    key = request.META.get(settings.API_KEY_CUSTOM_HEADER)
    if key:
        return key.strip()
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if settings.API_KEY_QUERY_PARAM_ENABLED:
        return request.GET.get("api_key") or None
    return None


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
