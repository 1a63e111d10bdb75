"""Cancel and retry-failed send a chunk task only for chunks that have none in the queue (the
ORM broker of the tests' database is the queue counted here)."""

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone
from django_q.models import OrmQ

from backfills import services
from backfills.models import BackfillChunk, BackfillJob
from collectors import tasks
from collectors.models import CollectionRun, RunSymbol
from tests.factories import CollectorFactory, RunFactory

pytestmark = pytest.mark.django_db
CHUNK_TASK = "backfills.tasks.chunk_execute"


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def queued_chunk_tasks() -> Counter:
    """Chunk id -> how many chunk tasks for it wait in the broker's queue."""
    tasks = (row.task for row in OrmQ.objects.all())
    return Counter(task["args"][0] for task in tasks if task["func"] == CHUNK_TASK)


def run_queued_task_of(chunk_id):
    """What a worker does with one queued task for this chunk: take it off the queue, run it."""
    for row in OrmQ.objects.order_by("id"):
        task = row.task
        if task["func"] == CHUNK_TASK and task["args"] == (chunk_id,):
            row.delete()
            services.chunk_collect(chunk_id=chunk_id)
            return
    raise AssertionError(f"no queued task for chunk {chunk_id}")


@pytest.fixture
def job(emulator, settings, django_capture_on_commit_callbacks):
    settings.BACKFILL_BATCH_SIZE = 1000  # 4 chunks per symbol
    collector = CollectorFactory(config={"base_url": emulator.url, "interval": "1h"},
                                 symbols=["BTCUSDT", "ETHUSDT"])
    job, estimate = services.backfill_create(collector=collector, start=utc(2024, 1, 1),
                                             end=utc(2024, 5, 1), created_by="t")
    services.backfill_start(job_id=job.pk)  # what the backfill task does on a worker
    assert estimate["chunks"] == job.chunks.count() == 2 * 3
    return job


def cancel_and_retry(job, capture):
    services.backfill_cancel(job=BackfillJob.objects.get(pk=job.pk))
    with capture(execute=True):
        return services.backfill_retry_failed(job=BackfillJob.objects.get(pk=job.pk))


def test_nine_cancels_and_retries_leave_one_queued_task_per_chunk(job, django_capture_on_commit_callbacks):
    chunks = set(job.chunks.values_list("pk", flat=True))
    assert queued_chunk_tasks() == Counter(dict.fromkeys(chunks, 1))
    for _ in range(9):
        assert cancel_and_retry(job, django_capture_on_commit_callbacks) == len(chunks)
        assert queued_chunk_tasks() == Counter(dict.fromkeys(chunks, 1))  # was 1, 2, ... 10 each
    # The tasks that waited all along do the work: nothing is stranded pending.
    for pk in sorted(chunks):
        run_queued_task_of(pk)
    job.refresh_from_db()
    assert job.status == BackfillJob.COMPLETE and not queued_chunk_tasks()
    assert set(job.chunks.values_list("attempts", flat=True)) == {1}


def test_a_chunk_whose_task_ran_while_cancelled_gets_a_new_task_on_retry(job, django_capture_on_commit_callbacks):
    first, *others = job.chunks.order_by("start", "symbol").values_list("pk", flat=True)
    services.backfill_cancel(job=BackfillJob.objects.get(pk=job.pk))
    run_queued_task_of(first)  # a worker takes it now: nothing to do, the chunk is cancelled
    chunk = BackfillChunk.objects.get(pk=first)
    assert chunk.status == BackfillChunk.CANCELLED and chunk.attempts == 0 and chunk.enqueued_at is None
    with django_capture_on_commit_callbacks(execute=True):
        services.backfill_retry_failed(job=BackfillJob.objects.get(pk=job.pk))
    assert queued_chunk_tasks() == Counter(dict.fromkeys([first, *others], 1))
    for pk in [first, *others]:
        run_queued_task_of(pk)
    assert BackfillJob.objects.get(pk=job.pk).status == BackfillJob.COMPLETE


def test_a_backfill_task_delivered_twice_does_not_enqueue_its_chunks_twice(job):
    services.backfill_start(job_id=job.pk)
    assert set(queued_chunk_tasks().values()) == {1}


def test_one_sweep_resends_the_orphans_of_runs_and_backfills_alike(settings):
    """A worker died holding a run's symbol task and a chunk task (both pending, their tasks
    gone, the queue empty): the sweep sends both, although sending the first fills the queue."""
    settings.RUN_LEASE_SECONDS = 60
    collector = CollectorFactory(symbols=["BTCUSDT"])
    long_ago = dj_timezone.now() - timedelta(minutes=10)
    run = RunFactory(collector=collector, status=CollectionRun.RUNNING)
    symbol = RunSymbol.objects.create(run=run, symbol="BTCUSDT", enqueued_at=long_ago)
    job = BackfillJob.objects.create(collector=collector, status=BackfillJob.RUNNING,
                                     start=utc(2024, 1, 1), end=utc(2024, 2, 1))
    chunk = BackfillChunk.objects.create(job=job, symbol="BTCUSDT", start=utc(2024, 1, 1),
                                         end=utc(2024, 2, 1), enqueued_at=long_ago)
    assert not OrmQ.objects.exists()

    assert tasks.runs_recover() == 2
    sent = sorted((row.task["func"], row.task["args"]) for row in OrmQ.objects.all())
    assert sent == [(CHUNK_TASK, (chunk.pk,)), ("collectors.tasks.run_symbol_execute", (symbol.pk,))]
