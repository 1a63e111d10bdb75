"""The database cache table (so `migrate` alone readies a database) and the recovery sweep."""

import io

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0,
                 stdout=io.StringIO())


def schedule_recovery(apps, schema_editor):
    from django.conf import settings

    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="collectors: recover abandoned runs",
        defaults={"func": "collectors.tasks.runs_recover", "schedule_type": "I",
                  "minutes": settings.RUN_RECOVERY_INTERVAL_MINUTES, "repeats": -1})


def unschedule_recovery(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        name="collectors: recover abandoned runs").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("collectors", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
        migrations.RunPython(schedule_recovery, unschedule_recovery),
    ]
