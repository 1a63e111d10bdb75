from django.apps import AppConfig


class BackfillsConfig(AppConfig):
    name = "backfills"
    default_auto_field = "django.db.models.BigAutoField"
