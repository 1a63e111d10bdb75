"""Rebuild every collector's django-q2 schedule (idempotent; run it at each deploy)."""

from django.core.management.base import BaseCommand

from collectors import services


class Command(BaseCommand):
    help = "Make each collector's cron schedule match its definition and drop orphaned ones."

    def handle(self, *args, **options):
        result = services.schedules_rebuild()
        self.stdout.write(f"{result['scheduled']} collector schedule(s) in place, "
                          f"{result['removed']} orphaned one(s) removed.")
