"""The index split across workers: a chunk fans out to one task per shard (queue
match.shard<k>), each shard answers for its photos, and the merge in PostgreSQL
gives exactly the decisions of one index with everything — in-process, and with
two real Celery workers each owning a shard against one worker owning all."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from optout import batches
from optout.chunk_shards import batch_chunk_shard_decide
from optout.engine import engine_for
from optout.matching import DEFAULT_THRESHOLDS, decide, record_parse
from optout.models import Batch, BatchResult, Chunk, ChunkShardResult, EngineState
from optout.snapshots import snapshot_load
from optout.tasks import batch_chunk_shard_decide_task
from registry.models import Photo
from tests.factories import OrganizationFactory, PhotoFactory
from tests.optout.batch_helpers import (
    download,
    flip_bits,
    jsonl,
    jsonl_rows,
    pipeline_client,
    worker_environment,
)
from tests.optout.batch_helpers import submit as submit_manifest
from tests.optout.test_batch_worker import (
    BLOCKED_DOMAIN,
    BOX,
    PDQ_ONLY,
    Oracle,
    RegistryPhotos,
    near_crop,
    registry_build,
)
from tests.workers import worker_start, worker_stop

# This module's own Redis database (the other numbers serve other tests).
WORKER_REDIS_DB = 7
RECORDS = 3_000
DONE_WITHIN_SECONDS = 150


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield from worker_environment(settings, tmp_path, unthrottled=("batches", "changes"))


def twin_photos(registry: RegistryPhotos) -> tuple[Photo, Photo]:
    """Two photos of the all-photos creator with the same PDQ and pHash up to two
    bits, on different shards: one record matches both, at different distances."""
    creator = registry.covered[0].creator
    first = PhotoFactory(creator=creator)
    second = PhotoFactory(
        creator=creator,
        pdq=flip_bits(first.pdq, 2, random.Random(1)),
        phash=flip_bits(first.phash, 2, random.Random(2)),
    )
    if first.pk % 2 == second.pk % 2:
        second = PhotoFactory(creator=creator, pdq=second.pdq, phash=second.phash)
    assert first.pk % 2 != second.pk % 2
    return first, second


def records_build(
    registry: RegistryPhotos, twins: tuple[Photo, Photo], rng: random.Random
) -> list[dict[str, Any]]:
    """Random records with planted matches on photos of both shards, the twins,
    claimed URLs and invalid rows."""
    records: list[dict[str, Any]] = [
        {
            "id": f"r{index:05d}",
            "sha256": rng.randbytes(32).hex(),
            "pdq": rng.randbytes(32).hex(),
            "phash": rng.randbytes(8).hex(),
            "url": f"https://img{index % 13}.example.net/{index}.jpg",
        }
        for index in range(RECORDS)
    ]
    slots = iter(rng.sample(range(RECORDS), 400))

    def plant(**fields: Any) -> None:
        records[next(slots)].update(fields)

    photos = registry.covered + registry.uncovered
    for _ in range(40):
        plant(sha256=rng.choice(photos).sha256)
    for distance in (0, 9, PDQ_ONLY, PDQ_ONLY + 1):
        for _ in range(20):
            plant(pdq=flip_bits(rng.choice(photos).pdq, distance, rng), phash=None, pdq_quality=90)
    for pdq_bits, phash_bits in ((0, 0), (BOX.pdq, BOX.phash), (BOX.pdq, BOX.phash + 1)):
        for _ in range(20):
            photo = rng.choice(photos)
            plant(
                pdq=flip_bits(photo.pdq, pdq_bits, rng),
                phash=flip_bits(photo.phash, phash_bits, rng),
                pdq_quality=90,
            )
    for _ in range(20):  # near a crop variant, on either shard
        plant(**near_crop(rng.choice(registry.with_variants), rng))
    for _ in range(10):
        plant(
            pdq=flip_bits(twins[0].pdq, 5, rng),
            phash=flip_bits(twins[0].phash, 1, rng),
            pdq_quality=90,
        )
    for index in range(10):
        plant(url=f"https://cdn{index}.{BLOCKED_DOMAIN}/{index}.jpg")
    for _ in range(5):
        plant(pdq="zz")
    return records


def exclusions(client: APIClient, batch_id: str, decision: str = "exclude") -> dict[int, Any]:
    status, body = download(
        client, f"/api/v1/batches/{batch_id}/exclusions?format=jsonl&decision={decision}"
    )
    assert status == 200
    return {row["row"]: row for row in jsonl_rows(body)}


# --- in-process ----------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_chunk_fans_out_to_every_shard_queue_and_merges_like_one_index(
    worker_env: dict[str, str],
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    # Given a registry and a batch submitted while the index is split in two
    organization = OrganizationFactory()
    registry = registry_build(organization)
    twins = twin_photos(registry)
    records = records_build(registry, twins, random.Random(3))[:600]
    settings.OPTOUT_SHARDS = 2
    settings.OPTOUT_CHUNK_RECORDS = 300
    api = pipeline_client(organization)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = submit_manifest(api, jsonl(records), key="sharded")
    assert response.status_code == 202, response.content
    batch = Batch.objects.get(public_id=response.json()["id"])
    chunks = list(Chunk.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True))

    # Then every chunk was enqueued once per shard, on that shard's queue
    enqueued = sorted((c.args[0], c.keywords["queue"]) for c in callbacks)  # type: ignore[attr-defined]
    assert enqueued == sorted(
        ((chunk, shard, 2), f"match.shard{shard}") for chunk in chunks for shard in (0, 1)
    )

    # When shard 0 answers every chunk, nothing is recorded yet
    assert [batch_chunk_shard_decide(chunk_id=c, shard=0, shards=2) for c in chunks] == [
        False,
        False,
    ]
    assert not BatchResult.objects.filter(batch=batch).exists()
    # ... once shard 1 answers too, each chunk is merged and recorded
    assert [batch_chunk_shard_decide_task(c, 1, 2) for c in chunks] == [True, True]
    batch.refresh_from_db()
    assert batch.status == "done" and batch.chunks_done == 2
    assert ChunkShardResult.objects.filter(chunk__batch=batch).count() == 4

    # Then the results are those of one index with everything, match for match
    parsed = [record_parse(r, row=i + 1) for i, r in enumerate(records)]
    expected = decide(
        parsed,
        snapshot_load(version=batch.registry_version),
        use="ai_training",
        organization=organization.pk,
        thresholds=DEFAULT_THRESHOLDS,
    )
    stored = {
        r.row: (r.decision, r.matches)
        for r in BatchResult.objects.filter(batch=batch).order_by("row")
    }
    assert stored == {
        d.row: (d.decision, [m.as_dict() for m in d.matches])
        for d in expected
        if d.decision != "allow"
    }
    twin_rows = [d for d in expected if any(m.kind == "pdq" and m.distance <= 7 for m in d.matches)]
    assert twin_rows  # the twins: one match per opt-out, the closer photo's distance
    # ... each shard held only its own photos
    shard_sizes = [engine_for(shards=2, shard=k).index.sizes()["sha256"] for k in (0, 1)]  # type: ignore[union-attr]
    assert all(size > 0 for size in shard_sizes)
    with engine_for().current() as everything:
        assert sum(shard_sizes) == everything.index.sizes()["sha256"]

    # And answering again changes nothing
    counters = (batch.excluded_count, batch.invalid_count, batch.receipt)
    assert batch_chunk_shard_decide(chunk_id=chunks[0], shard=0, shards=2) is False
    batch.refresh_from_db()
    assert (batch.excluded_count, batch.invalid_count, batch.receipt) == counters
    assert BatchResult.objects.filter(batch=batch).count() == len(stored)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sweeper_enqueues_again_only_the_shards_that_have_not_answered(
    worker_env: dict[str, str],
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    # Given a one-chunk batch that shard 0 answered and whose shard 1 task was lost
    settings.OPTOUT_SHARDS = 2
    organization = OrganizationFactory()
    photo = PhotoFactory()
    response = submit_manifest(
        pipeline_client(organization), jsonl([{"id": "a", "sha256": photo.sha256}]), key="lost"
    )
    assert response.status_code == 202, response.content
    chunk = Chunk.objects.get(batch__public_id=response.json()["id"])
    assert batch_chunk_shard_decide(chunk_id=chunk.pk, shard=0, shards=2) is False
    chunk.refresh_from_db()
    assert chunk.status == "pending" and chunk.lease_expires_at is not None

    # When the sweeper runs after the lease expired
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sweep = batches.batch_chunks_sweep(now=chunk.lease_expires_at + timedelta(seconds=1))

    # Then only shard 1's task is enqueued again, on its queue
    assert sweep.chunks == [chunk.pk]
    enqueued = [(c.args[0], c.keywords["queue"]) for c in callbacks]  # type: ignore[attr-defined]
    assert enqueued == [((chunk.pk, 1, 2), "match.shard1")]


# --- real workers ----------------------------------------------------------------------------


def wait_done(client: APIClient, batch_id: str, workers: list[Any], logs: list[Path]) -> Any:
    deadline = time.monotonic() + DONE_WITHIN_SECONDS
    body: dict[str, Any] = {}
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        body = client.get(f"/api/v1/batches/{batch_id}").json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.25)
    tails = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs)
    raise AssertionError(f"batch not finished: {body}\nworker logs:\n{tails}")


def run_batch(
    client: APIClient,
    manifest: bytes,
    key: str,
    workers_env: list[tuple[dict[str, str], str]],
    broker: str,
    tmp_path: Path,
) -> dict[str, Any]:
    logs = [tmp_path / f"{key}-{n}.log" for n in range(len(workers_env))]
    workers = [
        worker_start(broker, tmp_path, log, extra_env=env, queues=queues)
        for (env, queues), log in zip(workers_env, logs, strict=True)
    ]
    try:
        response = submit_manifest(client, manifest, key=key)
        assert response.status_code == 202, response.content
        return wait_done(client, response.json()["id"], workers, logs)  # type: ignore[no-any-return]
    finally:
        for worker in workers:
            worker_stop(worker)


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_each_owning_a_shard_decide_like_one_worker_with_everything(
    broker: str, tmp_path: Path, settings: Settings, worker_env: dict[str, str]
) -> None:
    # Given a registry, a manifest with matches on both shards, and chunks of 500
    organization = OrganizationFactory(name="Lab S")
    client = pipeline_client(organization)
    registry = registry_build(organization)
    twins = twin_photos(registry)
    records = records_build(registry, twins, random.Random(20261126))
    manifest = jsonl(records)
    oracle = Oracle.load(organization)
    settings.OPTOUT_CHUNK_RECORDS = 500

    # When two workers, each owning one of two shards, decide it
    settings.OPTOUT_SHARDS = 2
    sharded = run_batch(
        client,
        manifest,
        "sharded",
        [
            ({**worker_env, "OPTOUT_SHARDS": "2", "OPTOUT_SHARD": str(k)}, f"match.shard{k}")
            for k in (0, 1)
        ],
        broker,
        tmp_path,
    )
    # ... and one worker with everything decides the same content
    settings.OPTOUT_SHARDS = 1
    single = run_batch(
        client,
        manifest,
        "single",
        [({**worker_env, "OPTOUT_SHARDS": "1"}, "default")],
        broker,
        tmp_path,
    )

    # Then both are done at the same registry version, with the same exclusions,
    # match for match, and those are brute force's
    assert (sharded["status"], single["status"]) == ("done", "done"), (sharded, single)
    assert sharded["registry_version"] == single["registry_version"]
    assert sharded["chunk_count"] == 6
    excluded = exclusions(client, sharded["id"])
    assert excluded == exclusions(client, single["id"])
    assert exclusions(client, sharded["id"], "invalid") == exclusions(
        client, single["id"], "invalid"
    )
    assert sharded["counts"] == single["counts"]
    assert (
        sharded["receipt"]["statement"]["excluded_ids_sha256"]
        == single["receipt"]["statement"]["excluded_ids_sha256"]
    )
    expected = {
        row: kinds
        for row, record in enumerate(records, start=1)
        if record["pdq"] != "zz" and (kinds := oracle.kinds(record))
    }
    assert {row: {m["kind"] for m in r["matches"]} for row, r in excluded.items()} == expected
    assert len(expected) > 60
    batch = Batch.objects.get(public_id=sharded["id"])
    assert ChunkShardResult.objects.filter(chunk__batch=batch).count() == 12
    shard_rows = [r for r in ChunkShardResult.objects.filter(chunk__batch=batch) if r.decisions]
    assert {r.shard for r in shard_rows} == {0, 1}  # both shards found matches

    # And each worker reported its shard's engine at or after the batch's version
    states = list(EngineState.objects.filter(kind="sha256"))
    by_shard = {(s.shards, s.shard): s for s in states}
    assert set(by_shard) == {(2, 0), (2, 1), (1, 0)}
    assert all(s.loaded_version >= batch.registry_version for s in states)  # type: ignore[operator]
    assert by_shard[2, 0].size + by_shard[2, 1].size == by_shard[1, 0].size
    assert min(by_shard[2, 0].size, by_shard[2, 1].size) > 0
    body = client.get("/api/v1/registry").json()
    listed = {(w["shards"], w["shard"], w["kind"]): w for w in body["workers"]}
    assert set(listed) == {(n, k, kind) for n, k in by_shard for kind in ("sha256", "pdq", "phash")}
    assert all(w["lag"] == body["registry_version"] - w["loaded_version"] for w in listed.values())
