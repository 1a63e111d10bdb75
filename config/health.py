"""Health checks on django-health-check: the library's Database and Cache checks plus ours.

/health and /ready (the contract's JSON) run them through `run_checks`; /health/checks/ is the
library's own view of all of them (HTML, JSON, text or OpenMetrics by Accept or ?format=).
"""

import asyncio
import dataclasses

from asgiref.sync import async_to_sync
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django_q.status import Stat
from health_check.base import HealthCheck
from health_check.checks import Cache, Database
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView


@dataclasses.dataclass
class Migrations(HealthCheck):
    """Every migration is applied (a deploy that skipped `migrate` is not ready)."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self):
        connection = connections[self.alias]
        try:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        finally:
            connection.close()  # this runs in a pool thread: do not leave its connection open
        if pending:
            raise ServiceUnavailable(f"{len(pending)} migration(s) not applied")


@dataclasses.dataclass
class WorkerClusters(HealthCheck):
    """At least one django-q2 cluster (qcluster) has reported in (its Stat, kept by the broker)."""

    def run(self):
        clusters = Stat.get_all()
        if not clusters:
            raise ServiceUnavailable("no django-q2 cluster is alive: start `manage.py qcluster`")


CHECKS = {"database": Database, "migrations": Migrations, "cache": Cache, "workers": WorkerClusters}


def run_checks(*names: str) -> dict[str, str | None]:
    """{name: None if healthy else the reason} for the named checks, run concurrently."""

    async def gather():
        return await asyncio.gather(*(CHECKS[name]().get_result() for name in names))

    # async_to_sync, not asyncio.run: the cache check's thread-sensitive calls come back here.
    results = async_to_sync(gather)()
    return {name: (str(result.error) if result.error else None) for name, result in zip(names, results, strict=True)}


class ChecksView(HealthCheckView):
    """Every check, for people and monitoring (500 when one fails, including no workers)."""

    checks = tuple(CHECKS.values())
