"""DRF plumbing shared by every API view (kept out of the apps to avoid import cycles)."""

from base64 import b64decode
from datetime import timezone as dt_timezone

import structlog
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.utils.dateparse import parse_datetime
from rest_framework import pagination, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler, set_rollback

from config.errors import InputError

log = structlog.get_logger(__name__)


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


def exception_handler(exc, context):
    """DRF's handler, plus JSON for anything it does not know (never an HTML 500 page)."""
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
    elif isinstance(exc, InputError):
        # Bad input found by a service that the view did not catch itself: still a 400 naming
        # the field, never a 500.
        body = {"detail": exc.message, exc.field: [exc.message]}
        if exc.choices:
            body["choices"] = exc.choices
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
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


def iso(moment):
    """An aware datetime as ISO 8601 UTC with a Z, as every answer writes times; None stays None."""
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z") if moment else None
