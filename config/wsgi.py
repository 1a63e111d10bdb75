import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()


def _warn_about_an_open_api():
    """Say it at every start where operators look (the log), not only in `manage.py check`."""
    from django.conf import settings

    if not settings.API_KEY_REQUIRED and not settings.DEBUG:
        import structlog

        structlog.get_logger("config.security").warning(
            "api_keys_not_required", detail="API_KEY_REQUIRED is false and DEBUG is off: anyone who "
            "can reach this server may use /api/admin/ without a key (collectors.W001).")


_warn_about_an_open_api()
