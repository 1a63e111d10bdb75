"""The hot-path upsert, on whichever database the suite runs against (SQLite or MariaDB)."""

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from backfills.gaps import stored_gaps
from collectors.models import Candle
from collectors.storage import upsert_candles
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db
HOUR_MS = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z


def row(i, close="100.00000000", volume="123456789012.12345678"):
    open_ms = T0 + i * HOUR_MS
    return (open_ms, "99.50000000", "101.25000000", "0.00000001", close, volume,
            open_ms + HOUR_MS - 1, "98765432109876543210.87654321", 42, "1.00000000", "2.00000000")


def test_upsert_stores_exact_decimal_strings_and_utc_times():
    collector = CollectorFactory()
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=[row(0)])
    candle = Candle.objects.get()
    assert candle.open_time == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert candle.close_time == datetime(2025, 1, 1, 0, 59, 59, 999000, tzinfo=timezone.utc)
    assert candle.volume == Decimal("123456789012.12345678")
    assert str(candle.quote_volume) == "98765432109876543210.87654321"
    assert format(candle.low, "f") == "0.00000001"
    assert candle.trades == 42


def test_upserting_the_same_page_twice_keeps_one_row_per_key_with_the_latest_values():
    collector = CollectorFactory()
    page = [row(i) for i in range(50)]
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=page)
    page[7] = row(7, close="105.00000000")
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=page)
    assert Candle.objects.count() == 50
    assert Candle.objects.get(open_time=datetime(2025, 1, 1, 7, tzinfo=timezone.utc)).close == Decimal("105")


def test_same_open_time_for_another_symbol_or_interval_is_another_row():
    collector = CollectorFactory()
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=[row(0)])
    upsert_candles(collector_id=collector.pk, symbol="ETHUSDT", interval="1h", rows=[row(0)])
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="4h", rows=[row(0)])
    assert Candle.objects.count() == 3


def test_stored_gaps_finds_leading_inner_and_trailing_holes_in_the_database():
    collector = CollectorFactory()
    present = [2, 3, 4, 8, 9]
    upsert_candles(collector_id=collector.pk, symbol="BTCUSDT", interval="1h", rows=[row(i) for i in present])

    def at(i):
        return datetime.fromtimestamp((T0 + i * HOUR_MS) / 1000, tz=timezone.utc)

    gaps = stored_gaps(collector_id=collector.pk, symbol="BTCUSDT", series="1h", start=at(0), end=at(12),
                       step=at(1) - at(0))
    assert gaps == [(at(0), at(2)), (at(5), at(8)), (at(10), at(12))]
    assert stored_gaps(collector_id=collector.pk, symbol="BTCUSDT", series="1h", start=at(2), end=at(5),
                       step=at(1) - at(0)) == []
    assert stored_gaps(collector_id=collector.pk, symbol="ETHUSDT", series="1h", start=at(0), end=at(3),
                       step=at(1) - at(0)) == [(at(0), at(3))]
