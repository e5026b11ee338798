"""Data migrations, run forward and back on the real database."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("optout", "0004_engine_state")]
AFTER = [("optout", "0005_chunk_payload")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    """Every app's newest migration: where the other tests expect the schema."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.loader.graph.leaf_nodes()


def _batch(apps: Any, organization_name: str, key: str) -> Any:
    organization = apps.get_model("optout", "Organization").objects.create(name=organization_name)
    return apps.get_model("optout", "Batch").objects.create(
        organization=organization, use="ai_training", format="jsonl",
        manifest_sha256="0" * 64, manifest_bytes=1, idempotency_key=key,
        request_digest="0" * 64,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_chunk_records_move_to_the_payload_and_back() -> None:
    pending_records = [{"row": 1, "id": "a", "url": "https://a.org/é"}, {"row": 2, "id": None}]
    try:
        old = _migrate(BEFORE)
        batch = _batch(old, "Lab M", "m1")
        Chunk = old.get_model("optout", "Chunk")
        pending = Chunk.objects.create(
            batch=batch, index=0, records=pending_records, record_count=2
        )
        done = Chunk.objects.create(
            batch=batch, index=1, records=[{"row": 3, "id": "c"}], record_count=1, status="done"
        )

        new = _migrate(AFTER)
        Chunk = new.get_model("optout", "Chunk")
        from optout.models import Chunk as Current

        moved = Current.objects.get(pk=pending.pk)
        assert moved.records == pending_records
        assert bytes(Chunk.objects.get(pk=done.pk).payload) == b""  # results hold a done chunk

        back = _migrate(BEFORE)
        Chunk = back.get_model("optout", "Chunk")
        assert Chunk.objects.get(pk=pending.pk).records == pending_records
        assert Chunk.objects.get(pk=done.pk).records == []
    finally:
        _migrate(_latest())
