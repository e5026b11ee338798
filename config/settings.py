"""The one settings module. Everything that differs between environments comes
from the environment; `make run` works with nothing set (SQLite, in-process
tasks, a generated secret key), production refuses to start without secrets.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state of `make run` (SQLite file, generated keys); git-ignored.
RUN_DIR = Path(os.environ.get("OPTOUT_RUN_DIR", BASE_DIR / ".run"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# Secrets have no production default: without DJANGO_SECRET_KEY only DEBUG runs
# get a throwaway key, so sessions simply do not survive a restart of `make run`.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-" + secrets.token_urlsafe(40)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "registry",
    "optout",
]

MIDDLEWARE = [
    # First: health probes come by IP address over plain HTTP (see config/health.py).
    "config.health.HealthzMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its 413 page has the user and messages; it still runs before the
    # CSRF check reads request.POST (process_view runs after every __call__).
    "registry.middleware.UploadTooLargeMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# PostgreSQL is the system of record. SQLite is only the embedded default that
# lets `make run` start with nothing but Python.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(RUN_DIR / "db.sqlite3")}
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "optout",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["registry.auth.EmailBackend"]
LOGIN_URL = "registry:login"
LOGIN_REDIRECT_URL = "optout:dashboard"
LOGOUT_REDIRECT_URL = "registry:home"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# No photo bytes are ever persisted: uploads are read into memory, hashed and
# dropped. Django would spill uploads above FILE_UPLOAD_MAX_MEMORY_SIZE to a temp
# file, so the memory handler is the only one and the size caps below bound it.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]
# One photo file is refused above this size (per-file outcome "too large");
# 25 MiB covers full-resolution JPEGs from current cameras.
OPTOUT_MAX_PHOTO_BYTES = int(os.environ.get("OPTOUT_MAX_PHOTO_BYTES", 25 * 1024 * 1024))
# A whole upload request (many files, or a ZIP) is refused with 413 above this.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("OPTOUT_MAX_UPLOAD_BYTES", 200 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Many small files in one form post; Django's default of 100 fields is far too
# low for a folder of photos, so it is raised to the per-request file cap.
OPTOUT_MAX_FILES_PER_UPLOAD = int(os.environ.get("OPTOUT_MAX_FILES_PER_UPLOAD", 1000))
DATA_UPLOAD_MAX_NUMBER_FILES = OPTOUT_MAX_FILES_PER_UPLOAD
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000
# A hashes JSONL (the privacy path for a large archive) may hold this many lines.
OPTOUT_MAX_HASH_LINES = int(os.environ.get("OPTOUT_MAX_HASH_LINES", 100_000))
# Version of the privacy notice shown on the forms; every consent event records it.
OPTOUT_NOTICE_VERSION = os.environ.get("OPTOUT_NOTICE_VERSION", "2026-11")

# --- Pipelines (organizations with API keys) ---------------------------------
# One synchronous lookup decides at most this many records (PRODUCT.md).
OPTOUT_MAX_LOOKUP_RECORDS = 10_000
# The Spawning-compatible URL query takes at most this many URLs (as Spawning's).
OPTOUT_MAX_QUERY_URLS = 10_000
# A batch manifest upload is refused with 413 above this size, before it is read.
OPTOUT_MAX_MANIFEST_BYTES = int(os.environ.get("OPTOUT_MAX_MANIFEST_BYTES", 200 * 1024 * 1024))
# Records per chunk (one Celery task each): small enough that a chunk finishes
# well inside its lease, large enough that per-task overhead stays negligible.
OPTOUT_CHUNK_RECORDS = int(os.environ.get("OPTOUT_CHUNK_RECORDS", 10_000))
# A worker holds a chunk this long; the sweeper re-enqueues it once expired.
OPTOUT_CHUNK_LEASE_SECONDS = int(os.environ.get("OPTOUT_CHUNK_LEASE_SECONDS", 600))
# The matching index split across workers (docs/scaling.md): photos with
# key % OPTOUT_SHARDS == k live on shard k (claims on shard 0); a chunk fans out
# to queue match.shard<k> of every shard. Web and workers must agree on it.
OPTOUT_SHARDS = int(os.environ.get("OPTOUT_SHARDS", 1))
# The shard a worker owns (it consumes `-Q match.shard<k>`); unset: no shard.
OPTOUT_SHARD = int(os.environ["OPTOUT_SHARD"]) if os.environ.get("OPTOUT_SHARD") else None
# Workers (solo and thread pools) load their matching engine before they take
# work (optout.tasks.engine_preload).
OPTOUT_ENGINE_PRELOAD = os.environ.get("OPTOUT_ENGINE_PRELOAD", "1").lower() not in ("0", "false")
# A matching engine writes its loaded version at most this often (EngineState),
# and at least every OPTOUT_ENGINE_HEARTBEAT_SECONDS while it is used.
OPTOUT_ENGINE_REPORT_SECONDS = float(os.environ.get("OPTOUT_ENGINE_REPORT_SECONDS", 5))
OPTOUT_ENGINE_HEARTBEAT_SECONDS = float(os.environ.get("OPTOUT_ENGINE_HEARTBEAT_SECONDS", 60))
# GET /api/v1/registry lists engines that reported within this many seconds.
OPTOUT_ENGINE_SEEN_SECONDS = int(os.environ.get("OPTOUT_ENGINE_SEEN_SECONDS", 600))
# webdataset shards wait here for a worker to hash them; each is deleted once
# hashed (only the hashes stay). Must be shared by web and workers.
OPTOUT_SPOOL_DIR = Path(os.environ.get("OPTOUT_SPOOL_DIR", RUN_DIR / "spool"))
# Ed25519 key that signs batch receipts: PEM (PKCS#8) in the environment, or a
# file. Development generates a git-ignored file on first use; production must
# set one of the two (a receipt signed by a throwaway key proves nothing).
OPTOUT_RECEIPT_SIGNING_KEY = os.environ.get("OPTOUT_RECEIPT_SIGNING_KEY", "")
OPTOUT_RECEIPT_SIGNING_KEY_FILE = Path(
    os.environ.get("OPTOUT_RECEIPT_SIGNING_KEY_FILE", RUN_DIR / "receipt-signing-key.pem")
)
# Whether a missing key file is generated: the environment's DEBUG, fixed here
# because test runners switch settings.DEBUG off while tests run.
OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = DEBUG

EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "registry@localhost")
# Folder of the file-based email backend (EMAIL_BACKEND=...filebased.EmailBackend):
# the real-worker test reads the emails a worker sent from here.
if "EMAIL_FILE_PATH" in os.environ:
    EMAIL_FILE_PATH = os.environ["EMAIL_FILE_PATH"]

# Security: production values unless DEBUG; `manage.py check --deploy` passes
# with DJANGO_DEBUG off and a real secret key.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# A year of HSTS once deployed behind TLS; subdomains too, since the registry
# should own its whole host name.
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31_536_000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "registry.auth.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # config.parsers.JSONParser: DRF's, but a string that is not valid Unicode, a
    # body nested too deeply or a charset that is not one is a 400, not a 500. A
    # view that lists its own parser_classes must name it instead of DRF's.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    # Per API key quotas of the pipeline API (optout.throttles.ApiKeyRateThrottle),
    # counted in the default cache (Redis when REDIS_URL is set, shared by every
    # web process). "N/s|min|hour|day"; an empty value switches a quota off. A
    # lookup decides up to 10 000 records, so 600 lookups a minute is far above
    # one pipeline's honest need and stops a runaway loop from starving the others;
    # batch submissions are heavier (a manifest upload each), hence fewer.
    "DEFAULT_THROTTLE_RATES": {
        "lookup": os.environ.get("OPTOUT_RATE_LOOKUP", "600/min") or None,
        "urls": os.environ.get("OPTOUT_RATE_URLS", "600/min") or None,
        "changes": os.environ.get("OPTOUT_RATE_CHANGES", "600/min") or None,
        "batches": os.environ.get("OPTOUT_RATE_BATCHES", "60/min") or None,
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Opt-Out Registry API",
    "DESCRIPTION": (
        "Creators register photos by hash and refuse uses; training pipelines check "
        "their records against the registry."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the sidecar package's static files, not a CDN: the docs work offline
    # and the page loads no third-party script.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Pipeline responses carry exactly the fields their schemas name (optout/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "optout.schema.pipeline_response_schemas_close",
    ],
    # Two models have a `kind` field with different choices; name their enums.
    "ENUM_NAME_OVERRIDES": {
        "ClaimKindEnum": "registry.models.Claim.Kind",
        "ConsentEventKindEnum": "registry.models.ConsentEvent.Kind",
        # Fields named `use` and `uses` share the vocabulary of uses.
        "UseEnum": "optout.uses.USES",
        "VariantNameEnum": "registry.variants.DERIVED_VARIANTS",
    },
    # Public ids in paths (config.converters): a UUID, whatever case routes it.
    "PATH_CONVERTER_OVERRIDES": {"any_uuid": {"type": "string", "format": "uuid"}},
}

# Celery. The database row is the queue of record; Redis only wakes workers up.
CELERY_BROKER_URL = REDIS_URL or "memory://"
# Without Redis (`make run` on a bare machine) tasks run in-process; nowhere else.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL and env_bool("OPTOUT_EAGER_TASKS", True)
# A task is acknowledged only after it finished, so a worker that dies mid-task
# leaves it in the queue for another worker.
CELERY_TASK_ACKS_LATE = True
# Without this a SIGKILLed child's task is acked and lost.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per process: chunks are seconds long and must not queue up
# behind a busy process while another idles.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Hard limit well below the Redis visibility timeout (1 h), else a long task is
# redelivered to a second worker while the first still runs it.
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# JSON only: pickle from a broker is remote code execution.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Business state lives in PostgreSQL; a result backend would be a second truth.
CELERY_TASK_IGNORE_RESULT = True
# A worker started before Redis keeps retrying instead of exiting.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With acks_late, tasks running when the broker connection drops will be
# redelivered; cancelling them avoids running the same work twice at once.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Periodic sweepers (`celery -A config beat`). The database row is the queue of
# record and a Redis wake-up can be lost; each sweeper re-enqueues what waited
# too long.
CELERY_BEAT_SCHEDULE = {
    # Opt-out confirmation emails still unsent 10 minutes after filing. Every 5
    # minutes: a lost notice goes out within 15 minutes of filing, for one small
    # query per sweep.
    "opt-out-notices-sweep": {
        "task": "optout.tasks.opt_out_notices_sweep_task",
        "schedule": 5 * 60.0,
    },
    # Batch chunks whose lease expired or whose wake-up was lost, shards not yet
    # hashed, batches not finalized. Every minute: chunks take seconds, so a
    # killed worker's chunk should not wait long; a sweep is a few indexed queries.
    "batch-chunks-sweep": {
        "task": "optout.tasks.batch_chunks_sweep_task",
        "schedule": 60.0,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
