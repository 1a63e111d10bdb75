"""All settings, read from the environment (the table is in README.md, "Configuration")."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)  # optional; real env wins


def env_positive(name, default, cast=int):
    """Read a number that must be > 0, failing loudly at start-up otherwise."""
    value = env(name, cast=cast, default=default)
    if value <= 0:
        raise environ.ImproperlyConfigured(f"{name} must be > 0, got {value!r}")
    return value


DEBUG = env.bool("DEBUG", default=False)
# The default only suits the demo and tests; `manage.py check --deploy` flags it.
SECRET_KEY = env("SECRET_KEY", default="django-insecure-demo-key-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_prometheus",
    "django_structlog",
    "health_check",
    "collectors",
    "backfills",
    "quality",
]

MIDDLEWARE = [
    "collectors.auth.ApiKeyQueryMiddleware",  # first: nothing after it sees a ?api_key= in clear
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# SQLite (WAL, busy timeout, IMMEDIATE transactions so concurrent writers queue instead of
# failing) is the embedded default; mysql://user:pass@host:3306/name for MySQL/MariaDB.
# Seconds a database statement may take: MariaDB/MySQL abort longer ones (set per connection
# in collectors.apps); SQLite waits this long for a lock. 0 = no limit (SQLite: 30 s).
QUERY_TIMEOUT = env.float("QUERY_TIMEOUT", default=60.0) or 0.0
if QUERY_TIMEOUT < 0:
    raise environ.ImproperlyConfigured(f"QUERY_TIMEOUT must be >= 0, got {QUERY_TIMEOUT}")
DATABASE_URL = env("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"  # empty = unset
DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db.setdefault("OPTIONS", {}).update(
        {
            "timeout": QUERY_TIMEOUT or 30,  # how long a statement waits for another writer's lock
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # The test database is a file so that qcluster subprocesses in end-to-end tests share it.
    _db["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
elif _db["ENGINE"] in ("django.db.backends.mysql",):
    _db.setdefault("OPTIONS", {}).update(
        {
            "charset": "utf8mb4",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES', time_zone='+00:00'",
            # Django's default, said out loud: no gap locks, so pages of different symbols never
            # lock each other out (REPEATABLE READ's next-key locks did); see collectors/db.py.
            "isolation_level": "read committed",
        }
    )
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
_db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
_db["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# django-q2's Task has a conditional index that MariaDB ignores; nothing of ours relies on it.
SILENCED_SYSTEM_CHECKS = ["models.W037"]

# --- Cache and broker -----------------------------------------------------------------
# With REDIS_URL, Redis is the cache and the django-q2 broker (needed for workers on several
# machines without sharing one database queue). Without it, the database is both, so the web
# process still sees the workers' heartbeats.
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}}

Q_WORKERS = env_positive("Q_WORKERS", 2)
Q_TASK_TIMEOUT = env_positive("Q_TASK_TIMEOUT", 1800)
Q_CLUSTER = {
    "name": env("Q_CLUSTER_NAME", default="collectors"),
    "workers": Q_WORKERS,
    "recycle": 500,
    "timeout": Q_TASK_TIMEOUT,
    # django-q2 requires retry > timeout; our own lease-based recovery (RUN_LEASE_SECONDS)
    # picks up killed work much sooner than this broker-level redelivery.
    "retry": Q_TASK_TIMEOUT + 60,
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 2000,
    "poll": 0.2,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Collection -----------------------------------------------------------------------
def env_date(name, default):
    import datetime

    text = env(name, default=default)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise environ.ImproperlyConfigured(f"{name} must be a date like 2025-01-01, got {text!r}")


# Default beginning date of new collectors (COLLECTION_START_DATE is accepted as an alias).
COLLECTOR_BEGINNING_DATE = env_date("COLLECTOR_BEGINNING_DATE",
                                    env("COLLECTION_START_DATE", default="2025-01-01"))
COLLECTION_SCHEDULE = env("COLLECTION_SCHEDULE", default="0 */6 * * *")
TOP_N_CRYPTOS = env_positive("TOP_N_CRYPTOS", 100)
ENABLE_RATE_LIMITING = env.bool("ENABLE_RATE_LIMITING", default=True)
# Request weight per window shared by every worker on every machine (Binance: 6000/minute
# per IP; we keep headroom for anything else that uses the same address).
EXCHANGE_WEIGHT_BUDGET = env_positive("EXCHANGE_WEIGHT_BUDGET", 4800)
EXCHANGE_WEIGHT_WINDOW_SECONDS = env_positive("EXCHANGE_WEIGHT_WINDOW_SECONDS", 60)
HTTP_TIMEOUT_SECONDS = env_positive("HTTP_TIMEOUT_SECONDS", 15.0, cast=float)
# Longest Retry-After we sleep through inside one request; longer ones fail the page.
HTTP_MAX_RETRY_AFTER_SECONDS = env_positive("HTTP_MAX_RETRY_AFTER_SECONDS", 120.0, cast=float)
# Circuit breaker per upstream, shared by all workers: opens after this many consecutive
# failures (network errors, 5xx, malformed bodies) for CIRCUIT_BREAKER_TIMEOUT seconds, then
# lets one probe through. An HTTP 418 (IP ban) opens it until the ban ends.
CIRCUIT_BREAKER_FAILURE_THRESHOLD = env_positive("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5)
CIRCUIT_BREAKER_TIMEOUT = env_positive("CIRCUIT_BREAKER_TIMEOUT", 60.0, cast=float)
# A symbol task that has not written a heartbeat for this long is presumed dead (its worker
# was killed) and is handed to another worker by the recovery sweep.
RUN_LEASE_SECONDS = env_positive("RUN_LEASE_SECONDS", 90)
# Apply the quality rules on ingest (a collector may switch them off with "validate": false);
# rows that break one are quarantined (quality.QuarantinedRow), not stored.
ENABLE_DATA_VALIDATION = env.bool("ENABLE_DATA_VALIDATION", default=True)
# Count fetched rows that already exist (duplicates) and record changed ones (revisions).
ENABLE_DUPLICATE_DETECTION = env.bool("ENABLE_DUPLICATE_DETECTION", default=True)
# Rows per INSERT batch when storing candles (each fetched page is one transaction; bigger
# pages are written in batches of this size).
BATCH_COMMIT_SIZE = env_positive("BATCH_COMMIT_SIZE", 1000)
# Candle interval of collectors whose config names none (1s ... 1d, as the exchange spells it).
COLLECTION_INTERVAL = env("COLLECTION_INTERVAL", default="1h")
# Candles per backfill chunk (rounded down to whole 1000-candle pages, at least one page).
BACKFILL_BATCH_SIZE = env_positive("BACKFILL_BATCH_SIZE", 10_000)
# The most chunks one backfill may have; a larger one is refused (400) before anything is built.
# 100 symbols x 5 years of 1m candles is ~26,300 chunks at the default batch size.
BACKFILL_MAX_CHUNKS = env_positive("BACKFILL_MAX_CHUNKS", 50_000)
# Names this machine in claims (RunSymbol/BackfillChunk.claimed_by); default: the host name.
WORKER_NAME = env("WORKER_NAME", default=__import__("socket").gethostname())
RUN_RECOVERY_INTERVAL_MINUTES = env_positive("RUN_RECOVERY_INTERVAL_MINUTES", 1)

# Alerts through a webhook (JSON POST): failed runs, opened breakers, stale data, error rate.
ENABLE_ALERTING = env.bool("ENABLE_ALERTING", default=False)
ALERT_WEBHOOK_URL = env("ALERT_WEBHOOK_URL", default="")
# Share of symbols/chunks finished in the last hour that failed or were partial, above which
# an error-rate alert is raised (checked every ALERT_CHECK_INTERVAL_MINUTES).
ALERT_ERROR_THRESHOLD = env_positive("ALERT_ERROR_THRESHOLD", 0.2, cast=float)
ALERT_DEDUP_MINUTES = env_positive("ALERT_DEDUP_MINUTES", 60)
ALERT_CHECK_INTERVAL_MINUTES = env_positive("ALERT_CHECK_INTERVAL_MINUTES", 5)

# Directory shared by the web server and the workers of one machine for prometheus_client's
# multiprocess mode (must be set before start-up and emptied at each start); empty: per process.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default="")

# --- quality --------------------------------------------------------------------------
# Quality snapshots (the trend) and drift audits older than this are deleted.
DATA_RETENTION_DAYS = env_positive("DATA_RETENTION_DAYS", 90)
# Every enabled collector's quality report is snapshotted this often (a django-q2 schedule).
QUALITY_SNAPSHOT_INTERVAL_MINUTES = env_positive("QUALITY_SNAPSHOT_INTERVAL_MINUTES", 15)
# GET /api/admin/data-quality/ serves the latest snapshot when it is younger than this and no
# run or backfill of the collector finished since; otherwise it computes the report live.
QUALITY_SNAPSHOT_MAX_AGE_SECONDS = env_positive("QUALITY_SNAPSHOT_MAX_AGE_SECONDS", 1800)
# An event collector's feed (news) is stale when its newest stored entry is older than this.
EVENT_STALE_AFTER_HOURS = env_positive("EVENT_STALE_AFTER_HOURS", 24, cast=float)
# Stored candles the scheduled drift audit re-fetches per collector (cron AUDIT_SCHEDULE, UTC).
AUDIT_SAMPLE_SIZE = env_positive("AUDIT_SAMPLE_SIZE", 100)
AUDIT_SCHEDULE = env("AUDIT_SCHEDULE", default="30 3 * * *")
if not __import__("croniter").croniter.is_valid(AUDIT_SCHEDULE):
    raise environ.ImproperlyConfigured(f"AUDIT_SCHEDULE={AUDIT_SCHEDULE!r} is not a cron expression (e.g. '30 3 * * *').")

# --- API ------------------------------------------------------------------------------
API_KEY_REQUIRED = env.bool("API_KEY_REQUIRED", default=True)
API_KEY_QUERY_PARAM_ENABLED = env.bool("API_KEY_QUERY_PARAM_ENABLED", default=True)
API_KEY_CUSTOM_HEADER = "HTTP_X_API_KEY"
# Requests per minute per API key (or staff user) on /api/admin/; 0 = unlimited. Counted in the
# cache (the database or Redis), so all web processes share the count.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)
# Most candles one CSV export (GET /api/admin/candles/?format=csv) may stream; more is a 400
# before the first byte. It must stream within the web server's worker timeout (gunicorn
# --timeout 120 in deploy/): ~26,000 rows/s measured on SQLite, so 500,000 take ~20 s.
EXPORT_MAX_ROWS = env_positive("EXPORT_MAX_ROWS", 500_000)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "collectors.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["collectors.auth.HasAdminAccess"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.ContentNegotiation",
    "DEFAULT_THROTTLE_CLASSES": ["collectors.auth.PerKeyRateThrottle"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Market-data collection control plane",
    "DESCRIPTION": "Run and supervise OHLCV and news collectors. Authenticate with X-API-Key.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"BackfillStatusEnum": "backfills.models.BackfillJob.STATUSES"},
}

# --- Static, i18n, time ---------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Logging (structlog) --------------------------------------------------------------
from config.logging import configure_logging  # noqa: E402

LOG_LEVEL = env("LOG_LEVEL", default="info").lower()
LOG_FORMAT = env("LOG_FORMAT", default="console" if DEBUG else "json")
LOGGING = configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT, service="collectors")
DJANGO_STRUCTLOG_CELERY_ENABLED = False
