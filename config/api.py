"""DRF plumbing shared by every API view: fields, serializer mixins, the view mixin, error
schemas, renderers, pagination and the one exception handler. No app's models here (the apps
import this, not the other way round; of the apps only the pure leaf collectors.times); what
looks a domain thing up stays in its app."""

from base64 import b64decode
from collections.abc import Mapping
from datetime import datetime, time as dtime, timezone as dt_timezone

import structlog
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import pagination, renderers, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler, set_rollback

from collectors.times import EARLIEST, LATEST, iso
from config.errors import DomainError, InputError
from config.negotiation import ContentNegotiation

log = structlog.get_logger(__name__)

BAD_REQUEST = OpenApiResponse(OpenApiTypes.OBJECT, description='Invalid input: `{"field": ["message"]}` '
                              'or `{"detail": "message", "<field>": ["message"]}`, with `"choices": [...]` '
                              'when the value must be one of a list.')
# Views with `error_envelope = True` (the /collect/ endpoints): a service's refusal carries the
# contract's `success` and `message` beside `detail`.
ENVELOPE_BAD_REQUEST = OpenApiResponse(OpenApiTypes.OBJECT, description=(
    'Invalid input: `{"field": ["message"]}`, or `{"success": false, "message": "message", "detail": '
    '"message", "<field>": ["message"]}` with `"choices": [...]` when the value must be one of a list.'))
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description='`{"detail": "Not found."}`')


# --- fields and serializers -------------------------------------------------------------

@extend_schema_field(OpenApiTypes.DATETIME)
class UtcDateTimeField(serializers.Field):
    """ISO 8601 date or datetime in; aware UTC out. A bare date as an end means end of day."""

    def __init__(self, *, end_of_day=False, **kwargs):
        self.end_of_day = end_of_day
        super().__init__(**kwargs)

    def to_internal_value(self, value):
        if not isinstance(value, str) or len(value) > 64 or not value.isascii():
            self.fail_invalid(value)
        text = value.strip().upper()
        try:
            # Dates first: parse_datetime would also read "2025-01-01" (as midnight).
            day = parse_date(text)
            moment = None if day else parse_datetime(text)
        except ValueError:  # well-formed but impossible, such as 2025-02-30
            self.fail_invalid(value)
        if day:
            moment = datetime.combine(day, dtime.max if self.end_of_day else dtime.min)
        elif moment is None:
            self.fail_invalid(value)
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=dt_timezone.utc)
        try:
            moment = moment.astimezone(dt_timezone.utc)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 and the like
            self.fail_invalid(value)
        if moment < EARLIEST:
            raise ValidationError("Must be 1970-01-01 or later.")
        if moment >= LATEST:
            raise ValidationError("Must be before 2100-01-01.")
        return moment

    def fail_invalid(self, value):
        raise ValidationError(f"Not an ISO 8601 date or datetime: {str(value)[:40]!r} "
                              "(use 2025-01-01 or 2025-01-01T00:00:00Z).")

    def to_representation(self, value):
        return iso(value)


def decimal_text(value):
    """A stored decimal as the exchange wrote it: never exponent notation (str() gives 0E-8)."""
    return None if value is None else format(value, "f")


@extend_schema_field({"type": "string", "format": "decimal", "example": "60000.12000000"})
class DecimalTextField(serializers.Field):
    def __init__(self, **kwargs):
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value):
        return decimal_text(value)


class RejectUnknownFields:
    """Serializer mixin: a key the serializer does not know is a 400 naming it (catches typos)."""

    IGNORED = {"csrfmiddlewaretoken", "format"}  # the browsable API's forms; ?format=json

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in set(data) - set(self.fields) - self.IGNORED)
            if unknown:
                allowed = ", ".join(n for n, f in self.fields.items() if not f.read_only)
                raise ValidationError({k[:64]: [f"Unknown field; allowed: {allowed}."] for k in unknown[:10]})
        return super().to_internal_value(data)


def validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class NotActiveSerializer(serializers.Serializer):
    """409 of a state change the job's status does not allow (config.errors.NotActive)."""

    detail = serializers.CharField()
    status = serializers.CharField(help_text="The job's status, which forbids the change.")


# --- views --------------------------------------------------------------------------------

class ApiView:
    """Mixin for every view here: errors are JSON even when CSV was asked for, and an
    unknown ?format= is a 400 rather than DRF's bare 404."""

    content_negotiation_class = ContentNegotiation

    def handle_exception(self, exc):
        request = self.request
        if getattr(getattr(request, "accepted_renderer", None), "format", None) == "csv":
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = request.accepted_renderer.media_type
        return super().handle_exception(exc)


class CSVRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (bytes, str)) else str(data)


def who(request) -> str:
    """Who asked, as runs and jobs record it: a user that names itself (`caller_name`: an API
    key's, `api:<key name>`) by that name, a logged-in user as `user:<username>`, no user
    (an open API) as `anonymous`."""
    user = request.user
    if user is None:
        return "anonymous"
    return getattr(user, "caller_name", None) or f"user:{user.get_username()}"


# --- pagination ---------------------------------------------------------------------------


def page_size_from(request, *, param: str, default: int, maximum: int) -> int:
    """`?page_size=` as an integer from 1 to `maximum` (400 naming the field otherwise)."""
    raw = request.query_params.get(param)
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        raise ValidationError({param: [f"Must be an integer from 1 to {maximum}."]})
    return size


class Pagination(pagination.PageNumberPagination):
    """`?page=` and `?page_size=`; a malformed value is a 400, a page past the end a 404."""

    page_size_query_param = "page_size"
    max_page_size = 1000
    invalid_page_message = "Page {page_number} does not exist ({message})."

    def get_page_size(self, request):
        return page_size_from(request, param=self.page_size_query_param, default=self.page_size,
                              maximum=self.max_page_size)

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param) or "1"
        if raw in self.last_page_strings:
            return paginator.num_pages
        if not raw.isascii() or not raw.isdigit() or int(raw[:30]) < 1:
            raise ValidationError({self.page_query_param: ["Must be a positive integer (or 'last')."]})
        return min(int(raw[:30]), 10**18)  # past the end either way; keeps huge numbers cheap


class CursorPagination(pagination.CursorPagination):
    """Cursor pages; a cursor that was not made by us is a 400 naming `cursor`."""

    page_size_query_param = "page_size"
    max_page_size = 5000
    invalid_cursor_message = "Invalid cursor; use the `next` or `previous` link of a page."

    def get_page_size(self, request):
        return page_size_from(request, param=self.page_size_query_param, default=self.page_size,
                              maximum=self.max_page_size)

    def decode_cursor(self, request):
        try:
            encoded = request.query_params.get(self.cursor_query_param)
            if encoded is not None:
                b64decode(encoded.encode("ascii"), validate=True)  # DRF skips stray characters
            cursor = super().decode_cursor(request)
        except Exception:  # NotFound, or binascii/Unicode errors DRF lets through
            cursor = None
            valid = False
        else:
            # A well-formed cursor can still carry a position the database cannot compare.
            valid = cursor is None or cursor.position is None or self.valid_position(cursor.position)
        if not valid:
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        return cursor

    def valid_position(self, position: str) -> bool:
        """Positions here are datetimes (the first ordering field); override for others."""
        try:
            return parse_datetime(position) is not None
        except ValueError:
            return False


# --- errors -------------------------------------------------------------------------------

def domain_error_body(exc: DomainError, *, view=None) -> dict:
    """The answer to a domain error a service raised (config.errors), the one place it is made:

    - InputError (400): `{"detail": message, "<field>": [message]}` and `"choices": [...]`
      when the service knows what the value may be;
    - any other (Conflict and its kinds 409, NotFound 404): `{"detail": detail, **extra}`, say
      `run_id` of the run already going (RunConflict) or a job's `status` (NotActive);
    - on a view with `error_envelope = True` (the /collect/ endpoints' contract), also
      `"success": false` and `"message"` (the detail again)."""
    if isinstance(exc, InputError):
        body = {"detail": exc.message, exc.field: [exc.message], **exc.extra}
        if exc.choices is not None:
            body["choices"] = list(exc.choices)
    else:
        body = {"detail": exc.detail, **exc.extra}
    if getattr(view, "error_envelope", False):
        body = {"success": False, "message": exc.detail, **body}
    return body


def exception_handler(exc, context):
    """DRF's handler, plus domain errors mapped once (domain_error_body) and JSON for anything
    it does not know (never an HTML 500 page)."""
    if isinstance(exc, DjangoValidationError):  # a model or field check reached the view
        if not hasattr(exc, "error_dict"):
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
        exc = ValidationError(exc.message_dict)
    elif isinstance(exc, RequestDataTooBig):
        return Response({"detail": "The request body is too large."},
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    elif isinstance(exc, SuspiciousOperation):  # too many fields, and the like
        log.warning("api_suspicious_request", error=str(exc))
        return Response({"detail": "Malformed request."}, status=status.HTTP_400_BAD_REQUEST)
    elif isinstance(exc, DomainError):
        return Response(domain_error_body(exc, view=context.get("view")), status=exc.status)
    elif isinstance(exc, IntegrityError):
        # Two requests raced past the same uniqueness check (say, one slug created twice).
        log.warning("api_integrity_error", exc_info=True)
        set_rollback()
        return Response({"detail": "This conflicts with data that was just stored; reload and retry."},
                        status=status.HTTP_409_CONFLICT)
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("api_unhandled_error", view=type(context.get("view")).__name__)
        set_rollback()
        return Response({"detail": "Internal error; it has been logged."},
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response
