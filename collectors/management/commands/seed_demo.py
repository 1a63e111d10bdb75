import json
import secrets
from datetime import date
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from collectors import services
from collectors.models import ApiKey, Collector

DEMO_FEEDS = ["markets.rss", "research.atom", "broken.rss"]  # the emulator's (broken: quarantined)
DEMO_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
                "NEWCOINUSDT"]


class Command(BaseCommand):
    help = ("Create (once) the demo superuser, API key, candle collector and news collector (whose "
            "first run is queued); print how to log in.")

    def add_arguments(self, parser):
        parser.add_argument("--exchange-url", default="http://127.0.0.1:9100",
                            help="Base URL of the exchange the demo collector uses (the emulator).")

    def handle(self, *args, exchange_url, **options):
        path = Path(settings.BASE_DIR) / ".demo" / "credentials.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None or "password" not in saved:
            saved["password"] = secrets.token_urlsafe(12)
            user = user or User(username="admin", email="admin@example.com")
            user.is_staff = user.is_superuser = True
            user.set_password(saved["password"])
            user.save()
        prefix = saved.get("api_key", ".").partition(".")[0]
        if not ApiKey.objects.filter(prefix=prefix, revoked=False).exists():
            _, saved["api_key"] = ApiKey.objects.create_key(name="demo", scope=ApiKey.ADMIN)
        collector, created = Collector.objects.get_or_create(
            slug="binance-spot-1h",
            defaults={"name": "Binance spot, hourly (emulator)", "kind": "binance_klines",
                      "config": {"base_url": exchange_url, "interval": "1h"},
                      "symbols": DEMO_SYMBOLS, "beginning_date": date(2025, 1, 1)})
        news, created = Collector.objects.get_or_create(
            slug="news-emulator",
            defaults={"name": "News feeds (emulator)", "kind": "rss_news", "schedule": "*/10 * * * *",
                      "config": {"feeds": [f"{exchange_url}/feeds/{name}" for name in DEMO_FEEDS]},
                      "beginning_date": date(2025, 1, 1)})
        if created:
            news.full_clean()  # derives the symbols (feed names) from the feeds
            news.save()
            services.run_trigger(collector=news, mode="forward", triggered_by="seed_demo")
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(saved))
        path.chmod(0o600)
        self.stdout.write(json.dumps({"username": "admin", "password": saved["password"],
                                      "api_key": saved["api_key"], "collector": collector.slug,
                                      "news_collector": news.slug}))
