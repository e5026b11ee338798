"""A real Celery worker, through real Redis, sends the opt-out confirmation.

The worker is a separate process connected to the pytest test database, so the
test commits for real (transaction=True) and the worker sees the opt-out. Redis
uses its own database number so messages of other tests never reach it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings

from config.celery import app
from optout.models import OptOut
from optout.services import opt_out_file
from optout.tasks import opt_out_notice_send_task
from registry.models import Channel
from tests.factories import CreatorFactory, UserFactory

BASE_DIR = Path(__file__).resolve().parents[2]
# The worker test's own Redis database (the other numbers serve other tests).
WORKER_REDIS_DB = 3
# Worker start-up (Django, Celery) plus one task; generous for a loaded 2-core CI box.
WAIT_SECONDS = 60


def worker_redis_url() -> str:
    parts = urlsplit(os.environ["REDIS_URL"])
    return urlunsplit(parts._replace(path=f"/{WORKER_REDIS_DB}"))


def database_url_of_tests() -> str:
    """DATABASE_URL of the database this test runs in (the pytest test database)."""
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture
def broker() -> Iterator[str]:
    """Point this process's Celery app at the worker's Redis, really asynchronous."""
    saved = (app.conf.broker_url, app.conf.task_always_eager)
    url = worker_redis_url()
    app.conf.broker_url = url
    app.conf.task_always_eager = False
    app.close()  # drop pooled connections to the previous broker
    app.control.purge()
    yield url
    app.conf.broker_url, app.conf.task_always_eager = saved
    app.close()


def worker_start(redis_url: str, mail_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
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
    celery = Path(sys.executable).parent / "celery"
    command = [
        str(celery),
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "-Q",
        "default",
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


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_emails_the_confirmation_of_a_filed_opt_out(
    broker: str, tmp_path: Path
) -> None:
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    log_path = tmp_path / "worker.log"
    creator = CreatorFactory(user=UserFactory(email="worker-test@example.org"))
    worker = worker_start(broker, mail_dir, log_path)
    try:
        opt_out = opt_out_file(
            creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
        )

        deadline = time.monotonic() + WAIT_SECONDS
        messages: list[Path] = []
        sent_at = None
        while time.monotonic() < deadline and worker.poll() is None:
            messages = sorted(mail_dir.iterdir())
            sent_at = OptOut.objects.get(pk=opt_out.pk).notice_sent_at
            if messages and sent_at is not None:
                break
            time.sleep(0.25)

        # A redelivered wake-up (or the sweeper) for the same opt-out sends nothing.
        opt_out_notice_send_task.delay(opt_out.pk)
        while time.monotonic() < deadline and worker.poll() is None:
            if log_path.read_text(errors="replace").count("succeeded in") >= 2:
                break
            time.sleep(0.25)
        messages = sorted(mail_dir.iterdir())
    finally:
        worker_stop(worker)
    log = log_path.read_text(errors="replace")

    assert sent_at is not None, f"no notice within {WAIT_SECONDS}s; worker log:\n{log}"
    assert len(messages) == 1, log
    email = messages[0].read_text()
    assert f"Subject: Your opt-out {opt_out.public_id} is on file" in email
    assert f"Opt-out: {opt_out.public_id}" in email
    assert "To: worker-test@example.org" in email
    outcomes = re.findall(
        r"opt_out_notice_send_task\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: (\w+)", log
    )
    assert outcomes == ["True", "False"], log
    assert OptOut.objects.get(pk=opt_out.pk).notice_sent_at == sent_at
