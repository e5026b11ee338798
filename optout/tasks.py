"""Celery adapters of the optout app: ids in, one service call, a retry policy.

Business state lives in PostgreSQL; each task is safe to run twice because the
service claims its work with a conditional UPDATE.
"""

from __future__ import annotations

from celery import shared_task

from optout import batches, chunk_shards, services


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
