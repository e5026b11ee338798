"""Celery adapters of the optout app: ids in, one service call, a retry policy.

Business state lives in PostgreSQL; each task is safe to run twice because the
service claims its work with a conditional UPDATE.
"""

from __future__ import annotations

from celery import shared_task

from optout import services


# Any failure leaves notice_sent_at NULL (the service releases its claim), so a
# retry is always safe. Exponential backoff with jitter rides out an SMTP server
# that is down for a while: about 1, 2, 4, 8, 16 minutes, then the sweeper.
@shared_task(
    autoretry_for=(Exception,),
    retry_backoff=60,
    retry_backoff_max=30 * 60,
    retry_jitter=True,
    max_retries=5,
)
def opt_out_notice_send_task(opt_out_id: int) -> bool:
    return services.opt_out_notice_send(opt_out_id=opt_out_id)


# No retry: the next beat (5 minutes later) is the retry.
@shared_task
def opt_out_notices_sweep_task() -> int:
    return len(services.opt_out_notices_sweep())
