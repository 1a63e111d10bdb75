from datetime import datetime, time as dtime, timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime
from tqdm import tqdm

from collectors import services
from collectors.models import CollectionRun
from config.errors import InputError, RunConflict


def parse_moment(text: str, *, end: bool) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"Not an ISO 8601 date or datetime: {text!r}")
        moment = datetime.combine(day, dtime.max if end else dtime.min)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_timezone.utc)
    return moment.astimezone(dt_timezone.utc)


class Command(BaseCommand):
    help = "Run a collection in the foreground (same engine and records as the API)."

    def add_arguments(self, parser):
        parser.add_argument("--collector", help="Collector slug (optional with one enabled collector).")
        parser.add_argument("--mode", required=True, choices=services.MODES)
        parser.add_argument("--start", help="Start date or datetime (UTC).")
        parser.add_argument("--end", help="End date or datetime (UTC, inclusive).")
        parser.add_argument("--symbols", help="Comma-separated symbols (default: all).")

    def handle(self, *args, collector, mode, start, end, symbols, **options):
        try:
            target = services.collector_resolve(slug=collector)
            run = services.run_trigger(
                collector=target, mode=mode,
                start=parse_moment(start, end=False) if start else None,
                end=parse_moment(end, end=True) if end else None,
                symbols=[s for s in symbols.split(",") if s.strip()] if symbols else None,
                triggered_by="cli", enqueue=False)
        except InputError as error:
            hint = f" Choices: {', '.join(error.choices)}." if error.choices else ""
            raise CommandError(f"{error.field}: {error.message}{hint}") from None
        except RunConflict as conflict:
            raise CommandError(str(conflict)) from None
        bar = tqdm(desc=f"run {run.pk} {mode}", unit="symbol", disable=options["verbosity"] == 0)

        def on_symbol_done(item):
            if bar.total is None:
                bar.total = run.symbols.count()
            bar.set_postfix(symbol=item.symbol, status=item.status, records=item.records)
            bar.update(1)

        services.run_start(run_id=run.pk, inline=True, on_symbol_done=on_symbol_done)
        bar.close()
        run.refresh_from_db()
        progress = run.progress()
        self.stdout.write(f"Run {run.pk}: {run.status}; {progress['records']:,} records, "
                          f"{progress['requests']:,} requests, {run.elapsed_seconds or 0:.1f} s.")
        for item in run.symbols.exclude(status__in=["complete", "skipped"]):
            self.stdout.write(f"  {item.symbol}: {item.status} {item.error} {item.missing_ranges or ''}")
        if run.status == CollectionRun.FAILED:
            raise CommandError(run.error or "Run failed.")
