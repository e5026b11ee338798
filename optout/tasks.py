"""Celery adapters of the optout app: ids in, one service call, a retry policy.

Business state lives in PostgreSQL; each task is safe to run twice because the
service claims its work with a conditional UPDATE.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from optout import batches, chunk_shards, services

logger = logging.getLogger(__name__)


@worker_ready.connect
def engine_preload(sender: Any = None, **_: Any) -> None:
    """Load this worker's matching engine before it announces itself ready, so
    its first chunk is decided at once instead of waiting for the load (a
    million photos with their variants take about half a minute). Only where
    the tasks run in this process (solo and thread pools); prefork children
    load on their first chunk. OPTOUT_ENGINE_PRELOAD=0 turns it off."""
    from optout.engine import engine_for

    pool = type(getattr(sender, "pool", None)).__module__
    if not settings.OPTOUT_ENGINE_PRELOAD or not pool.endswith((".solo", ".threads")):
        return
    if settings.OPTOUT_SHARD is not None:
        engine = engine_for(shards=settings.OPTOUT_SHARDS, shard=settings.OPTOUT_SHARD)
    else:
        engine = engine_for()
    try:
        with engine.current():
            pass
    except Exception:  # the first chunk loads it again; never keep a worker from starting
        logger.exception("matching engine preload failed")


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


# --- batches -------------------------------------------------------------------
# The chunk's lease is released before an error propagates, so a retry can take
# it again at once. Backoff (about 30 s, 1, 2, 4, 8 minutes) rides out a database
# restart; after that the sweeper re-enqueues the chunk, and a chunk that keeps
# failing fails its batch (batches.CHUNK_MAX_ATTEMPTS).
@shared_task(
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=10 * 60,
    retry_jitter=True,
    max_retries=5,
)
def batch_chunk_decide_task(chunk_id: int) -> bool:
    return batches.batch_chunk_decide(chunk_id=chunk_id)


# One index shard's part of a chunk (OPTOUT_SHARDS > 1), on queue match.shard<k>.
# Same policy as batch_chunk_decide_task: its answer is written under a unique
# constraint and the merge is recorded once, so retries and redeliveries are safe.
@shared_task(
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=10 * 60,
    retry_jitter=True,
    max_retries=5,
)
def batch_chunk_shard_decide_task(chunk_id: int, shard: int, shards: int) -> bool:
    return chunk_shards.batch_chunk_shard_decide(chunk_id=chunk_id, shard=shard, shards=shards)


# No retry: a shard that cannot be hashed fails its batch (its file is deleted
# either way: photo bytes never wait for a retry); a worker killed mid-shard is
# redelivered (acks_late) or re-enqueued by the sweeper.
@shared_task
def batch_shard_hash_task(batch_id: int) -> bool:
    return batches.batch_shard_hash(batch_id=batch_id)


# No retry: the next beat (a minute later) is the retry.
@shared_task
def batch_chunks_sweep_task() -> int:
    sweep = batches.batch_chunks_sweep()
    return len(sweep.chunks) + len(sweep.shards) + len(sweep.finalized)
