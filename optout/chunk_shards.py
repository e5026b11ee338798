"""Chunks decided by a sharded index (OPTOUT_SHARDS > 1): fan out, merge in PostgreSQL.

Each worker owns one shard of the photo index (optout.engine.Shard: photos with
key % shards == shard; claims on shard 0) and consumes the Celery queue
``match.shard<k>``. A chunk is enqueued once per shard; each shard's task
decides every record of the chunk against its own shard, as of the batch's
registry version, and writes the records it would exclude (and the invalid
ones) as one ChunkShardResult row, unique per (chunk, shards, shard). The task
that finds every shard's row present merges them — per record the union of the
matches, one per (kind, opt-out), the closest (decide.matches_merge), excluded
if any — and records the chunk exactly as the single-index path does
(batches._chunk_record: results unique per row, counters moved only by the call
that flips the chunk). Whichever shard commits last sees all rows, so a merge
always happens; two concurrent merges record once.

A shard task marks the chunk's lease when it starts (so the sweeper leaves it
alone while shards work) and counts an attempt; the sweeper re-enqueues only
the shards without a row once the lease expired.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from optout.batches import (
    CHUNK_MAX_ATTEMPTS,
    _batch_start,
    _chunk_decisions,
    _chunk_lease_release,
    _chunk_record,
    batch_fail,
    batch_finalize,
)
from optout.engine import engine_for
from optout.matching.decide import Decision, Match, matches_merge
from optout.models import Batch, Chunk, ChunkShardResult

logger = logging.getLogger("optout.pipeline")


def shard_queue(shard: int) -> str:
    return f"match.shard{shard}"


def chunk_shards_enqueue_on_commit(chunk_ids: list[int], shards: int) -> None:
    """Enqueue, on commit, the shard tasks of each chunk whose shard has not answered."""
    from optout.tasks import batch_chunk_shard_decide_task

    answered = set(
        ChunkShardResult.objects.filter(chunk_id__in=chunk_ids, shards=shards).values_list(
            "chunk_id", "shard"
        )
    )
    for chunk_id in chunk_ids:
        for shard in range(shards):
            if (chunk_id, shard) not in answered:
                transaction.on_commit(
                    partial(
                        batch_chunk_shard_decide_task.apply_async,
                        (chunk_id, shard, shards),
                        queue=shard_queue(shard),
                    ),
                    robust=True,
                )


def _stored(decision: Decision) -> dict[str, Any]:
    return {
        "row": decision.row,
        "id": decision.id,
        "decision": decision.decision,
        "matches": [match.as_dict() for match in decision.matches],
        "reason": decision.reason,
    }


def _merged(chunk: Chunk, answers: list[list[dict[str, Any]]]) -> list[Decision]:
    """The chunk's decisions from every shard's excluded and invalid records."""
    by_row: dict[int, list[dict[str, Any]]] = {}
    for answer in answers:
        for stored in answer:
            by_row.setdefault(stored["row"], []).append(stored)
    decisions = []
    for row, parts in sorted(by_row.items()):
        first = parts[0]
        if first["decision"] == "invalid":
            decisions.append(Decision(first["id"], "invalid", reason=first["reason"], row=row))
            continue
        matches = matches_merge(Match.from_dict(m) for part in parts for m in part["matches"])
        decisions.append(Decision(first["id"], "exclude", matches, row=row))
    return decisions


def _chunk_merge(chunk: Chunk, shards: int) -> bool:
    """Record the chunk once every shard has answered; True if this call recorded it."""
    answers = list(
        ChunkShardResult.objects.filter(chunk=chunk, shards=shards).values_list(
            "decisions", flat=True
        )
    )
    if len(answers) < shards:
        return False
    return _chunk_record(chunk, _merged(chunk, answers))


def _chunk_touch(chunk_id: int) -> Chunk | None:
    """Mark a pending chunk as being worked on (lease, one more attempt)."""
    expires_at = timezone.now() + timedelta(seconds=settings.OPTOUT_CHUNK_LEASE_SECONDS)
    touched = Chunk.objects.filter(pk=chunk_id, status=Chunk.Status.PENDING).update(
        lease_expires_at=expires_at, attempts=F("attempts") + 1
    )
    return Chunk.objects.get(pk=chunk_id) if touched else None


def batch_chunk_shard_decide(*, chunk_id: int, shard: int, shards: int) -> bool:
    """Decide one chunk against one shard and merge if every shard has answered.
    True if this call recorded the chunk; running it again changes nothing."""
    if settings.OPTOUT_SHARD is not None and shard != settings.OPTOUT_SHARD:
        # Still exact (the engine is the task's shard), but this process now
        # holds a second shard's index: the worker consumes the wrong queue.
        logger.warning("the worker of shard %s decides for shard %s", settings.OPTOUT_SHARD, shard)
    chunk = _chunk_touch(chunk_id)
    if chunk is None:
        batch_id = Chunk.objects.filter(pk=chunk_id).values_list("batch_id", flat=True).first()
        if batch_id is not None:
            batch_finalize(batch_id=batch_id)
        return False
    if chunk.attempts > CHUNK_MAX_ATTEMPTS * shards:
        batch_fail(
            batch_id=chunk.batch_id,
            reason=f"chunk {chunk.index} could not be decided in {CHUNK_MAX_ATTEMPTS} attempts",
        )
        return False
    try:
        batch = _batch_start(chunk.batch_id)
        if batch.status != Batch.Status.RUNNING:
            return False
        assert batch.registry_version is not None
        if not ChunkShardResult.objects.filter(chunk=chunk, shards=shards, shard=shard).exists():
            decisions = _chunk_decisions(chunk, batch, engine_for(shards=shards, shard=shard))
            ChunkShardResult.objects.bulk_create(
                [
                    ChunkShardResult(
                        chunk=chunk,
                        shards=shards,
                        shard=shard,
                        decisions=[_stored(d) for d in decisions if d.decision != "allow"],
                        registry_version=batch.registry_version,
                    )
                ],
                ignore_conflicts=True,
            )
        recorded = _chunk_merge(chunk, shards)
    except Exception:
        assert chunk.lease_expires_at is not None
        _chunk_lease_release(chunk_id, chunk.lease_expires_at)
        raise
    batch_finalize(batch_id=chunk.batch_id)
    return recorded
