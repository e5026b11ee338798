"""The opt-out confirmation notice: the task run directly, its enqueueing, the sweeper.

Task functions are called in-process; enqueueing is asserted through the
on-commit callbacks. tests/optout/test_worker.py runs the same path through a
real worker and Redis.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from optout.models import OptOut
from optout.services import creator_delete, opt_out_file, opt_out_notices_sweep
from optout.tasks import opt_out_notice_send_task, opt_out_notices_sweep_task
from registry.models import Channel, Creator
from tests.factories import CreatorFactory, UserFactory


def filed(creator: Creator | None = None, **changes: object) -> OptOut:
    opt_out = opt_out_file(
        creator=creator or CreatorFactory(),
        uses=["ai_training", "data_mining"],
        scope="all_photos",
        channel=Channel.WEB,
    )
    if changes:
        OptOut.objects.filter(pk=opt_out.pk).update(**changes)
        opt_out.refresh_from_db()
    return opt_out


def closed_port() -> int:
    """A local TCP port nobody listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.django_db
def test_notice_task_run_twice_sends_one_email() -> None:
    creator = CreatorFactory(user=UserFactory(email="alice@example.org"))
    opt_out = filed(creator)

    first = opt_out_notice_send_task(opt_out.pk)
    second = opt_out_notice_send_task(opt_out.pk)

    assert (first, second) == (True, False)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.org"]
    assert message.subject == f"Your opt-out {opt_out.public_id} is on file"
    assert f"Opt-out: {opt_out.public_id}\n" in message.body
    assert "  - data_mining: Data mining\n" in message.body
    assert "  - ai_training: AI training (includes generative AI training)\n" in message.body
    assert "Scope: all_photos (all my photos, including future ones)\n" in message.body
    assert f"Filed at registry version: {opt_out.filed_version}\n" in message.body
    assert "Privacy notice version: 2026-11\n" in message.body
    assert OptOut.objects.get(pk=opt_out.pk).notice_sent_at is not None


@pytest.mark.django_db
def test_filing_an_opt_out_enqueues_exactly_one_notice_on_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    creator = CreatorFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        opt_out = opt_out_file(
            creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.API
        )

    assert len(callbacks) == 1
    assert mail.outbox == []
    assert OptOut.objects.get(pk=opt_out.pk).notice_sent_at is None


@pytest.mark.django_db
def test_a_rejected_opt_out_enqueues_nothing(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    creator = CreatorFactory()

    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(ValidationError),
    ):
        opt_out_file(creator=creator, uses=["mind_reading"], scope="all_photos", channel="api")

    assert callbacks == []
    assert not OptOut.objects.exists()


@pytest.mark.django_db
def test_a_failed_send_releases_the_claim_so_the_retry_sends(settings: Settings) -> None:
    opt_out = filed()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = closed_port()
    settings.EMAIL_TIMEOUT = 5

    # Called directly (not by a worker), the task re-raises instead of retrying.
    with pytest.raises(ConnectionRefusedError):
        opt_out_notice_send_task(opt_out.pk)
    released = OptOut.objects.get(pk=opt_out.pk).notice_sent_at

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    sent = opt_out_notice_send_task(opt_out.pk)

    assert released is None
    assert sent is True
    assert len(mail.outbox) == 1
    assert OptOut.objects.get(pk=opt_out.pk).notice_sent_at is not None


def test_the_notice_task_retries_with_backoff_at_most_five_times() -> None:
    assert opt_out_notice_send_task.autoretry_for == (Exception,)
    assert opt_out_notice_send_task.max_retries == 5
    assert opt_out_notice_send_task.retry_backoff == 60


@pytest.mark.django_db
def test_no_notice_is_sent_for_a_deleted_account() -> None:
    opt_out = filed()
    creator_delete(creator=opt_out.creator, keep_opt_outs=True, channel=Channel.WEB)

    sent = opt_out_notice_send_task(opt_out.pk)

    assert sent is False
    assert mail.outbox == []
    assert OptOut.objects.get(pk=opt_out.pk).notice_sent_at is None


@pytest.mark.django_db
def test_a_notice_for_an_unknown_opt_out_is_a_no_op() -> None:
    assert opt_out_notice_send_task(987_654_321) is False
    assert mail.outbox == []


@pytest.mark.django_db
def test_the_sweeper_enqueues_only_stale_unsent_notices(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    now = timezone.now()
    stale = filed(created_at=now - timedelta(minutes=11))
    older_stale = filed(created_at=now - timedelta(hours=3))
    filed(created_at=now - timedelta(minutes=9))  # fresh: its own wake-up may still come
    filed(created_at=now - timedelta(minutes=30), notice_sent_at=now - timedelta(minutes=29))
    gone = filed(created_at=now - timedelta(minutes=30))
    creator_delete(creator=gone.creator, keep_opt_outs=True, channel=Channel.WEB)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        enqueued = opt_out_notices_sweep()

    assert enqueued == [older_stale.pk, stale.pk]
    assert len(callbacks) == 2


@pytest.mark.django_db
def test_the_sweeper_run_twice_enqueues_the_same_until_the_notice_is_sent(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    stale = filed(created_at=timezone.now() - timedelta(minutes=15))

    with django_capture_on_commit_callbacks(execute=False) as first:
        first_count = opt_out_notices_sweep_task()
    opt_out_notice_send_task(stale.pk)
    with django_capture_on_commit_callbacks(execute=False) as second:
        second_count = opt_out_notices_sweep_task()

    assert (first_count, len(first)) == (1, 1)
    assert (second_count, len(second)) == (0, 0)
    assert len(mail.outbox) == 1
