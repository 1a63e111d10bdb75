"""Collectors, their runs with per-symbol results, stored candles, API keys, rate windows."""

import hashlib
import math
import os
import time
from datetime import datetime, timedelta, timezone as dt_timezone

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from collectors import sources
from collectors.fields import ExactDecimalField
from config.errors import NotActive

# How a run chooses its ranges (collectors.engine.plan_ranges): history up to yesterday, what
# came since the last stored candle, or the holes (and what earlier work could not fetch).
MODES = ("backward", "forward", "gap_fill")


def default_beginning_date():
    return settings.COLLECTOR_BEGINNING_DATE


def default_schedule():
    return settings.COLLECTION_SCHEDULE


class Collector(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=64, choices=sources.kind_choices)
    config = models.JSONField(default=dict, blank=True, help_text="Settings for the kind. binance_klines: "
                              '{"base_url": "https://api.binance.com", "interval": "1h"}, plus '
                              '"top_n": 100, "quote_asset": "USDT" instead of a symbols list. '
                              'rss_news: {"feeds": ["https://example.com/news.rss", ...]} (the '
                              "symbols become the feeds' names).")
    symbols = models.JSONField(default=list, blank=True,
                               help_text='binance_klines: a list like ["BTCUSDT", "ETHUSDT"]; leave empty '
                                         'and set "top_n" in config for the N most traded symbols. '
                                         "rss_news: filled in from the feeds (their names) on save.")
    beginning_date = models.DateField(default=default_beginning_date,
                                      help_text="Earliest date collected (UTC).")
    schedule = models.CharField(max_length=100, blank=True, default=default_schedule,
                                help_text="Cron expression (UTC) for scheduled forward runs, e.g. "
                                          "0 */6 * * *; empty for none. A scheduled run is skipped "
                                          "while the previous one is still going.")
    enabled = models.BooleanField(default=True)
    max_retries = models.PositiveSmallIntegerField(default=3, validators=[MaxValueValidator(20)],
                                                   help_text="Retries per failed page (0-20).")
    retry_backoff_seconds = models.FloatField(
        default=2.0, validators=[MinValueValidator(0), MaxValueValidator(600)],
        help_text="First retry delay in seconds; doubles each retry (2, 4, 8 s).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    def clean(self):
        errors = {}
        if self.beginning_date and self.beginning_date > timezone.now().date():
            errors["beginning_date"] = "The beginning date is in the future."
        if self.schedule and not croniter.is_valid(self.schedule):
            errors["schedule"] = "Not a cron expression (five fields, e.g. 0 */6 * * *)."
        try:
            self.config, self.symbols = sources.validate_config(self.kind, self.config, self.symbols)
        except sources.ConfigError as error:
            errors.update(error.as_field_errors())
        if errors:
            raise ValidationError(errors)

    @property
    def source_class(self):
        return sources.source_class(self.kind)

    @property
    def grain(self) -> timedelta | None:
        return self.source_class.grain(self.config)

    @property
    def series(self) -> str:
        """The series key stored with each row (the candle interval, or '' for events)."""
        return self.config.get("interval", "")

    def active_run(self):
        return self.runs.active().order_by("-id").first()


class RunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=CollectionRun.ACTIVE)

    def with_progress(self):
        """Annotate what `progress()` needs, so a list of runs costs one query, not one per run.

        Django drops Meta.ordering from GROUP BY queries, so the newest-first order is restated."""
        ordered = self if self.query.order_by else self.order_by(*CollectionRun._meta.ordering)
        return ordered.annotate(**_progress_aggregates("symbols__"))


def _progress_aggregates(prefix=""):
    return {"p_total": Count(f"{prefix}id"),
            "p_done": Count(f"{prefix}id", filter=~Q(**{f"{prefix}status__in": RunSymbol.UNFINISHED})),
            "p_records": Sum(f"{prefix}records"), "p_requests": Sum(f"{prefix}requests")}


class Job(models.Model):
    """A job (a collection run, a backfill, a drift audit): a status, its times, its error.

    Every status change is a public method made of one conditional UPDATE (`transition`), like
    WorkItem.claim: of two workers, or a worker and a cancel, exactly one wins, and the loser
    learns it from the return value (or a NotActive error) instead of overwriting the winner.
    """

    QUEUED, RUNNING, COMPLETE, PARTIAL, FAILED, CANCELLED = (
        "queued", "running", "complete", "partial", "failed", "cancelled")
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, COMPLETE, PARTIAL, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)
    FINISHED = (COMPLETE, PARTIAL, FAILED, CANCELLED)
    noun, nouns = "job", "jobs"  # in messages: "Run 5 is complete; only queued or running runs ..."

    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    @property
    def elapsed_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    def transition(self, from_statuses, *, also: Q | None = None, **changes) -> bool:
        """Set `changes` if the job's status is still one of `from_statuses` (and `also` holds);
        False otherwise (someone else moved it first). The instance follows the row: its changes
        when this won, the status the winner left when it lost (for the refusal's message)."""
        rows = type(self).objects.filter(pk=self.pk, status__in=from_statuses)
        updated = (rows.filter(also) if also is not None else rows).update(**changes)
        if updated:
            for key, value in changes.items():
                setattr(self, key, value)
        else:
            self.status = type(self).objects.filter(pk=self.pk).values_list("status", flat=True).first() or self.status
        return bool(updated)

    def mark_running(self) -> bool:
        """Queued -> running; False if it was not queued any more."""
        return self.transition([self.QUEUED], status=self.RUNNING, started_at=timezone.now())

    def claim(self, *, stale_before: datetime) -> bool:
        """Take the job for the calling worker: queued, or running since before `stale_before`
        (its worker died). False if another worker has it or it has finished."""
        return self.transition([self.QUEUED, self.RUNNING],
                               also=Q(status=self.QUEUED) | Q(started_at__lt=stale_before),
                               status=self.RUNNING, started_at=timezone.now())

    def mark_finished(self, status, *, error="", **results) -> bool:
        """Close a queued or running job with its outcome; False if someone else closed it first."""
        return self.transition(self.ACTIVE, status=status, error=error[:5000], finished_at=timezone.now(),
                               **results)

    def cancel(self):
        """Stop a queued or running job; NotActive if it has finished."""
        if not self.mark_finished(self.CANCELLED, error="Cancelled by request."):
            raise NotActive(f"{self.noun.capitalize()} {self.pk} is {self.status}; only queued or running "
                            f"{self.nouns} can be cancelled.", status=self.status)

    def reopen(self) -> bool:
        """A finished job running again (a retry of its failed items); False if it is active."""
        return self.transition(self.FINISHED, status=self.RUNNING, error="", finished_at=None)

    def was_cancelled(self) -> bool:
        """Whether the job is cancelled now (read from the database: a cancel from elsewhere)."""
        return type(self).objects.filter(pk=self.pk, status=self.CANCELLED).exists()


class CollectionRun(Job):
    noun, nouns = "run", "runs"

    collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="runs")
    mode = models.CharField(max_length=16, choices=[(m, m) for m in MODES])
    start = models.DateTimeField(null=True, blank=True, help_text="Requested start (UTC).")
    end = models.DateTimeField(null=True, blank=True, help_text="Requested end (UTC).")
    requested_symbols = models.JSONField(default=list, blank=True)
    triggered_by = models.CharField(max_length=120, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True,
                                  help_text="The API request that started it: find all its log lines by it.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"Run {self.pk} ({self.collector.slug}, {self.mode}, {self.status})"

    def progress(self) -> dict:
        """Symbols done and records stored so far, from the per-symbol rows (one query)."""
        if hasattr(self, "p_total"):  # annotated by RunQuerySet.with_progress()
            agg = {k: getattr(self, k) for k in ("p_total", "p_done", "p_records", "p_requests")}
        else:
            agg = self.symbols.aggregate(**_progress_aggregates())
        total, done = agg["p_total"], agg["p_done"]
        return {"symbols_done": done, "symbols_total": total, "records": agg["p_records"] or 0,
                "requests": agg["p_requests"] or 0,
                "percent": round(100.0 * done / total, 1) if total else (100.0 if not self.is_active else 0.0)}

    def cancel(self):
        super().cancel()
        self.symbols.filter(status=RunSymbol.PENDING).update(status=RunSymbol.CANCELLED,
                                                               finished_at=timezone.now())


def worker_name() -> str:
    """Who claims work: WORKER_NAME (or the host name) and the process id."""
    return f"{settings.WORKER_NAME}:{os.getpid()}"


class WorkItem(models.Model):
    """A unit of fetching (a run's symbol, a backfill's chunk), claimed by one worker at a time.

    Claims are conditional UPDATEs, so workers on any machine never take the same item twice;
    an item whose worker stopped heart-beating for the lease is taken over (kill -9).
    """

    PENDING, RUNNING, COMPLETE, PARTIAL, FAILED, SKIPPED, CANCELLED = (
        "pending", "running", "complete", "partial", "failed", "skipped", "cancelled")
    STATUSES = [(s, s) for s in (PENDING, RUNNING, COMPLETE, PARTIAL, FAILED, SKIPPED, CANCELLED)]
    UNFINISHED = (PENDING, RUNNING)
    parent_active = {}  # filter that is true while the owning run or job is active

    symbol = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    records = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0, help_text="Rows quarantined by a quality rule.")
    duplicates = models.PositiveIntegerField(default=0, help_text="Fetched rows identical to stored ones.")
    revisions = models.PositiveIntegerField(default=0, help_text="Stored rows the exchange changed.")
    throttled_seconds = models.FloatField(default=0, help_text="Time spent waiting for the rate budget.")
    missing_ranges = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker claimed it.")
    claimed_by = models.CharField(max_length=100, blank=True, help_text="Last worker (host:pid).")
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @classmethod
    def outcome(cls, counts: dict) -> tuple[str, int] | None:
        """The status of a run or job whose items have these status counts, and how many items
        failed or are partial; None while any item is still pending or running."""
        total = sum(counts.values())
        if not total or any(counts.get(s) for s in cls.UNFINISHED):
            return None
        good = counts.get(cls.COMPLETE, 0) + counts.get(cls.SKIPPED, 0)
        status = cls.COMPLETE if good == total else cls.FAILED if counts.get(cls.FAILED) == total else cls.PARTIAL
        return status, total - good

    def claim(self, *, lease_seconds) -> bool:
        """Take this item for the calling worker: pending, or running with a dead worker.

        Called by the item's task, which is used up either way: `enqueued_at` is cleared, so
        "enqueued_at set" means "a task for it is still in the broker's queue" and whoever
        enqueues (a retry after a cancel) skips items that have one (`mark_enqueued`).
        """
        now = timezone.now()
        stale = now - timedelta(seconds=lease_seconds)
        claimable = Q(**self.parent_active) & (Q(status=self.PENDING) | Q(status=self.RUNNING, heartbeat_at__lt=stale))
        this = type(self).objects.filter(pk=self.pk)
        for _ in range(3):
            if this.filter(claimable).update(status=self.RUNNING, started_at=now, heartbeat_at=now,
                                             attempts=F("attempts") + 1, claimed_by=worker_name(),
                                             enqueued_at=None):
                self.refresh_from_db()
                return True
            # Not claimable now; both UPDATEs are conditional, so a retry that made the item
            # pending between them (and saw enqueued_at set, so sent no task) is caught by the
            # next claim instead of leaving a pending item with no task.
            if this.exclude(claimable).update(enqueued_at=None):
                return False
        return False

    @classmethod
    def mark_enqueued(cls, pks) -> list:
        """Of these items (in this order), those with no task in the queue, now marked as
        having one: the caller enqueues exactly these. A cancelled item retried before its
        task ran keeps that task, which claims it when it runs (`claim`)."""
        pks = list(pks)
        mark = timezone.now()  # also tells our rows from those another caller marks at once
        fresh = []
        for i in range(0, len(pks), 1000):
            batch = pks[i:i + 1000]
            cls.objects.filter(pk__in=batch, enqueued_at__isnull=True).update(enqueued_at=mark)
            marked = set(cls.objects.filter(pk__in=batch, enqueued_at=mark).values_list("pk", flat=True))
            fresh += [pk for pk in batch if pk in marked]
        return fresh

    def _mine(self):
        """This item while it is still this worker's claim (fencing: a worker whose lease ran
        out and whose item another worker took over changes nothing any more)."""
        return type(self).objects.filter(pk=self.pk, status=self.RUNNING, attempts=self.attempts)

    def add_progress(self, *, records=0, requests=0, retries=0, throttled_seconds=0.0, invalid=0,
                     duplicates=0, revisions=0) -> bool:
        """Add to the counters and beat the heart; False if the item is no longer ours."""
        return bool(self._mine().update(
            records=F("records") + records, requests=F("requests") + requests,
            invalid=F("invalid") + invalid, duplicates=F("duplicates") + duplicates,
            revisions=F("revisions") + revisions,
            retries=F("retries") + retries,
            throttled_seconds=F("throttled_seconds") + throttled_seconds,
            heartbeat_at=timezone.now()))

    def heartbeat(self):
        self._mine().update(heartbeat_at=timezone.now())

    def mark_finished(self, status, *, missing_ranges=(), error="") -> bool:
        """Record the outcome; False if the item is no longer ours."""
        changes = {"status": status, "missing_ranges": list(missing_ranges), "error": error[:5000],
                   "finished_at": timezone.now()}
        done = self._mine().update(**changes)
        if done:
            for key, value in changes.items():
                setattr(self, key, value)
        return bool(done)


class RunSymbol(WorkItem):
    """One symbol of one run: what it asked for, what it got, and whether it is alive."""

    parent_active = {"run__status__in": CollectionRun.ACTIVE}
    run = models.ForeignKey(CollectionRun, on_delete=models.CASCADE, related_name="symbols")

    class Meta:
        ordering = ["run_id", "symbol"]
        constraints = [models.UniqueConstraint(fields=["run", "symbol"], name="uniq_run_symbol")]

    def __str__(self):
        return f"{self.symbol} ({self.status})"


class Candle(models.Model):
    """One OHLCV candle, exactly as the exchange sent it; unique on its natural key."""

    collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="candles")
    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4)
    open_time = models.DateTimeField()
    open = ExactDecimalField()
    high = ExactDecimalField()
    low = ExactDecimalField()
    close = ExactDecimalField()
    volume = ExactDecimalField()
    close_time = models.DateTimeField()
    quote_volume = ExactDecimalField()
    trades = models.BigIntegerField()
    taker_buy_base_volume = ExactDecimalField()
    taker_buy_quote_volume = ExactDecimalField()

    class Meta:
        # collector_id, not collector: no join (nor a lock, in FOR UPDATE) on the collector row.
        ordering = ["collector_id", "symbol", "interval", "open_time"]
        constraints = [models.UniqueConstraint(fields=["collector", "symbol", "interval", "open_time"],
                                               name="uniq_candle")]

    def __str__(self):
        return f"{self.symbol} {self.interval} {self.open_time:%Y-%m-%d %H:%M}"


class Article(models.Model):
    """A news article from a feed (rss_news), stored once per collector: the guid, or the link
    when the feed gives no guid, is its natural key, so an article carried by two feeds or seen
    again in every later fetch is not stored twice."""

    collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="articles")
    source = models.CharField(max_length=32, help_text="The feed it was first read from (its name).")
    guid = models.CharField(max_length=500, help_text="The entry's id, or its link when it has none.")
    url = models.URLField(max_length=2000, blank=True)
    title = models.TextField(blank=True)
    summary = models.TextField(blank=True)
    published_at = models.DateTimeField(help_text="UTC; the entry's published (else updated) time.")
    authors = models.JSONField(default=list, blank=True)
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-published_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["collector", "guid"], name="uniq_article")]
        indexes = [models.Index(fields=["collector", "source", "published_at"])]

    def __str__(self):
        return self.title[:80] or self.guid


class HttpValidator(models.Model):
    """The ETag/Last-Modified a document last came with, per scope (a collector) and URL, for
    conditional GETs; written only once what was read from the document is stored."""

    scope = models.CharField(max_length=64, blank=True)
    url_hash = models.CharField(max_length=64, help_text="sha256 of the URL (URLs are too long to index).")
    url = models.TextField()
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="Last 200: the document had changed.")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="Last answer, 200 or 304.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "url_hash"], name="uniq_http_validator")]

    def __str__(self):
        return self.url

    @staticmethod
    def hash_of(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    @classmethod
    def lookup(cls, *, scope: str, url: str):
        return cls.objects.filter(scope=scope, url_hash=cls.hash_of(url)).first()

    @classmethod
    def remember(cls, *, scope: str, url: str, etag: str, last_modified: str, changed: bool):
        now = timezone.now()
        values = {"checked_at": now}
        if changed:
            values.update(etag=etag[:500], last_modified=last_modified[:100], changed_at=now)
        cls.objects.update_or_create(scope=scope, url_hash=cls.hash_of(url), defaults={"url": url, **values})


class ApiKey(AbstractAPIKey):
    """A hashed API key (only the hash is stored) with what it may do."""

    ADMIN, READ = "admin", "read"
    scope = models.CharField(max_length=16, choices=[(ADMIN, "admin: read and change"),
                                                     (READ, "read only")], default=ADMIN)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


class RateWindow(models.Model):
    """Request weight used in the current window of one upstream, shared by all workers."""

    key = models.CharField(max_length=200, unique=True)
    window_start = models.BigIntegerField(default=0, help_text="Epoch seconds.")
    used = models.PositiveIntegerField(default=0)
    blocked_until = models.FloatField(default=0, help_text="Epoch seconds; set by 429/418 Retry-After.")

    def __str__(self):
        return self.key

    @staticmethod
    def reserve(key, *, weight, limit, window_seconds, now=None) -> float:
        """Reserve `weight` in the current window; return 0 if granted, else seconds to wait.

        The conditional UPDATEs are atomic on every database, so concurrent workers on any
        machine never grant more than `limit` per window between them.
        """
        now = time.time() if now is None else now
        window = int(now // window_seconds * window_seconds)
        rows = RateWindow.objects.filter(key=key)
        state = None
        for _ in range(5):
            if rows.filter(window_start=window, used__lte=limit - weight,
                           blocked_until__lte=now).update(used=F("used") + weight):
                return 0.0
            # A new window starts from zero (one worker wins the roll-over).
            if rows.filter(window_start__lt=window, blocked_until__lte=now).update(
                    window_start=window, used=weight):
                return 0.0
            state = rows.values("window_start", "used", "blocked_until").first()
            if state is None:
                RateWindow.objects.get_or_create(key=key, defaults={"window_start": window})
                continue
            # Another worker created or rolled the row between our UPDATEs: look again rather
            # than wait for a window that still has room.
            has_room = state["window_start"] < window or (state["window_start"] == window
                                                          and state["used"] <= limit - weight)
            if not (has_room and state["blocked_until"] <= now):
                break
        state = state or {"blocked_until": 0}
        wait = max(window + window_seconds - now, state["blocked_until"] - now)
        return max(wait, 0.05)

    @staticmethod
    def observe(key, *, used, window_seconds, now=None):
        """Raise our count to what the upstream reports (others may share the address)."""
        now = time.time() if now is None else now
        window = int(now // window_seconds * window_seconds)
        RateWindow.objects.filter(key=key, window_start=window, used__lt=used).update(used=used)

    @staticmethod
    def block(key, *, until):
        RateWindow.objects.filter(key=key, blocked_until__lt=until).update(blocked_until=until)

    @staticmethod
    def state(key, *, limit, window_seconds, now=None) -> dict:
        now = time.time() if now is None else now
        window = int(now // window_seconds * window_seconds)
        row = RateWindow.objects.filter(key=key).first()
        used = row.used if row and row.window_start == window else 0
        return {"key": key, "used": used, "limit": limit, "remaining": max(limit - used, 0),
                "resets_in_seconds": math.ceil(window + window_seconds - now),
                "blocked_until": row.blocked_until if row and row.blocked_until > now else None}


class CircuitBreaker(models.Model):
    """One upstream's breaker, shared by every worker on every machine (conditional UPDATEs).

    closed: requests flow. After `threshold` consecutive failures it opens: nobody calls the
    upstream until `open_until`; then one worker wins the half-open probe (others keep
    waiting); its success closes the breaker, its failure opens it again. A 418 (IP banned
    until T) opens it until T.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
    STATES = [(s, s) for s in (CLOSED, OPEN, HALF_OPEN)]

    key = models.CharField(max_length=200, unique=True, help_text="The upstream's host:port.")
    state = models.CharField(max_length=10, choices=STATES, default=CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failures.")
    opened_at = models.DateTimeField(null=True, blank=True)
    open_until = models.FloatField(default=0, help_text="Epoch seconds: the next probe is allowed then.")
    probe_until = models.FloatField(default=0, help_text="Epoch seconds: lease of the running probe.")
    times_opened = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.key} ({self.state})"

    @property
    def next_probe_at(self):
        """When an open (or probing) breaker lets the next request through; None when closed."""
        if self.state == self.CLOSED:
            return None
        return datetime.fromtimestamp(max(self.open_until, self.probe_until), tz=dt_timezone.utc)

    @staticmethod
    def acquire(key, *, probe_seconds, now=None) -> float:
        """0 if a request may go out now (closed, or this caller won the probe), else seconds
        until the breaker may let one through."""
        now = time.time() if now is None else now
        rows = CircuitBreaker.objects.filter(key=key)
        row = rows.values("state", "open_until", "probe_until").first()
        if row is None or row["state"] == CircuitBreaker.CLOSED:
            return 0.0
        if row["state"] == CircuitBreaker.OPEN and row["open_until"] > now:
            return row["open_until"] - now
        # Open and due, or half-open with a probe whose worker went quiet: one caller wins.
        due = Q(state=CircuitBreaker.OPEN, open_until__lte=now) | Q(state=CircuitBreaker.HALF_OPEN,
                                                                    probe_until__lte=now)
        if rows.filter(due).update(state=CircuitBreaker.HALF_OPEN, probe_until=now + probe_seconds):
            return 0.0
        # Another worker is probing: look again soon (it may close the breaker any moment).
        return min(max(row["probe_until"] - now, 0.05), 1.0)

    @staticmethod
    def record_success(key):
        CircuitBreaker.objects.filter(key=key).exclude(state=CircuitBreaker.CLOSED, failures=0).update(
            state=CircuitBreaker.CLOSED, failures=0, probe_until=0)

    @staticmethod
    def record_failure(key, *, threshold, timeout, error="", now=None) -> bool:
        """Count a failure; open when the threshold is reached or a probe failed. True if it opened."""
        now = time.time() if now is None else now
        CircuitBreaker.objects.get_or_create(key=key)
        rows = CircuitBreaker.objects.filter(key=key)
        rows.update(failures=F("failures") + 1, last_error=error[:1000])
        return bool(rows.filter(Q(state=CircuitBreaker.HALF_OPEN) | Q(state=CircuitBreaker.CLOSED,
                                                                       failures__gte=threshold)).update(
            state=CircuitBreaker.OPEN, open_until=now + timeout, opened_at=timezone.now(),
            times_opened=F("times_opened") + 1))

    @staticmethod
    def trip(key, *, until, error="", now=None) -> bool:
        """Open until `until` (epoch seconds), e.g. the end of an IP ban; never shortens one."""
        now = time.time() if now is None else now
        CircuitBreaker.objects.get_or_create(key=key)
        rows = CircuitBreaker.objects.filter(key=key)
        opened = rows.exclude(state=CircuitBreaker.OPEN).update(
            state=CircuitBreaker.OPEN, open_until=until, opened_at=timezone.now(), last_error=error[:1000],
            times_opened=F("times_opened") + 1)
        rows.filter(open_until__lt=until).update(open_until=until)
        return bool(opened)


class Alert(models.Model):
    """A notification for the webhook: deduplicated by `key` (one per key per dedup window),
    delivered by a task with retries; a failing webhook only marks the alert failed."""

    PENDING, SENT, FAILED, SUPPRESSED = "pending", "sent", "failed", "suppressed"
    STATUSES = [(s, s) for s in (PENDING, SENT, FAILED, SUPPRESSED)]

    kind = models.CharField(max_length=40, db_index=True,
                            help_text="run_failed, circuit_open, data_stale, error_rate or test")
    key = models.CharField(max_length=200, db_index=True, help_text="What makes two alerts the same.")
    severity = models.CharField(max_length=10, default="error")
    summary = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=STATUSES, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.kind}: {self.summary}"


class RunEvent(models.Model):
    """A log line (info and above) of a run or backfill, kept for the admin and GET /api/admin/logs/
    (stored by the structlog processor in config.logging; pruned after DATA_RETENTION_DAYS)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    level = models.CharField(max_length=10)
    levelno = models.PositiveSmallIntegerField(db_index=True)
    event = models.CharField(max_length=100)
    run = models.ForeignKey("collectors.CollectionRun", null=True, blank=True, on_delete=models.CASCADE,
                            related_name="events")
    backfill = models.ForeignKey("backfills.BackfillJob", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="events")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    collector = models.CharField(max_length=64, blank=True)
    symbol = models.CharField(max_length=32, blank=True)
    worker = models.CharField(max_length=100, blank=True)
    fields = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.created_at:%H:%M:%S} {self.level} {self.event}"
