"""Batches: a pipeline's manifest, checked asynchronously against one registry version.

The flow, with PostgreSQL as the queue of record (Celery only wakes workers up):

1. ``batch_submit`` (the request) parses a JSONL, CSV or Parquet manifest into
   chunks of at most OPTOUT_CHUNK_RECORDS records, each with its manifest row
   number, or spools a webdataset shard to OPTOUT_SPOOL_DIR for
   ``batch_shard_hash`` (a worker) to hash into chunks; the shard file is deleted
   as soon as it is hashed.
2. ``batch_chunk_decide`` (a worker, one chunk at a time) takes the chunk's lease
   with a conditional UPDATE, fixes the batch's registry version when matching
   starts, validates and decides every record and writes the excluded and
   invalid ones under a unique (batch, row) constraint; the chunk is marked done
   and the batch counters moved in the same transaction, only by the call that
   flipped the chunk.
3. The chunk that completes the batch finalizes it: status done and the signed
   receipt.
4. ``batch_chunks_sweep`` (beat) re-enqueues what lost its wake-up or its worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from PIL import Image

from optout.engine import MatchingEngine, engine_for, registry_photos_at
from optout.manifests import (
    FORMATS,
    OPTIONAL_FIELDS,
    READERS,
    RECORD_FIELDS,
    ManifestInvalid,
    Row,
    detect_format,
)
from optout.manifests import webdataset_check as _webdataset_check
from optout.matching import Invalid, Record, Thresholds, decide, record_parse, rule_fingerprint
from optout.matching.decide import Decision, keypoints_wanted
from optout.models import Batch, BatchResult, Chunk, Organization, OrganizationAPIKey
from registry import hashing, keypoints
from registry.ledger import registry_version_current

logger = logging.getLogger("optout.pipeline")

# A chunk taken this many times without being recorded is poison (it kills or
# times out its worker every time); its batch fails instead of looping forever.
CHUNK_MAX_ATTEMPTS = 8
# A queued webdataset shard not hashed this long after submission lost its
# wake-up; the hash task is enqueued again (an advisory lock keeps two workers
# from hashing one shard, so an early re-enqueue is harmless).
SHARD_STALE_AFTER = timedelta(minutes=5)
# Chunks and shards re-enqueued per sweep: bounds one sweep after a long outage;
# the next sweep (a minute later) takes the rest.
SWEEP_LIMIT = 1_000
# Results written per INSERT and rows read per round trip when streaming them.
RESULT_WRITE_BATCH = 2_000
RESULT_READ_BATCH = 5_000
# Namespace of the advisory locks (pg_try_advisory_lock(namespace, batch)) that
# keep one worker at a time on a shard.
SHARD_LOCK_NAMESPACE = 7_316_002
_ACTIVE = (Batch.Status.QUEUED, Batch.Status.RUNNING)
# Text PostgreSQL's jsonb and text columns refuse: NUL and unpaired surrogates
# (a JSON line may spell them as escapes, a tar member name may hold them).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_STORED_FIELDS = frozenset((*RECORD_FIELDS, *OPTIONAL_FIELDS))


class IdempotencyConflict(Exception):
    """The Idempotency-Key already named another request body."""


@dataclass(frozen=True)
class BatchSubmitted:
    batch: Batch
    created: bool


@dataclass
class BatchSweep:
    """What one sweep enqueued or settled (ids are primary keys)."""

    chunks: list[int] = field(default_factory=list)
    shards: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    spool_files_removed: int = 0


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


# Images of webdataset shards are hashed by the workers on the fast path.
_SHARD_HASHING = "; shard images: registry.hashing fast path (JPEG draft decode)"


def receipt_algorithms() -> dict[str, str]:
    """How each hash was compared, with the versions that make a decision reproducible."""
    return {
        "sha256": "SHA-256",
        "pdq": f"PDQ (pdqhash {_package_version('pdqhash')}){_SHARD_HASHING}",
        "phash": f"imagehash {_package_version('ImageHash')} phash{_SHARD_HASHING}",
        "decision": (
            f"registered variants judged by the registry's rule {rule_fingerprint()} "
            "(docs/matching.md), candidates by exact Hamming range search, multi-index hashing "
            f"(optout-registry {_package_version('optout-registry')})"
        ),
    }


# --- submission ----------------------------------------------------------------


def _manifest_sha256(manifest: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    manifest.seek(0)
    while block := manifest.read(1024 * 1024):
        digest.update(block)
        size += len(block)
    manifest.seek(0)
    return digest.hexdigest(), size


def manifest_format_resolve(name: str, manifest: IO[bytes], requested: str = "") -> str:
    """The format the caller named, or the one detected from the name and leading bytes."""
    if requested:
        if requested not in FORMATS:
            raise ManifestInvalid(
                "unsupported_format",
                f"unknown format {requested!r}; allowed: {', '.join(FORMATS)}",
            )
        return requested
    head = manifest.read(4096)
    manifest.seek(0)
    return detect_format(name, head)


def _request_digest(*, use: str, thresholds: Thresholds, manifest_format: str, sha256: str) -> str:
    body = {
        "use": use,
        "thresholds": thresholds.as_dict(),
        "format": manifest_format,
        "manifest_sha256": sha256,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _replay(organization: Organization, idempotency_key: str, digest: str) -> Batch | None:
    """The batch this key already created, if any; IdempotencyConflict for another body."""
    batch = Batch.objects.filter(organization=organization, idempotency_key=idempotency_key).first()
    if batch is not None and batch.request_digest != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was already used for another request "
            f"(batch {batch.public_id}); use a new key for a different manifest, use or "
            "thresholds"
        )
    return batch


class _Unstorable(ValueError):
    pass


def _json_safe(value: Any) -> Any:
    """A manifest value as JSON can store it. Validation happens when the chunk
    is decided (record_parse); this only keeps what Parquet or JSON may hold
    (bytes, timestamps, NaN) from breaking the chunk's JSON column. Raises
    _Unstorable for text PostgreSQL refuses (NUL, lone surrogates)."""
    if isinstance(value, str):
        if _UNSTORABLE_TEXT.search(value):
            raise _Unstorable("a value holds a NUL character or invalid Unicode")
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError):
            return _json_safe(str(value))
        if "\\u0000" in text or _UNSTORABLE_TEXT.search(text):
            raise _Unstorable("a value holds a NUL character or invalid Unicode")
        return value
    return _json_safe(str(value))


def _stored(row: int, raw: dict[str, Any] | str, text_checked: bool = False) -> dict[str, Any]:
    """A manifest row as a chunk keeps it, with its row number: the record's raw
    fields, or the reason the row could not be read. Records are validated by
    the worker that decides the chunk, not in the request: validating (URL
    normalisation above all) costs several times what parsing does, and workers
    share that cost while the request stays short. ``text_checked``: the
    reader has already refused text PostgreSQL could not store (Parquet checks
    whole columns at once), so text values are kept as they are."""
    if isinstance(raw, str):
        return {"row": row, "id": None, "invalid": raw}
    stored: dict[str, Any] = {"row": row}
    try:
        for name, value in raw.items():
            if name in _STORED_FIELDS:
                stored[name] = value if text_checked and type(value) is str else _json_safe(value)
    except _Unstorable as error:
        return {"row": row, "id": None, "invalid": str(error)}
    return stored


def _record_of(stored: dict[str, Any]) -> Record | Invalid:
    row = stored["row"]
    if "invalid" in stored:
        return Invalid(stored.get("id"), stored["invalid"], row)
    return record_parse(stored, row)


def _chunk_insert(chunk: Chunk) -> int:
    """INSERT the chunk and return its id. On PostgreSQL the payload travels as
    a binary parameter: Django binds parameters into the SQL text, which turns
    a 2 MB payload into a 4 MB hex literal for the server to parse (a third of
    accepting a 1 M-record manifest)."""
    if connection.vendor != "postgresql":
        chunk.save(force_insert=True)
        return chunk.pk
    import psycopg  # the backend's driver

    quote = connection.ops.quote_name
    meta = Chunk._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    values = [
        bytes(chunk.payload)
        if f.attname == "payload"
        else f.get_db_prep_save(f.pre_save(chunk, add=True), connection)
        for f in fields
    ]
    assert meta.pk is not None
    # Identifiers only, from the model's own metadata; values are parameters.
    sql = "INSERT INTO {} ({}) VALUES ({}) RETURNING {}".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(quote(str(f.column)) for f in fields),
        ", ".join("%b" if f.attname == "payload" else "%s" for f in fields),
        quote(str(meta.pk.column)),
    )
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    assert row is not None
    chunk.pk = row[0]
    return chunk.pk


def _chunks_write(batch: Batch, records: Iterable[dict[str, Any]]) -> list[int]:
    """Store ``records`` as chunks of the batch (inside the caller's transaction);
    sets the batch's record and chunk counts and returns the chunk ids."""
    size = settings.OPTOUT_CHUNK_RECORDS
    chunk_ids: list[int] = []
    record_count = 0
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        chunk = Chunk(
            batch=batch,
            index=len(chunk_ids),
            payload=Chunk.payload_of(pending),
            record_count=len(pending),
        )
        chunk_ids.append(_chunk_insert(chunk))

    for stored in records:
        pending.append(stored)
        record_count += 1
        if len(pending) >= size:
            flush()
            pending = []
    if pending:
        flush()
    batch.record_count, batch.chunk_count = record_count, len(chunk_ids)
    Batch.objects.filter(pk=batch.pk).update(
        record_count=record_count, chunk_count=len(chunk_ids), spool_path=""
    )
    return chunk_ids


def _chunks_enqueue_on_commit(chunk_ids: Iterable[int]) -> None:
    # Imported here: optout.tasks imports this module.
    from optout.tasks import batch_chunk_decide_task

    if settings.OPTOUT_SHARDS > 1:
        from optout.chunk_shards import chunk_shards_enqueue_on_commit

        chunk_shards_enqueue_on_commit(list(chunk_ids), settings.OPTOUT_SHARDS)
        return

    # robust: the rows are committed whatever happens to the wake-ups; a broker
    # error is logged, not raised, and the sweeper enqueues the chunk again.
    for chunk_id in chunk_ids:
        transaction.on_commit(partial(batch_chunk_decide_task.delay, chunk_id), robust=True)


def _shard_enqueue_on_commit(batch_id: int) -> None:
    from optout.tasks import batch_shard_hash_task

    transaction.on_commit(partial(batch_shard_hash_task.delay, batch_id), robust=True)


def _spool_dir() -> Path:
    spool = Path(settings.OPTOUT_SPOOL_DIR)
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    return spool


def _shard_spool(public_id: uuid.UUID, manifest: IO[bytes]) -> Path:
    """Write the shard to the spool, readable by this user only. The only place
    image bytes of a batch reach a disk, and only until a worker hashed them.
    Written under a temporary name and renamed, so a worker never reads half a file."""
    final = _spool_dir() / str(public_id)
    partial_path = final.with_name(f"{final.name}.partial")
    descriptor = os.open(partial_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as spool:
            manifest.seek(0)
            while block := manifest.read(1024 * 1024):
                spool.write(block)
        partial_path.rename(final)
    except BaseException:
        partial_path.unlink(missing_ok=True)
        raise
    return final


def _tabular_records(manifest_format: str, manifest: IO[bytes]) -> Iterator[dict[str, Any]]:
    rows: Iterator[Row] = READERS[manifest_format](manifest)
    text_checked = manifest_format == Batch.Format.PARQUET
    for row, raw in rows:
        yield _stored(row, raw, text_checked)


def batch_submit(
    *,
    api_key: OrganizationAPIKey,
    idempotency_key: str,
    use: str,
    thresholds: Thresholds,
    manifest: IO[bytes],
    manifest_name: str = "",
    manifest_format: str = "",
) -> BatchSubmitted:
    """Accept a manifest for checking, or return the batch this Idempotency-Key
    already created for the same body.

    JSONL, CSV and Parquet are parsed here into chunks (a malformed row becomes
    an invalid record with its row number); a webdataset shard is spooled for a
    worker to hash. Raises ManifestInvalid (unsupported, empty or unreadable
    manifest) and IdempotencyConflict.
    """
    sha256, size = _manifest_sha256(manifest)
    if size == 0:
        raise ManifestInvalid("empty", "the manifest is empty")
    resolved = manifest_format_resolve(manifest_name, manifest, manifest_format)
    digest = _request_digest(
        use=use, thresholds=thresholds, manifest_format=resolved, sha256=sha256
    )
    organization = api_key.organization
    existing = _replay(organization, idempotency_key, digest)
    if existing is not None:
        return BatchSubmitted(existing, created=False)
    if resolved == Batch.Format.WEBDATASET:
        _webdataset_check(manifest)
    public_id = uuid.uuid4()
    spool = _shard_spool(public_id, manifest) if resolved == Batch.Format.WEBDATASET else None
    try:
        with transaction.atomic():
            batch = Batch.objects.create(
                public_id=public_id,
                organization=organization,
                api_key=api_key,
                use=use,
                format=resolved,
                manifest_name=_UNSTORABLE_TEXT.sub("", manifest_name)[:255],
                manifest_sha256=sha256,
                manifest_bytes=size,
                idempotency_key=idempotency_key,
                request_digest=digest,
                thresholds=thresholds.as_dict(),
                spool_path=str(spool or ""),
            )
            if spool is not None:
                _shard_enqueue_on_commit(batch.pk)
            else:
                chunk_ids = _chunks_write(batch, _tabular_records(resolved, manifest))
                if not chunk_ids:
                    raise ManifestInvalid("empty", "the manifest holds no records")
                _chunks_enqueue_on_commit(chunk_ids)
    except IntegrityError:
        # The same key submitted concurrently: the other request's batch won.
        if spool is not None:
            spool.unlink(missing_ok=True)
        existing = _replay(organization, idempotency_key, digest)
        if existing is None:
            raise
        return BatchSubmitted(existing, created=False)
    except BaseException:
        if spool is not None:
            spool.unlink(missing_ok=True)
        raise
    logger.info(
        "batch %s submitted organization=%s key=%s format=%s records=%d chunks=%d",
        batch.public_id,
        organization.name,
        api_key.prefix,
        batch.format,
        batch.record_count,
        batch.chunk_count,
    )
    return BatchSubmitted(batch, created=True)


# --- webdataset shards -----------------------------------------------------------


@contextmanager
def _shard_lock(batch_id: int) -> Iterator[bool]:
    """A session advisory lock per batch: True if this process holds it. A worker
    that dies loses its connection and with it the lock. SQLite (`make run`, tasks
    in-process) has no concurrent workers and needs none."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = (SHARD_LOCK_NAMESPACE, batch_id % 2**31)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        locked = bool(cursor.fetchone()[0])
    try:
        yield locked
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)


# Shard samples hashed, then checked for a match that needs their keypoints, this
# many at a time: their luminances (at most a few hundred KB each) wait meanwhile.
SHARD_KEYPOINTS_GROUP = 64


@dataclass
class _ShardSample:
    """A hashed shard sample as its chunk will keep it, and the luminance its
    keypoints would come from (None once they are decided on, or for a sample
    that is not an image)."""

    stored: dict[str, Any]
    luminance: Image.Image | None = None


def _shard_sample(row: int, raw: dict[str, Any] | str) -> _ShardSample:
    """A shard sample as a chunk keeps it: the image replaced by its hashes.
    Its keypoints are left to ``_shard_keypoints``."""
    if isinstance(raw, str):
        return _ShardSample(_stored(row, raw))
    image = raw.pop("image", None)
    if image is None:
        return _ShardSample(_stored(row, raw))
    try:
        # Query side: large JPEGs decoded at reduced scale, ~5x faster; PDQ and
        # pHash within a few bits of the full decode, recall on edited copies
        # unchanged (docs/performance.md, "Hashing (step 3)"). Registered photos
        # keep the full decode: they are the reference.
        hashes, luminance = hashing.hash_bytes_fast_deferred(
            image, max_bytes=settings.OPTOUT_MAX_PHOTO_BYTES
        )
    except hashing.ImageRejected as error:
        try:
            record_id = _json_safe(raw.get("id"))
        except _Unstorable:
            record_id = None
        return _ShardSample(
            {"row": row, "id": record_id, "invalid": f"image {error.code}: {error}"}
        )
    finally:
        del image
    raw.update(
        sha256=hashes.sha256, pdq=hashes.pdq, phash=hashes.phash, pdq_quality=hashes.pdq_quality
    )
    if hashes.colour:  # "" until registry.hashing computes it
        raw["colour"] = hashes.colour
    if hashes.band:  # "" for an image too small to have a middle band
        raw["band"] = hashes.band
    stored = _stored(row, raw)
    return _ShardSample(stored, None if "invalid" in stored else luminance)


def _shard_keypoints(batch: Batch, samples: list[_ShardSample]) -> None:
    """Give keypoints (registry.keypoints) to the samples whose match they
    would check: those with a perceptual match, at the batch's registry
    version and thresholds, against a photo registered with keypoints
    (``decide.keypoints_wanted``) — the same matches the chunk is decided
    with. Keypoints cost about 2 ms an image, half as much as its hashes; a
    sample with no such match is decided the same without them.

    Where the index is split across workers (OPTOUT_SHARDS > 1) no engine here
    holds every photo: every sample gets keypoints, as on ``optout hash``."""
    waiting = [sample for sample in samples if sample.luminance is not None]
    if not waiting:
        return
    if settings.OPTOUT_SHARDS > 1:
        wanted = set(range(len(waiting)))
    else:
        wanted = _keypoints_wanted(batch, [sample.stored for sample in waiting])
    for k, sample in enumerate(waiting):
        assert sample.luminance is not None
        if k in wanted:
            sample.stored["keypoints"] = keypoints.to_text(keypoints.keypoints_of(sample.luminance))
        sample.luminance = None


def _keypoints_wanted(batch: Batch, stored: list[dict[str, Any]]) -> set[int]:
    """Positions of the stored records whose keypoints the batch's decisions
    would check (``decide.keypoints_wanted``), by this process's engine."""
    version = _batch_version_fix(batch.pk)
    if version is None:
        return set()  # the batch failed meanwhile: nothing will be decided
    records = [_record_of(one) for one in stored]
    valid = [(k, record) for k, record in enumerate(records) if isinstance(record, Record)]
    with engine_for().at(version) as registry:
        found = keypoints_wanted(
            [record for _, record in valid],
            registry,
            thresholds=Thresholds.from_dict(batch.thresholds),
        )
    return {valid[position][0] for position in found}


def _shard_records(batch: Batch, stream: IO[bytes]) -> list[dict[str, Any]]:
    """Every sample of the shard hashed, with keypoints where a match needs them."""
    records: list[dict[str, Any]] = []
    group: list[_ShardSample] = []
    for row, raw in READERS["webdataset"](stream):
        group.append(_shard_sample(row, raw))
        if len(group) == SHARD_KEYPOINTS_GROUP:
            _shard_keypoints(batch, group)
            records.extend(sample.stored for sample in group)
            group = []
    _shard_keypoints(batch, group)
    records.extend(sample.stored for sample in group)
    return records


def _shard_hash_locked(batch: Batch, path: Path) -> bool:
    if not path.exists():
        batch_fail(
            batch_id=batch.pk,
            reason="the uploaded shard was lost before it could be hashed; submit it again "
            "with a new Idempotency-Key",
        )
        return False
    with path.open("rb") as stream:
        records = _shard_records(batch, stream)
    if not records:
        batch_fail(batch_id=batch.pk, reason="the shard holds no samples")
        return False
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.status != Batch.Status.QUEUED or locked.chunk_count:
            return False
        chunk_ids = _chunks_write(locked, records)
        _chunks_enqueue_on_commit(chunk_ids)
    logger.info(
        "batch %s shard hashed records=%d chunks=%d",
        batch.public_id,
        len(records),
        len(chunk_ids),
    )
    return True


def batch_shard_hash(*, batch_id: int) -> bool:
    """Hash the spooled webdataset shard of a queued batch into chunks, then
    delete the shard file, whatever happened. True if this call made the chunks.

    An image that cannot be decoded becomes an invalid record with the reason; a
    shard that cannot be read at all (or is missing) fails the batch."""
    with _shard_lock(batch_id) as locked:
        if not locked:
            return False  # another worker is hashing it right now
        batch = Batch.objects.filter(pk=batch_id).first()
        if batch is None or not batch.spool_path:
            return False
        path = Path(batch.spool_path)
        try:
            if batch.status != Batch.Status.QUEUED or batch.chunk_count:
                return False
            return _shard_hash_locked(batch, path)
        except ManifestInvalid as error:
            batch_fail(batch_id=batch_id, reason=f"cannot read the shard: {error}")
            return False
        except Exception as error:
            logger.exception("batch %s: hashing the shard failed", batch.public_id)
            batch_fail(batch_id=batch_id, reason=f"the shard could not be processed: {error}")
            return False
        finally:
            # Photo bytes never outlive their hashing, not even after a failure.
            path.unlink(missing_ok=True)
            Batch.objects.filter(pk=batch_id).exclude(spool_path="").update(spool_path="")


# --- deciding chunks -------------------------------------------------------------------


def _chunk_lease_take(chunk_id: int) -> datetime | None:
    """Take the chunk if it is pending and nobody holds a live lease; the new
    lease's expiry, or None if the chunk was not taken."""
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.OPTOUT_CHUNK_LEASE_SECONDS)
    taken = (
        Chunk.objects.filter(pk=chunk_id, status=Chunk.Status.PENDING)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
        .update(lease_expires_at=expires_at, attempts=F("attempts") + 1)
    )
    return expires_at if taken else None


def _chunk_lease_release(chunk_id: int, expires_at: datetime) -> None:
    Chunk.objects.filter(
        pk=chunk_id, status=Chunk.Status.PENDING, lease_expires_at=expires_at
    ).update(lease_expires_at=None)


def _batch_version_fix(batch_id: int) -> int | None:
    """Fix the registry version every chunk of the batch is decided against,
    with the photos the registry held at it (``registry_photos_at``), if
    nothing has yet (a shard's hashing does, to match its samples as their
    chunks will be), and return it; None for a batch that failed first. The
    UPDATE is conditional, so concurrent callers agree on one version."""
    versions = Batch.objects.values_list("registry_version", flat=True)
    fixed: int | None = versions.get(pk=batch_id)
    if fixed is not None:
        return fixed  # every later chunk and shard group: no counting again
    version = registry_version_current()
    Batch.objects.filter(pk=batch_id, registry_version__isnull=True, status__in=_ACTIVE).update(
        registry_version=version, registry_photos=registry_photos_at(version)
    )
    fixed = versions.get(pk=batch_id)
    return fixed


def batch_thresholds(batch: Batch) -> Thresholds:
    """The thresholds the batch's chunks are decided with: the pipeline's,
    and the registry's size at the batch's version once fixed."""
    stored = Thresholds.from_dict(batch.thresholds)
    return replace(stored, registry_photos=batch.registry_photos or 0)


def _batch_start(batch_id: int) -> Batch:
    """Start the batch at its registry version (``_batch_version_fix``). The
    UPDATE is conditional, so concurrent first chunks start it once."""
    _batch_version_fix(batch_id)
    Batch.objects.filter(pk=batch_id, status=Batch.Status.QUEUED).update(
        status=Batch.Status.RUNNING, started_at=timezone.now()
    )
    return Batch.objects.get(pk=batch_id)


def _chunk_decisions(
    chunk: Chunk, batch: Batch, engine: MatchingEngine | None = None
) -> list[Decision]:
    """The chunk decided exactly as of the batch's registry version, by this
    process's engine (everything, or one shard's), caught up first if older."""
    assert batch.registry_version is not None
    with (engine or engine_for()).at(batch.registry_version) as registry:
        return decide(
            (_record_of(stored) for stored in chunk.records),
            registry,
            use=batch.use,
            organization=batch.organization_id,
            thresholds=batch_thresholds(batch),
        )


def _result(chunk: Chunk, decision: Decision) -> BatchResult:
    assert decision.row is not None  # every stored record keeps its row
    return BatchResult(
        batch_id=chunk.batch_id,
        chunk_id=chunk.pk,
        row=decision.row,
        record_id=(decision.id or "")[:512],
        decision=decision.decision,
        matches=[match.as_dict() for match in decision.matches],
        reason=decision.reason[:300],
    )


def _chunk_record(chunk: Chunk, decisions: list[Decision]) -> bool:
    """Write the chunk's results and mark it done, in one transaction. Counters
    move only if this call flipped the chunk from pending to done, so a chunk
    decided twice (a redelivered task, an expired lease) counts once."""
    results = [_result(chunk, decision) for decision in decisions if decision.decision != "allow"]
    excluded = sum(1 for result in results if result.decision == BatchResult.Decision.EXCLUDE)
    invalid = len(results) - excluded
    with transaction.atomic():
        BatchResult.objects.bulk_create(
            results, ignore_conflicts=True, batch_size=RESULT_WRITE_BATCH
        )
        flipped = Chunk.objects.filter(pk=chunk.pk, status=Chunk.Status.PENDING).update(
            status=Chunk.Status.DONE,
            done_at=timezone.now(),
            lease_expires_at=None,
            payload=b"",
            excluded_count=excluded,
            invalid_count=invalid,
        )
        if flipped:
            Batch.objects.filter(pk=chunk.batch_id).update(
                chunks_done=F("chunks_done") + 1,
                excluded_count=F("excluded_count") + excluded,
                invalid_count=F("invalid_count") + invalid,
            )
    return bool(flipped)


def batch_chunk_decide(*, chunk_id: int) -> bool:
    """Decide one chunk. True if this call recorded it; running it again once the
    chunk is done (or while another worker holds its lease) changes nothing.

    On an unexpected error the lease is released and the error re-raised for the
    task to retry; a chunk that failed CHUNK_MAX_ATTEMPTS times fails its batch.
    """
    lease = _chunk_lease_take(chunk_id)
    if lease is None:
        # A finalization that failed after the last chunk is retried from here.
        batch_id = Chunk.objects.filter(pk=chunk_id).values_list("batch_id", flat=True).first()
        if batch_id is not None:
            batch_finalize(batch_id=batch_id)
        return False
    chunk = Chunk.objects.get(pk=chunk_id)
    if chunk.attempts > CHUNK_MAX_ATTEMPTS:
        batch_fail(
            batch_id=chunk.batch_id,
            reason=f"chunk {chunk.index} could not be decided in {CHUNK_MAX_ATTEMPTS} attempts",
        )
        return False
    try:
        batch = _batch_start(chunk.batch_id)
        if batch.status != Batch.Status.RUNNING:
            return False  # failed meanwhile: nothing more to decide
        recorded = _chunk_record(chunk, _chunk_decisions(chunk, batch))
    except Exception:
        _chunk_lease_release(chunk_id, lease)
        raise
    batch_finalize(batch_id=chunk.batch_id)
    return recorded


# --- finishing --------------------------------------------------------------------------


def batch_fail(*, batch_id: int, reason: str) -> bool:
    """Fail a queued or running batch with a reason; a no-op on a finished one."""
    failed = Batch.objects.filter(pk=batch_id, status__in=_ACTIVE).update(
        status=Batch.Status.FAILED, failure_reason=reason, finished_at=timezone.now()
    )
    if failed:
        # Nothing will decide the rest: their records are not kept.
        Chunk.objects.filter(batch_id=batch_id, status=Chunk.Status.PENDING).update(payload=b"")
        logger.warning("batch id=%s failed: %s", batch_id, reason)
    return bool(failed)


def excluded_ids(batch: Batch) -> Iterator[str]:
    """The excluded records' ids in manifest row order."""
    return (
        BatchResult.objects.filter(batch=batch, decision=BatchResult.Decision.EXCLUDE)
        .order_by("row")
        .values_list("record_id", flat=True)
        .iterator(chunk_size=RESULT_READ_BATCH)
    )


def batch_receipt_statement(batch: Batch) -> dict[str, Any]:
    """What a batch receipt states (and signs): the manifest, the registry
    version, the thresholds and algorithms, the counts and a digest of the
    excluded ids, which a pipeline recomputes from the exclusions it downloaded."""
    from optout.receipts import excluded_ids_digest

    assert batch.started_at is not None and batch.finished_at is not None
    return {
        "type": "optout-registry.batch-receipt",
        "version": 1,
        "batch": str(batch.public_id),
        "organization": str(batch.organization.public_id),
        "use": batch.use,
        "manifest_sha256": batch.manifest_sha256,
        "manifest_format": batch.format,
        "record_count": batch.record_count,
        "excluded_count": batch.excluded_count,
        "invalid_count": batch.invalid_count,
        "excluded_ids_sha256": excluded_ids_digest(excluded_ids(batch)),
        "registry_version": batch.registry_version,
        "thresholds": batch_thresholds(batch).as_dict(),
        "algorithms": receipt_algorithms(),
        "started_at": batch.started_at.isoformat(),
        "finished_at": batch.finished_at.isoformat(),
    }


def batch_finalize(*, batch_id: int) -> bool:
    """Mark a running batch whose chunks are all done as done, with its signed
    receipt. True if this call finished it; a no-op otherwise."""
    from optout.receipts import receipt_sign

    with transaction.atomic():
        batch = (
            Batch.objects.select_for_update(of=("self",))
            .select_related("organization")
            .filter(pk=batch_id, status=Batch.Status.RUNNING)
            .first()
        )
        if batch is None or batch.chunk_count == 0 or batch.chunks_done < batch.chunk_count:
            return False
        # Counted, not trusted: the receipt states what the result rows say.
        counts = dict(
            BatchResult.objects.filter(batch=batch)
            .order_by()
            .values_list("decision")
            .annotate(total=Count("id"))
            .values_list("decision", "total")
        )
        batch.excluded_count = counts.get(BatchResult.Decision.EXCLUDE, 0)
        batch.invalid_count = counts.get(BatchResult.Decision.INVALID, 0)
        batch.status = Batch.Status.DONE
        batch.finished_at = timezone.now()
        batch.receipt = receipt_sign(batch_receipt_statement(batch))
        batch.save(
            update_fields=["excluded_count", "invalid_count", "status", "finished_at", "receipt"]
        )
    logger.info(
        "batch %s done organization=%s records=%d excluded=%d invalid=%d registry_version=%s",
        batch.public_id,
        batch.organization.name,
        batch.record_count,
        batch.excluded_count,
        batch.invalid_count,
        batch.registry_version,
    )
    return True


# --- the sweeper ------------------------------------------------------------------------


def _spool_orphans_remove(now: datetime) -> int:
    """Delete spool files no queued batch waits for (a crash between hashing and
    deleting, a request that died while spooling): photo bytes must not linger."""
    spool = Path(settings.OPTOUT_SPOOL_DIR)
    if not spool.is_dir():
        return 0
    waiting = {
        Path(path).name
        for path in Batch.objects.filter(status=Batch.Status.QUEUED)
        .exclude(spool_path="")
        .values_list("spool_path", flat=True)
    }
    cutoff = (now - SHARD_STALE_AFTER).timestamp()
    removed = 0
    for entry in os.scandir(spool):
        try:
            stale = entry.is_file() and entry.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile
            continue
        if stale and entry.name not in waiting:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def _finalize_logged(batch_id: int) -> bool:
    """Finalize for the sweeper: one batch that cannot be signed (a missing key)
    must not stop the sweep; it is tried again on the next one."""
    try:
        return batch_finalize(batch_id=batch_id)
    except Exception:
        logger.exception("batch id=%s could not be finalized", batch_id)
        return False


def batch_chunks_sweep(*, now: datetime | None = None) -> BatchSweep:
    """Re-enqueue what lost its wake-up or its worker, and settle what is stuck.

    - pending chunks of active batches whose lease expired (a killed worker), or
      that were never leased a whole lease period after submission (a lost
      message; until then they are most likely still waiting in the queue);
    - queued webdataset shards not hashed SHARD_STALE_AFTER after submission;
    - running batches whose chunks are all done but which were not finalized;
    - spool files that no batch waits for.
    Enqueueing happens on commit; returns what was done.
    """
    now = now or timezone.now()
    unleased_before = now - timedelta(seconds=settings.OPTOUT_CHUNK_LEASE_SECONDS)
    sweep = BatchSweep()
    sweep.chunks = list(
        Chunk.objects.filter(status=Chunk.Status.PENDING, batch__status__in=_ACTIVE)
        .filter(
            Q(lease_expires_at__lte=now)
            | Q(lease_expires_at__isnull=True, batch__created_at__lt=unleased_before)
        )
        .order_by("batch_id", "index")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    _chunks_enqueue_on_commit(sweep.chunks)
    sweep.shards = list(
        Batch.objects.filter(
            status=Batch.Status.QUEUED,
            format=Batch.Format.WEBDATASET,
            chunk_count=0,
            created_at__lt=now - SHARD_STALE_AFTER,
        )
        .exclude(spool_path="")
        .order_by("created_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    for batch_id in sweep.shards:
        _shard_enqueue_on_commit(batch_id)
    stuck = Batch.objects.filter(
        status=Batch.Status.RUNNING, chunk_count__gt=0, chunks_done__gte=F("chunk_count")
    ).values_list("pk", flat=True)[:SWEEP_LIMIT]
    sweep.finalized = [batch_id for batch_id in stuck if _finalize_logged(batch_id)]
    sweep.spool_files_removed = _spool_orphans_remove(now)
    return sweep


# --- reads -----------------------------------------------------------------------------


def batch_results(batch: Batch, decision: str) -> Iterator[BatchResult]:
    """The batch's excluded (or invalid) records in manifest row order, streamed."""
    return (
        BatchResult.objects.filter(batch=batch, decision=decision)
        .order_by("row")
        .only("row", "record_id", "decision", "matches", "reason")
        .iterator(chunk_size=RESULT_READ_BATCH)
    )
