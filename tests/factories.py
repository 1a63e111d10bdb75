from datetime import date

import factory

from collectors.models import CollectionRun, Collector


class CollectorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Collector

    slug = factory.Sequence(lambda n: f"binance-{n}")
    name = factory.LazyAttribute(lambda o: f"Binance test {o.slug}")
    kind = "binance_klines"
    config = factory.LazyFunction(lambda: {"base_url": "http://127.0.0.1:9", "interval": "1h"})
    symbols = factory.LazyFunction(lambda: ["BTCUSDT", "ETHUSDT"])
    beginning_date = date(2025, 1, 1)
    schedule = ""
    max_retries = 3
    retry_backoff_seconds = 0.01


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CollectionRun

    collector = factory.SubFactory(CollectorFactory)
    mode = "backward"
    triggered_by = "tests"
