"""Domain errors: what a service raises when a request cannot be done as asked.

A leaf (no Django): services of every app raise these, and each face maps them once —
the API in `config.api.exception_handler` (InputError 400, NotFound 404, Conflict 409,
UpstreamUnavailable 502),
the admin as messages, commands as CommandError.
"""


class DomainError(Exception):
    """The request cannot be done; `detail` says why, in words for the user; `extra` holds
    fields an answer carries beside it (say, the conflicting run's id)."""

    status = 400

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail, self.extra = detail, extra


class InputError(DomainError):
    """Bad input; `field` names what to fix, `choices` (if known) what it may be."""

    def __init__(self, field: str, message: str, *, choices=None):
        super().__init__(message)
        self.field, self.message, self.choices = field, message, choices


class NotFound(DomainError):
    """What the request names does not exist."""

    status = 404


class Conflict(DomainError):
    """The current state forbids it (a run already going, cancelling a finished job)."""

    status = 409


class UpstreamUnavailable(DomainError):
    """What the request needs from an upstream (the exchange's symbol list) could not be had."""

    status = 502


class RunConflict(Conflict):
    """The collector already has a queued or running run (or one of its symbols still stopping)."""

    def __init__(self, run):
        state = run.status if run.is_active else f"{run.status}, a symbol of it still stopping"
        super().__init__(f"Collector {run.collector.slug} already has run {run.pk} {state}.", run_id=run.pk)
        self.run = run


class NotActive(Conflict):
    """A state change asked of a job (run, backfill) whose status does not allow it."""

    def __init__(self, detail: str, *, status: str):
        super().__init__(detail, status=status)
