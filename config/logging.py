"""structlog set-up: JSON lines in production, readable console output in development."""

import logging
import re
import sys
import threading
from urllib.parse import unquote_plus

import structlog

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10}
logging.addLevelName(5, "TRACE")


def _add_service(service):
    def processor(logger, method_name, event_dict):
        event_dict.setdefault("service", service)
        return event_dict
    return processor


# Names of query parameters that hold secrets (api_key, apikey, API-KEY, key, token, secret,
# password, signature...).
SECRET_NAME = re.compile(r"(?i)(api[_-]?key|\bkey\b|token|secret|passw(or)?d|signature|\bsig\b)")
# A query parameter in a logged request line: `?`, `&` or `;`, a name, `=`, a value.
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;?#\s\"]+)=(?P<value>[^&;#\s\"]*)")


def redact_query(text: str, *, mask: str = "[redacted]") -> str:
    """`GET /x?a=1;api_key=KEY HTTP/1.1` -> `GET /x?a=1;api_key=[redacted] HTTP/1.1`."""
    def replace(match):
        if SECRET_NAME.search(unquote_plus(match["name"])):
            return f"{match['lead']}{match['name']}={mask}"
        return match.group(0)

    return _QUERY_PARAM.sub(replace, text) if "=" in text else text


class RedactQuerySecrets(logging.Filter):
    """On the `django.server` logger: runserver logs the raw request line ("GET /...?api_key=KEY")
    before any middleware can take the key out, so its secret-looking parameters are redacted
    here. (gunicorn's access log reads RAW_URI, which collectors.auth.ApiKeyQueryMiddleware
    rewrites.)"""

    def filter(self, record):
        message = record.getMessage()
        redacted = redact_query(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_STANDARD = {"event", "level", "logger", "timestamp", "service", "run_id", "backfill_id", "request_id",
             "collector", "symbol", "exc_info", "_record", "_from_structlog"}
_storing = threading.local()


def store_run_event(logger, method_name, event_dict):
    """Keep info-and-above lines of a run or backfill (those with run_id or backfill_id, which the
    services bind) as RunEvent rows. Never fails the log call; never recurses."""
    levelno = LEVELS.get(event_dict.get("level", method_name), 0)
    run_id, backfill_id = event_dict.get("run_id"), event_dict.get("backfill_id")
    if levelno < logging.INFO or not (run_id or backfill_id) or getattr(_storing, "busy", False):
        return event_dict
    _storing.busy = True
    try:
        # Here, not at the top: settings import this module to configure logging, before
        # settings or models can be loaded.
        from django.conf import settings

        from collectors.models import RunEvent

        RunEvent.objects.create(
            level=event_dict.get("level", method_name), levelno=levelno, event=str(event_dict.get("event"))[:100],
            run_id=run_id, backfill_id=backfill_id, request_id=str(event_dict.get("request_id") or "")[:64],
            collector=str(event_dict.get("collector") or "")[:64], symbol=str(event_dict.get("symbol") or "")[:32],
            worker=settings.WORKER_NAME[:100],
            fields={**{k: v if isinstance(v, (int, float, bool, type(None))) else str(v)[:500]
                       for k, v in event_dict.items() if k not in _STANDARD}, **_exception(event_dict)})
    except Exception:  # the database may be down or inside a broken transaction: the line still prints
        pass
    finally:
        _storing.busy = False
    return event_dict


def _exception(event_dict) -> dict:
    """The exception of a log.exception() call, as its last lines (the type and message)."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        return {"exception": f"{exc_info[0].__name__}: {exc_info[1]}"[:1000]}
    return {}


def configure_logging(*, level: str, fmt: str, service: str) -> dict:
    """Configure structlog and return the LOGGING dict for Django."""
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in ("json", "console"):
        raise ValueError(f"LOG_FORMAT must be json or console, got {fmt!r}")
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
    ]
    structlog.configure(
        processors=[*shared, store_run_event, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    numeric = LEVELS[level]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                               structlog.processors.format_exc_info, renderer],
                "foreign_pre_chain": shared,
            }
        },
        "filters": {"redact_query_secrets": {"()": RedactQuerySecrets}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["default"], "level": numeric},
        "loggers": {
            "django.server": {"level": max(numeric, logging.WARNING), "filters": ["redact_query_secrets"]},
            "django_structlog": {"level": max(numeric, logging.INFO)},
            "axes.apps": {"level": max(numeric, logging.WARNING)},  # its banner at every command
        },
    }
