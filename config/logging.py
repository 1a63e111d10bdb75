"""structlog set-up: JSON lines in production, readable console output in development."""

import logging

import structlog

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10}
logging.addLevelName(5, "TRACE")


def _add_service(service):
    def processor(logger, method_name, event_dict):
        event_dict.setdefault("service", service)
        return event_dict
    return processor


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
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["default"], "level": numeric},
        "loggers": {
            "django.server": {"level": max(numeric, logging.WARNING)},
            "django_structlog": {"level": max(numeric, logging.INFO)},
        },
    }
