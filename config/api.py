"""DRF plumbing shared by every API view (kept out of the apps to avoid import cycles)."""

import structlog
from rest_framework import pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = structlog.get_logger(__name__)


class Pagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


def exception_handler(exc, context):
    """DRF's handler, plus JSON for anything it does not know (never an HTML 500 page)."""
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("api_unhandled_error")
        return Response({"detail": "Internal error; it has been logged."},
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response
