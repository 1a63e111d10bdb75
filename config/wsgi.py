import os

import structlog
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from config.security import check_api_keys_required  # noqa: E402 (needs the settings loaded above)


def _warn_about_unsafe_settings():
    """Say it at every start where operators look (the log), not only in `manage.py check`."""
    for warning in check_api_keys_required(None):
        structlog.get_logger("config.security").warning("unsafe_setting", id=warning.id, detail=warning.msg)


_warn_about_unsafe_settings()
