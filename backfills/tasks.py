"""django-q2 task entry points for backfills: ids in, one service call each."""

from backfills import services


def backfill_execute(job_id: int):
    services.backfill_start(job_id=job_id)


def chunk_execute(chunk_id: int):
    services.chunk_collect(chunk_id=chunk_id)
