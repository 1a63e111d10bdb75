"""Transactions that survive real concurrency: retried whole on a transient database error.

Several workers on several machines write at once, so some transactions are answered with
an error that says nothing about the data: InnoDB picks a deadlock victim (1213) or gives up
waiting for a lock (1205), MariaDB stops a statement at QUERY_TIMEOUT (1969), SQLite says
"database is locked", PostgreSQL reports a deadlock (40P01), a serialization failure (40001)
or a lock timeout (55P03). The transaction was rolled back, so running it again is safe.

- `atomic_retry(fn)` runs a multi-statement write transaction (a page of candles with its
  ledger and progress) and runs it again, whole, on such an error.
- `retry_statement` (installed on every connection by collectors.apps) does the same for a
  single statement in autocommit mode, which is its own transaction (claims, heartbeats,
  progress counters, state changes), so those need no wrapper at each call site.

tenacity does the waiting (jittered exponential backoff, bounded attempts).
"""

import structlog
from django.db import InterfaceError, OperationalError, connection, transaction
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

log = structlog.get_logger(__name__)

ATTEMPTS = 6  # then the error goes up: the page becomes a missing range, not a lost symbol
WAIT = wait_random_exponential(multiplier=0.05, max=2.0)  # ~0.05, 0.1, 0.2 ... 2 s, jittered

MYSQL_LOCK_ERRORS = {1205, 1213}  # lock wait timeout, deadlock
MYSQL_TIMEOUT_ERRORS = {1969, 3024}  # statement stopped at max_statement_time / max_execution_time
MYSQL_CONNECTION_ERRORS = {2002, 2003, 2006, 2013}  # can't connect, gone away, lost connection
PG_LOCK_ERRORS = {"40P01", "40001", "55P03"}  # deadlock, serialization failure, lock not available
PG_TIMEOUT_ERRORS = {"57014"}  # statement_timeout


def _codes(error: BaseException) -> tuple[int | None, str | None]:
    """(MySQL error number, PostgreSQL SQLSTATE) of a database error, where there is one."""
    args = getattr(error, "args", ())
    number = args[0] if args and isinstance(args[0], int) else None
    cause = error.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return number, sqlstate


def is_lock_error(error: BaseException) -> bool:
    """A deadlock or lock timeout: the statement or transaction was rolled back, nothing else."""
    if not isinstance(error, OperationalError):
        return False
    number, sqlstate = _codes(error)
    if number is not None:
        return number in MYSQL_LOCK_ERRORS
    if sqlstate is not None:
        return sqlstate in PG_LOCK_ERRORS
    text = str(error)
    return "database is locked" in text or "database table is locked" in text


def is_transient(error: BaseException) -> bool:
    """Worth running the whole transaction again: a lock error, a statement stopped at
    QUERY_TIMEOUT (it was waiting for a lock), or a lost connection (a restart, a failover)."""
    if is_lock_error(error):
        return True
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    number, sqlstate = _codes(error)
    return number in MYSQL_TIMEOUT_ERRORS | MYSQL_CONNECTION_ERRORS or sqlstate in PG_TIMEOUT_ERRORS


def _log_retry(state):
    error = state.outcome.exception()
    log.warning("db_retry", attempt=state.attempt_number, error=f"{type(error).__name__}: {error}"[:300])


def atomic_retry(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a transaction, run again whole (up to ATTEMPTS times, with jittered
    backoff) when the database answers with a transient error; the last error is raised.

    Inside an outer transaction there is nothing to retry here: the outer one was rolled back
    and must be retried by its owner, so fn just runs in a savepoint."""
    if connection.in_atomic_block:
        with transaction.atomic():
            return fn(*args, **kwargs)
    for attempt in Retrying(stop=stop_after_attempt(ATTEMPTS), wait=WAIT, reraise=True,
                            retry=retry_if_exception(is_transient), before_sleep=_log_retry):
        with attempt:
            try:
                with transaction.atomic():
                    return fn(*args, **kwargs)
            except Exception as error:
                if is_transient(error):
                    # A dropped connection is replaced on the next attempt, not reused.
                    connection.close_if_unusable_or_obsolete()
                raise


def retry_statement(execute, sql, params, many, context):
    """execute_wrapper: a statement in autocommit mode that hit a deadlock or lock timeout is
    run again (it was its own transaction). Inside a transaction the error goes up to the
    transaction's owner (atomic_retry), which runs the whole transaction again."""
    if context["connection"].in_atomic_block:
        return execute(sql, params, many, context)
    for attempt in Retrying(stop=stop_after_attempt(ATTEMPTS), wait=WAIT, reraise=True,
                            retry=retry_if_exception(is_lock_error), before_sleep=_log_retry):
        with attempt:
            return execute(sql, params, many, context)
