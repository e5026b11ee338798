"""Real Celery workers for tests: a separate `celery worker` process on the
pytest test database (tests using it commit for real: transaction=True) and a
Redis database number of the test module's own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings

from config.celery import app

BASE_DIR = Path(__file__).resolve().parents[1]
# Worker start-up (Django, Celery) plus one task; generous for a loaded 2-core CI box.
WAIT_SECONDS = 60


def worker_redis_url(db: int) -> str:
    """REDIS_URL with its own database number: each worker test module uses its
    own, so messages of other tests never reach its worker."""
    parts = urlsplit(os.environ["REDIS_URL"])
    return urlunsplit(parts._replace(path=f"/{db}"))


def database_url_of_tests() -> str:
    """DATABASE_URL of the database this test runs in (the pytest test database)."""
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(db['NAME'], safe='')}"


@contextmanager
def broker_at(db: int) -> Iterator[str]:
    """Point this process's Celery app at Redis database ``db``, really asynchronous."""
    saved = (app.conf.broker_url, app.conf.task_always_eager)
    url = worker_redis_url(db)
    app.conf.broker_url = url
    app.conf.task_always_eager = False
    _broker_connections_drop()
    app.control.purge()
    yield url
    app.conf.broker_url, app.conf.task_always_eager = saved
    _broker_connections_drop()


def _broker_connections_drop() -> None:
    """Forget pooled connections to the previous broker. app.close() drops the
    connection pool but not the producer pool, which would go on publishing to
    the previous URL: a second worker test module in the same run would then
    never see its messages."""
    app.close()
    app.amqp._producer_pool = None


def worker_start(
    redis_url: str,
    mail_dir: Path,
    log_path: Path,
    *,
    extra_env: dict[str, str] | None = None,
    queues: str = "default",
) -> subprocess.Popen[bytes]:
    """A real `celery worker` process on the pytest test database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CELERY_", "EMAIL_", "DATABASE_", "REDIS_"))
    }
    env |= {
        "DATABASE_URL": database_url_of_tests(),
        "REDIS_URL": redis_url,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": "worker-test-secret-key-never-deployed-0123456789",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(BASE_DIR),
    }
    env |= extra_env or {}
    celery = Path(sys.executable).parent / "celery"
    command = [
        str(celery),
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "-Q",
        queues,
        "--concurrency",
        "1",
        "--loglevel=INFO",
        # Alone on its broker database: no peers to sync with at start-up.
        "--without-mingle",
        "--without-gossip",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def worker_stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=15)
