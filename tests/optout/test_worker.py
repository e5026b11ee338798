"""A real Celery worker, through real Redis, sends the opt-out confirmation.

The worker is a separate process connected to the pytest test database, so the
test commits for real (transaction=True) and the worker sees the opt-out. Redis
uses its own database number so messages of other tests never reach it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from optout.models import EngineState, OptOut
from optout.services import opt_out_file
from optout.tasks import opt_out_notice_send_task
from registry.ledger import registry_version_current
from registry.models import Channel
from tests.factories import CreatorFactory, PhotoFactory, UserFactory
from tests.workers import WAIT_SECONDS, worker_start, worker_stop

# The worker test's own Redis database (the other numbers serve other tests).
WORKER_REDIS_DB = 3


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


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_loads_its_matching_engine_before_it_takes_work(
    broker: str, tmp_path: Path
) -> None:
    # Given a photo under an opt-out
    creator = CreatorFactory()
    PhotoFactory(creator=creator)
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    version = registry_version_current()
    log_path = tmp_path / "worker.log"

    # When a worker starts, and before it has been given any task
    worker = worker_start(broker, tmp_path, log_path)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and worker.poll() is None:
            if " ready." in log_path.read_text(errors="replace"):
                break
            time.sleep(0.25)
        log = log_path.read_text(errors="replace")
        states = list(EngineState.objects.filter(worker__endswith=f":{worker.pid}"))
    finally:
        worker_stop(worker)

    # Then it announced itself ready only with its engine loaded and reported
    assert " ready." in log, log
    assert "loaded version" in log.split(" ready.")[0], log
    assert {(s.kind, s.loaded_version, s.size) for s in states} == {
        ("sha256", version, 1),
        ("pdq", version, 1),
        ("phash", version, 1),
    }, log
