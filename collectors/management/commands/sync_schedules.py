"""Rebuild every collector's django-q2 schedule and the service's own ones (idempotent; run it
at each deploy and start: changed settings take effect then)."""

from django.core.management.base import BaseCommand

from collectors import services
from config.schedules import system_schedules_sync


class Command(BaseCommand):
    help = ("Make each collector's cron schedule match its definition, drop orphaned ones, and set "
            "the system schedules (recovery, alerts, housekeeping, snapshots, audits) from settings.")

    def handle(self, *args, **options):
        result = services.schedules_rebuild()
        system = system_schedules_sync()
        self.stdout.write(f"{result['scheduled']} collector schedule(s) in place, "
                          f"{result['removed']} orphaned one(s) removed; system schedules: "
                          f"{system['created']} created, {system['updated']} updated, "
                          f"{system['unchanged']} unchanged.")
