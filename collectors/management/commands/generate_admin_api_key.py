from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from collectors.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what uses the key.")
        parser.add_argument("--expires-days", type=int, help="Expire the key after N days.")
        parser.add_argument("--read-only", action="store_true", help="The key may only read.")

    def handle(self, *args, name, expires_days, read_only, **options):
        if not name.strip() or len(name) > 50:
            raise CommandError("--name must be 1 to 50 characters.")
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be a positive number of days.")
        expiry = timezone.now() + timedelta(days=expires_days) if expires_days else None
        api_key, key = ApiKey.objects.create_key(
            name=name.strip(), expiry_date=expiry, scope=ApiKey.READ if read_only else ApiKey.ADMIN)
        self.stderr.write(f"Created {api_key.scope} key {api_key.prefix} for {api_key.name}"
                          + (f", expires {expiry:%Y-%m-%d %H:%M} UTC" if expiry else "")
                          + ". Store it now: it is not shown again.")
        self.stdout.write(key)
