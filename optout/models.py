"""Opt-outs and the organizations that consume the registry."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from registry.models import Channel, Claim, Creator, Photo


class Organization(models.Model):
    """A consumer of the registry (a lab, a company). Owns API keys; creators may
    grant it an exception to their opt-outs."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    suspended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OptOut(models.Model):
    """A creator's refusal of some uses. Withdrawn or superseded by a changed
    one (``replaces``), never deleted or edited."""

    class Scope(models.TextChoices):
        ALL_PHOTOS = "all_photos", "all my photos, including future ones"
        PHOTOS = "photos", "chosen photos"
        CLAIMS = "claims", "chosen claims (domains, URL prefixes, handles)"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="opt_outs")
    # Refused uses, a list from optout.uses.USES (JSON so that `make run` works on SQLite).
    uses = models.JSONField()
    scope = models.CharField(max_length=16, choices=Scope.choices)
    photos = models.ManyToManyField(Photo, blank=True, related_name="opt_outs")
    claims = models.ManyToManyField(Claim, blank=True, related_name="opt_outs")
    exceptions = models.ManyToManyField(Organization, blank=True, related_name="opt_out_exceptions")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    notice_version = models.CharField(max_length=32)
    effective_at = models.DateTimeField(default=timezone.now)
    filed_version = models.BigIntegerField()
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_version = models.BigIntegerField(null=True, blank=True)
    # The opt-out this one superseded (a change): that one was withdrawn at this
    # one's filed_version, in the same ledger event (opt_out_changed).
    replaces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="replaced_by"
    )
    # When the creator was emailed the confirmation of this opt-out (GDPR Art. 7:
    # consent must be demonstrable). NULL means not sent yet: this row, not the
    # Celery queue, is the record of the work still to do.
    notice_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope__in=["all_photos", "photos", "claims"]),
                name="opt_out_scope_known",
            ),
            models.CheckConstraint(
                condition=(Q(withdrawn_at__isnull=True) & Q(withdrawn_version__isnull=True))
                | (Q(withdrawn_at__isnull=False) & Q(withdrawn_version__isnull=False)),
                name="opt_out_withdrawn_at_and_version_together",
            ),
            models.CheckConstraint(
                condition=Q(withdrawn_version__isnull=True)
                | Q(withdrawn_version__gt=models.F("filed_version")),
                name="opt_out_withdrawn_after_filed",
            ),
        ]
        indexes = [
            # The matching snapshot loads active opt-outs only.
            models.Index(
                fields=["filed_version"],
                name="opt_out_active_idx",
                condition=Q(withdrawn_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"opt-out {self.public_id} ({', '.join(self.uses)})"

    @property
    def is_active(self) -> bool:
        return self.withdrawn_at is None


def _all_scopes() -> list[str]:
    return ["lookup", "batches"]


class OrganizationAPIKey(AbstractAPIKey):
    """A pipeline's credential: ``Authorization: Api-Key <prefix>.<secret>``.

    Only a SHA-512 of the key is stored (djangorestframework-api-key); the prefix
    identifies the key in logs and the admin. Revocation cannot be undone.
    """

    class Scope(models.TextChoices):
        LOOKUP = "lookup", "synchronous lookup, change feed, URL query"
        BATCHES = "batches", "batch submission and results"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    # Subset of Scope values (JSON so that `make run` works on SQLite).
    scopes = models.JSONField(default=_all_scopes)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class Batch(models.Model):
    """A manifest a pipeline submitted for one declared use.

    PostgreSQL is the queue of record: the batch and its chunks are rows, and
    Celery only wakes workers up. A batch moves queued → running → done, or failed
    with a reason; every chunk is decided against the same registry version, the
    one the receipt names.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"
        WEBDATASET = "webdataset", "webdataset tar shard"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="batches")
    # The key that submitted it (audit). Kept when the key is revoked.
    api_key = models.ForeignKey(
        OrganizationAPIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    use = models.CharField(max_length=32)
    format = models.CharField(max_length=16, choices=Format.choices)
    manifest_name = models.CharField(max_length=255, blank=True, default="")
    manifest_sha256 = models.CharField(max_length=64)
    manifest_bytes = models.BigIntegerField()
    # Client-chosen key; with request_digest it makes resubmission idempotent.
    idempotency_key = models.CharField(max_length=255)
    # sha256 over use, thresholds and manifest bytes: same key, other body → 422.
    request_digest = models.CharField(max_length=64)
    thresholds = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    failure_reason = models.TextField(blank=True, default="")
    # A webdataset shard waiting for a worker to hash it (deleted once hashed).
    spool_path = models.CharField(max_length=1024, blank=True, default="")
    # Every chunk is decided against this version (fixed when matching starts).
    registry_version = models.BigIntegerField(null=True, blank=True)
    # The photos the registry held at that version, fixed with it: how far a
    # match nothing confirms is held back (optout/matching/scale.py).
    registry_photos = models.BigIntegerField(null=True, blank=True)
    record_count = models.PositiveIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    excluded_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    # {"statement": {...}, "signature": "<base64>", "public_key": "<base64>"} once done.
    receipt = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="batch_idempotency_per_org"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "done", "failed"]),
                name="batch_status_known",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="batch_status_idx"),
        ]

    def __str__(self) -> str:
        return f"batch {self.public_id} ({self.status})"


class Chunk(models.Model):
    """At most OPTOUT_CHUNK_RECORDS records of a batch, matched by one Celery task.

    ``lease_expires_at`` is set when a worker takes the chunk; the sweeper
    re-enqueues pending chunks whose lease expired (a killed worker, a lost
    message). Results are unique per batch and row, so a chunk decided twice adds
    nothing the second time.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    # The raw records as parsed from the manifest, as UTF-8 JSON
    # ([{"row": n, "id": ..., "sha256": ...}, ...]; ``records`` decodes it). A
    # bytea, not jsonb: PostgreSQL would parse every record of every chunk on
    # insert (about half of accepting a 1 M-record manifest) for queries nobody
    # runs. Emptied when the chunk is done: its results are what the batch
    # reports, and the registry keeps no pipeline's records longer than needed.
    payload = models.BinaryField(default=b"")
    record_count = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    excluded_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "index"], name="chunk_unique_index"),
        ]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                name="chunk_pending_idx",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.batch_id}"

    @staticmethod
    def payload_of(records: list[dict[str, Any]]) -> bytes:
        # ensure_ascii: the stored values are already checked to be valid text
        # (no NUL, no lone surrogate); escaping keeps the encoding trivial.
        return json.dumps(records, separators=(",", ":")).encode("ascii")

    @property
    def records(self) -> list[dict[str, Any]]:
        """The chunk's stored records ([] once it is done)."""
        return json.loads(bytes(self.payload)) if self.payload else []


class BatchResult(models.Model):
    """One excluded or invalid record of a batch (allowed records are counted,
    not stored). Unique per batch and manifest row."""

    class Decision(models.TextChoices):
        EXCLUDE = "exclude", "exclude"
        INVALID = "invalid", "invalid"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="results")
    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="results")
    row = models.PositiveIntegerField()
    record_id = models.CharField(max_length=512, blank=True, default="")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    matches = models.JSONField(default=list)
    reason = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["batch", "row"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "row"], name="batch_result_unique_row"),
        ]
        indexes = [
            models.Index(fields=["batch", "decision", "row"], name="batch_result_decision_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} row {self.row} of {self.batch_id}"


class PipelineRequest(models.Model):
    """Audit log: every lookup, URL query and batch submission, with its key."""

    class Endpoint(models.TextChoices):
        LOOKUP = "lookup", "lookup"
        URLS = "urls", "Spawning-compatible URL query"
        BATCH = "batch", "batch submission"
        CHANGES = "changes", "change feed"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="pipeline_requests"
    )
    api_key = models.ForeignKey(
        OrganizationAPIKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pipeline_requests",
    )
    key_prefix = models.CharField(max_length=16)
    endpoint = models.CharField(max_length=8, choices=Endpoint.choices)
    use = models.CharField(max_length=32, blank=True, default="")
    record_count = models.PositiveIntegerField(default=0)
    excluded_count = models.PositiveIntegerField(default=0)
    registry_version = models.BigIntegerField(null=True, blank=True)
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="pipeline_request_org_idx"),
            # The operator dashboard's lookups in the last 24 hours, all
            # organizations together (optout.operator_dashboard.pipelines.throughput):
            # every lookup is logged, and only the newest are counted.
            models.Index(fields=["created_at"], name="pipeline_request_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} by {self.key_prefix} at {self.created_at:%Y-%m-%d %H:%M}"


class ChunkShardResult(models.Model):
    """One index shard's answer for one chunk, when the index is split across
    workers (OPTOUT_SHARDS > 1): the chunk's excluded and invalid records as
    that shard decided them. Once every shard has answered, the answers are
    merged into BatchResult rows (optout.chunk_shards)."""

    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="shard_results")
    # The shard count the chunk was fanned out to, and this answer's shard.
    shards = models.PositiveSmallIntegerField()
    shard = models.PositiveSmallIntegerField()
    # [{"row": n, "id": ..., "decision": "exclude" | "invalid", "matches": [...], "reason": ...}]
    decisions = models.JSONField(default=list)
    registry_version = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["chunk", "shards", "shard"]
        constraints = [
            models.UniqueConstraint(
                fields=["chunk", "shards", "shard"], name="chunk_shard_result_unique"
            ),
            models.CheckConstraint(
                condition=Q(shard__lt=models.F("shards")), name="chunk_shard_result_shard_in_range"
            ),
        ]

    def __str__(self) -> str:
        return f"shard {self.shard}/{self.shards} of chunk {self.chunk_id}"


class EngineState(models.Model):
    """What one process's matching engine has loaded: its registry version and
    size per hash kind. Status, not evidence: upserted (throttled) after the
    engine follows the registry, shown by GET /api/v1/registry."""

    # Celery hostname (or host name) and process id: one row per engine process.
    worker = models.CharField(max_length=200)
    shards = models.PositiveSmallIntegerField(default=1)
    shard = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=8)  # sha256 | pdq | phash
    loaded_version = models.BigIntegerField()
    size = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["worker", "shards", "shard", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["worker", "shards", "shard", "kind"], name="engine_state_unique"
            ),
        ]
        indexes = [
            # GET /api/v1/registry lists the engines seen recently.
            models.Index(fields=["updated_at"], name="engine_state_updated_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.worker} shard {self.shard}/{self.shards} {self.kind} v{self.loaded_version}"
