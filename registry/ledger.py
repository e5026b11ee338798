"""The only writer of ConsentEvent. Assigns registry versions.

A registry version is taken from the PostgreSQL sequence ``registry_version_seq``
while holding a transaction-scoped advisory lock, so versions are handed out in
the order their transactions commit: whoever reads version N committed knows
every lower version is committed (or rolled back) too. That is what lets a
matching index "follow the versions". On SQLite (`make run` only) writes are
serialised by the database itself and the next version is max + 1.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from registry.models import Channel, ConsentEvent

# Arbitrary constant naming the ledger's advisory lock (pg_advisory_xact_lock).
LEDGER_LOCK_KEY = 7_316_001


@dataclass(frozen=True)
class LedgerEntry:
    kind: str
    creator_public_id: uuid.UUID
    subject_public_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _versions_allocate(count: int) -> list[int]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK_KEY])
            cursor.execute(
                "SELECT nextval('registry_version_seq') FROM generate_series(1, %s)", [count]
            )
            return sorted(row[0] for row in cursor.fetchall())
    current = ConsentEvent.objects.aggregate(top=Max("registry_version"))["top"] or 0
    return list(range(current + 1, current + 1 + count))


def entries_append(
    *,
    entries: list[LedgerEntry],
    actor: str,
    channel: str,
    notice_version: str,
) -> list[ConsentEvent]:
    """Append entries to the ledger, one new registry version each, in order."""
    if not entries:
        return []
    if not connection.in_atomic_block:
        raise RuntimeError("ledger entries must be appended inside the caller's transaction")
    if channel not in Channel.values:
        raise ValueError(f"unknown channel {channel!r}")
    versions = _versions_allocate(len(entries))
    now = timezone.now()
    events = [
        ConsentEvent(
            registry_version=version,
            kind=entry.kind,
            creator_public_id=entry.creator_public_id,
            subject_public_id=entry.subject_public_id,
            actor=actor,
            channel=channel,
            notice_version=notice_version,
            details=entry.details,
            created_at=now,
        )
        for version, entry in zip(versions, entries, strict=True)
    ]
    return ConsentEvent.objects.bulk_create(events)


@transaction.atomic
def entry_append(
    *, entry: LedgerEntry, actor: str, channel: str, notice_version: str
) -> ConsentEvent:
    return entries_append(
        entries=[entry], actor=actor, channel=channel, notice_version=notice_version
    )[0]


def registry_version_current() -> int:
    """The newest committed registry version (0 for an empty registry)."""
    return ConsentEvent.objects.aggregate(top=Max("registry_version"))["top"] or 0
