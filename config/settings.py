"""All settings, read from the environment (the table is in README.md, "Configuration")."""

import datetime
import socket
from pathlib import Path

import environ
from croniter import croniter

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
# The demo key is public: it is accepted only with DEBUG on (the demo, development).
DEMO_SECRET_KEY = "django-insecure-demo-key-set-SECRET_KEY-in-production"
SECRET_KEY = env("SECRET_KEY", default="") or DEMO_SECRET_KEY
if SECRET_KEY == DEMO_SECRET_KEY and not DEBUG:
    raise environ.ImproperlyConfigured(
        "SECRET_KEY is not set, and DEBUG is off (production): set SECRET_KEY to a long random "
        "value kept secret, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`. "
        "For the demo or development set DEBUG=true instead (see SECURITY.md).")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS, proxies, client addresses (SECURITY.md has the production environment) ---------
# Off by default (the demo and the tests speak plain HTTP); `check --deploy` names each one.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Kubernetes probes and Prometheus reach the pod directly over plain HTTP: never redirected.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$", r"^health/checks/$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)


def env_proxy_ssl_header(name):
    """`X-Forwarded-Proto,https` (or Django's `HTTP_X_FORWARDED_PROTO,https`) -> Django's tuple."""
    text = env(name, default="").strip()
    if not text:
        return None
    header, _, value = (part.strip() for part in text.partition(","))
    if not header or not value:
        raise environ.ImproperlyConfigured(f"{name} must be like X-Forwarded-Proto,https, got {text!r}")
    header = header.upper().replace("-", "_")
    return (header if header.startswith("HTTP_") else f"HTTP_{header}", value)


# Trust the proxy's word that the request came over HTTPS. Only behind a proxy that sets this
# header itself (and drops one sent by the client): otherwise any client can claim HTTPS.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# Proxies in front of the web server that each append the address they saw to X-Forwarded-For.
# 0: the client address is the TCP peer (REMOTE_ADDR) and X-Forwarded-For is ignored (a client
# could write anything there). It decides whose failures the login and API-key lockouts count.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise environ.ImproperlyConfigured(f"TRUSTED_PROXY_COUNT must be >= 0, got {TRUSTED_PROXY_COUNT}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "axes",
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
    "csp",
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
    "csp.middleware.CSPMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into its 429 page
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out address before the password check
    "django.contrib.auth.backends.ModelBackend",
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
    text = env(name, default=default)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise environ.ImproperlyConfigured(f"{name} must be a date like 2025-01-01, got {text!r}") from None


# Default beginning date of new collectors (COLLECTION_START_DATE is accepted as an alias).
COLLECTOR_BEGINNING_DATE = env_date("COLLECTOR_BEGINNING_DATE",
                                    env("COLLECTION_START_DATE", default="2025-01-01"))
COLLECTION_SCHEDULE = env("COLLECTION_SCHEDULE", default="0 */6 * * *")
ENABLE_RATE_LIMITING = env.bool("ENABLE_RATE_LIMITING", default=True)
# Request weight per window shared by every worker on every machine (Binance: 6000/minute
# per IP; we keep headroom for anything else that uses the same address).
EXCHANGE_WEIGHT_BUDGET = env_positive("EXCHANGE_WEIGHT_BUDGET", 4800)
EXCHANGE_WEIGHT_WINDOW_SECONDS = env_positive("EXCHANGE_WEIGHT_WINDOW_SECONDS", 60)
# Hosts collectors may call (collectors.outbound): empty = any host whose addresses are all
# public; else only these (`api.binance.com`, `*.example.com`), on any address, plus `*` = any
# other host on public addresses. `make run` and the tests list the local emulator: 127.0.0.1,*
UPSTREAM_ALLOWED_HOSTS = env.list("UPSTREAM_ALLOWED_HOSTS", default=[])
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
WORKER_NAME = env("WORKER_NAME", default=socket.gethostname())
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
if not croniter.is_valid(AUDIT_SCHEDULE):
    raise environ.ImproperlyConfigured(
        f"AUDIT_SCHEDULE={AUDIT_SCHEDULE!r} is not a cron expression (e.g. '30 3 * * *').")

# --- API ------------------------------------------------------------------------------
API_KEY_REQUIRED = env.bool("API_KEY_REQUIRED", default=True)
API_KEY_QUERY_PARAM_ENABLED = env.bool("API_KEY_QUERY_PARAM_ENABLED", default=True)
API_KEY_CUSTOM_HEADER = "HTTP_X_API_KEY"
# Requests per minute per API key (or staff user) on /api/admin/; 0 = unlimited. Counted in the
# cache (the database or Redis), so all web processes share the count.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)
# Brute force: this many wrong API keys from one client address (config.security.client_address)
# within API_KEY_COOLOFF_MINUTES lock the address out for API_KEY_COOLOFF_MINUTES (429 with
# Retry-After for every key, right or wrong). 0 = no lockout. Counted in the cache.
API_KEY_FAILURE_LIMIT = env.int("API_KEY_FAILURE_LIMIT", default=20)
API_KEY_COOLOFF_MINUTES = env_positive("API_KEY_COOLOFF_MINUTES", 15, cast=float)

# Admin logins (django-axes): AXES_FAILURE_LIMIT failed logins from one client address lock that
# address (only the address: a guesser cannot lock a named user out) out of the login form for
# AXES_COOLOFF_MINUTES; failures older than that no longer count. Attempts are in the admin.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env_positive("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env_positive("AXES_COOLOFF_MINUTES", 15, cast=float))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "config.security.client_address"  # TRUSTED_PROXY_COUNT decides
AXES_RESET_ON_SUCCESS = True
AXES_USE_ATTEMPT_EXPIRATION = True
AXES_HTTP_RESPONSE_CODE = 429

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
    # DRF reads X-Forwarded-For whole when this is None (spoofable): 0 means REMOTE_ADDR.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
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

# --- Content Security Policy (django-csp) ----------------------------------------------
# Every page may load only what this server serves: no inline script or style, no other origin,
# no framing. The admin templates, the coverage map and the API docs keep their scripts and
# styles in static files (static/) for this; tests/config/test_csp*.py check every page in a browser.
from csp.constants import NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],  # /api/redoc/ adds a nonce and two hashes (config.views.OfflineRedocView)
        "img-src": [SELF, "data:"],  # Swagger UI's and the admin's icons are data: URIs
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Static, i18n, time ---------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the project's own (admin scripts and styles, docs)
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
