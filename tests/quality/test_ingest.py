"""Invalid candles from the exchange are quarantined with their rule; the rest is stored."""

import pytest

from backfills import services as backfills
from backfills.models import EmptyRange
from collectors import services
from collectors.models import Candle
from quality.models import QuarantinedRow, Revision
from tests.factories import CollectorFactory
from tests.quality.conftest import ms, utc

pytestmark = pytest.mark.django_db
H = 3_600_000


def collect(collector, **kwargs):
    run = services.run_trigger(collector=collector, mode="backward", triggered_by="tests", enqueue=False,
                               start=utc(2025, 1, 1), end=utc(2025, 1, 3, 23), **kwargs)
    services.run_start(run_id=run.pk, inline=True)
    return run


def test_invalid_candles_are_quarantined_with_their_rule_and_counted(emulator):
    bad = {f"BTCUSDT:{ms(utc(2025, 1, 1, 5))}": "high_below_low",
           f"BTCUSDT:{ms(utc(2025, 1, 2, 7))}": "negative_volume",
           f"BTCUSDT:{ms(utc(2025, 1, 3, 9))}": "misaligned_time"}
    emulator.configure(invalid_rows=bad)
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    run = collect(collector)
    item = run.symbols.get()
    assert (item.status, item.records, item.invalid) == ("complete", 72 - 3, 3)
    assert sorted(QuarantinedRow.objects.values_list("rule", flat=True)) == [
        "high_below_open_close", "misaligned_time", "negative_volume"]
    assert set(QuarantinedRow.objects.values_list("run_id", flat=True)) == {run.pk}
    stored = set(Candle.objects.values_list("open_time", flat=True))
    assert utc(2025, 1, 1, 5) not in stored and utc(2025, 1, 1, 6) in stored and len(stored) == 69
    # What the exchange sent, even if invalid, is not "the exchange had no data".
    assert not EmptyRange.objects.exists()
    negative = QuarantinedRow.objects.get(rule="negative_volume")
    assert negative.payload[0] == ms(utc(2025, 1, 2, 7)) and negative.payload[5].startswith("-")


def test_a_collector_with_validation_off_stores_what_the_exchange_sent(emulator):
    emulator.configure(invalid_rows={f"BTCUSDT:{ms(utc(2025, 1, 1, 5))}": "high_below_low"})
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h", "validate": False},
                                 symbols=["BTCUSDT"])
    item = collect(collector).symbols.get()
    assert (item.records, item.invalid) == (72, 0) and not QuarantinedRow.objects.exists()


def test_an_overlapping_fetch_counts_duplicates_and_records_a_revision_the_exchange_made(emulator, admin_key):
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"}, symbols=["BTCUSDT"])
    collect(collector)
    changed_at = utc(2025, 1, 2, 7)
    before = Candle.objects.get(open_time=changed_at)
    emulator.configure(revisions={f"BTCUSDT:{ms(changed_at)}": {"volume": "4242.12345678"}})
    job, _ = backfills.backfill_create(collector=collector, start=utc(2025, 1, 1), end=utc(2025, 1, 3, 23),
                                       force=True, created_by="tests")
    backfills.backfill_start(job_id=job.pk, inline=True)
    chunk = job.chunks.get()
    assert (chunk.records, chunk.duplicates, chunk.revisions) == (72, 71, 1)
    revision = Revision.objects.get()
    assert revision.open_time == changed_at and revision.backfill_id == job.pk
    assert revision.changes == {"volume": [format(before.volume, "f"), "4242.12345678"]}
    assert format(Candle.objects.get(open_time=changed_at).volume, "f") == "4242.12345678"
