import pytest
from rest_framework.test import APIClient

from collectors.emulator import ExchangeEmulator
from collectors.models import ApiKey


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    """Tests must not wait minutes: tiny backoffs and leases, a roomy weight budget."""
    settings.EXCHANGE_WEIGHT_BUDGET = 100_000
    settings.RUN_LEASE_SECONDS = 3
    # The emulator listens on 127.0.0.1, which the outbound policy refuses unless listed.
    settings.UPSTREAM_ALLOWED_HOSTS = ["127.0.0.1", "*"]


@pytest.fixture
def emulator():
    emu = ExchangeEmulator().start()
    yield emu
    emu.stop()


@pytest.fixture
def operator(admin_client):
    """A logged-in superuser's browser session (pytest-django's admin_client)."""
    return admin_client


@pytest.fixture
def admin_key(db):
    _, key = ApiKey.objects.create_key(name="tests", scope=ApiKey.ADMIN)
    return key


@pytest.fixture
def read_key(db):
    _, key = ApiKey.objects.create_key(name="reader", scope=ApiKey.READ)
    return key


@pytest.fixture
def api(admin_key):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=admin_key)
    return client
