"""Health and readiness against real processes: workers seen, a database outage and recovery."""

import pytest
import requests
from django.db import connection

from tests.e2e import TcpProxy, database_url, free_port, start_qcluster, start_web, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def get(port, path):
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=15)
    return response.status_code, response.json()


def test_a_running_qcluster_is_seen_by_the_checks(tmp_path):
    port = free_port()
    web, worker = start_web(tmp_path, port), start_qcluster(tmp_path)
    try:
        status, body = wait_for(lambda: (r := get(port, "/ready")) and r[1]["checks"]["workers"] and r,
                                timeout=30, what="the cluster to report in")
        assert status == 200 and body["problems"] == []
        assert get(port, "/health")[1]["workers_alive"] is True
        assert requests.get(f"http://127.0.0.1:{port}/health/checks/?format=json", timeout=15).status_code == 200
    finally:
        web.stop()
        worker.stop()


@pytest.mark.skipif(connection.vendor != "mysql", reason="needs a database server to cut (MariaDB run)")
def test_a_database_outage_makes_ready_503_and_health_say_so_and_both_recover(tmp_path):
    proxy = TcpProxy(int(connection.settings_dict["PORT"] or 3306))
    url = database_url().replace(f":{connection.settings_dict['PORT'] or 3306}/", f":{proxy.port}/")
    port = free_port()
    web = start_web(tmp_path, port, DATABASE_URL=url)
    try:
        assert get(port, "/ready")[0] == 200 and get(port, "/health")[0] == 200
        proxy.cut()
        status, body = get(port, "/ready")
        assert status == 503 and body["checks"]["database"] is False and body["status"] == "not_ready", body
        status, body = get(port, "/health")
        assert status == 503 and body["database_connected"] is False and body["status"] == "unhealthy"
        proxy.resume()
        wait_for(lambda: get(port, "/ready")[0] == 200, timeout=30, what="readiness to come back")
        assert get(port, "/health") [0] == 200
    finally:
        web.stop()
        proxy.cut()
