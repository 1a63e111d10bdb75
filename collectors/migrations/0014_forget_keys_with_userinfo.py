"""Budget and breaker rows were keyed by the URL's netloc, credentials included; they are keyed
by host:port now (collectors.outbound.host_key). Rows of the old keys are dropped: they hold
only transient state (a window's weight, a breaker's count) and /metrics would show their keys."""

from django.db import migrations


def forget(apps, schema_editor):
    for name in ("RateWindow", "CircuitBreaker"):
        apps.get_model("collectors", name).objects.filter(key__contains="@").delete()


class Migration(migrations.Migration):
    dependencies = [("collectors", "0013_order_without_joins")]
    operations = [migrations.RunPython(forget, migrations.RunPython.noop)]
