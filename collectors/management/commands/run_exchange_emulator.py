"""Serve the offline Binance-compatible exchange emulator until interrupted (SIGINT/SIGTERM)."""

import signal

from django.core.management.base import BaseCommand

from collectors.emulator import ExchangeEmulator


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the Binance-spot-compatible exchange emulator (for the demo, tests and benchmark)."
    requires_system_checks = []  # plain HTTP server: needs neither the database nor the checks

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100, help="0 picks a free port.")
        parser.add_argument("--error-rate", type=float, default=0.0,
                            help="Fraction of klines/ticker requests answered with a 5xx.")
        parser.add_argument("--rate-429", type=float, default=0.0,
                            help="Fraction of klines/ticker requests answered 429.")
        parser.add_argument("--slow-ms", type=float, default=0.0, help="Delay before each answer.")
        parser.add_argument("--malformed-rate", type=float, default=0.0,
                            help="Fraction of klines/ticker requests answered 200 with a bad body.")
        parser.add_argument("--seed", type=int, default=42, help="Seed of the fault generator.")
        parser.add_argument("--weight-limit", type=int, default=6000)
        parser.add_argument("--window-seconds", type=int, default=60)

    def handle(self, *args, **options):
        emulator = ExchangeEmulator(
            error_rate=options["error_rate"],
            rate_429=options["rate_429"],
            slow_ms=options["slow_ms"],
            malformed_rate=options["malformed_rate"],
            seed=options["seed"],
            weight_limit=options["weight_limit"],
            window_seconds=options["window_seconds"],
        )
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

        def ready(url):
            self.stdout.write(f"Exchange emulator listening on {url}")
            self.stdout.flush()

        try:
            emulator.serve_forever(options["host"], options["port"], on_ready=ready)
        finally:
            signal.signal(signal.SIGTERM, previous)
