"""Batches through the API and the services, on PostgreSQL.

Task functions are called in-process (the chunk and shard tasks, the sweeper);
enqueueing is asserted through the on-commit callbacks.
tests/optout/test_batch_worker.py runs the same path through a real worker.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, FakePayload, encode_multipart
from django.utils import timezone
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from optout import batches, receipts
from optout.matching import DEFAULT_THRESHOLDS, rule_fingerprint
from optout.matching.rule import DEFAULT_RULE, MAX_STRICTNESS, PDQ_STEP, UNKNOWN_QUALITY_RULE, Box
from optout.models import Batch, BatchResult, Chunk, OptOut, Organization, PipelineRequest
from optout.services import opt_out_file
from optout.tasks import batch_chunk_decide_task, batch_chunks_sweep_task, batch_shard_hash_task
from registry import hashing, variants
from registry.colour import COLOUR_THRESHOLD, colour_signature
from registry.models import Channel, Claim, Photo
from tests.factories import (
    CreatorFactory,
    OrganizationFactory,
    PhotoFactory,
    expired_api_key,
    revoked_api_key,
)
from tests.images import encode, generated_photo, jpeg_bytes, meme_captions, skimage_photo
from tests.optout.batch_helpers import (
    SHA256_EVIDENCE,
    batch_environment,
    download,
    flip_bits,
    hamming,
    jsonl,
    jsonl_rows,
    parquet,
    pipeline_client,
    submit,
    tar,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def batch_settings(settings: Settings, tmp_path: Path) -> Iterator[None]:
    yield from batch_environment(settings, tmp_path)


@dataclass
class Registry:
    photo: Photo
    opt_out: OptOut
    other_use_photo: Photo
    claim: Claim


def registry_with_opt_outs() -> Registry:
    """One creator refusing ai_training over all photos and a domain; another
    refusing only data_mining."""
    creator = CreatorFactory()
    photo = PhotoFactory(creator=creator)
    claim = Claim.objects.create(
        creator=creator, kind="domain", value="photos.example.org", registered_version=0
    )
    opt_out = opt_out_file(
        creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="claims",
        claims=[claim.public_id],
        channel=Channel.WEB,
    )
    other = CreatorFactory()
    other_use_photo = PhotoFactory(creator=other)
    opt_out_file(creator=other, uses=["data_mining"], scope="all_photos", channel=Channel.WEB)
    return Registry(photo, opt_out, other_use_photo, claim)


def run_chunks(batch: Batch) -> list[bool]:
    return [
        batch_chunk_decide_task(chunk_id)
        for chunk_id in Chunk.objects.filter(batch=batch)
        .order_by("index")
        .values_list("pk", flat=True)
    ]


def batch_of(response: object) -> Batch:
    return Batch.objects.get(public_id=response.json()["id"])  # type: ignore[attr-defined]


@pytest.fixture
def organization() -> Organization:
    return OrganizationFactory(name="Lab A")


@pytest.fixture
def client(organization: Organization) -> APIClient:
    return pipeline_client(organization)


# Distances come from the registry's rule (optout/matching/rule.py), never from
# here: the rule is calibrated on its own. NEAR: the widest PDQ distance at
# which the rule matches the photo itself, with the pHash distance it allows there.
ORIGINAL = DEFAULT_RULE.kinds["original"]
BARE = UNKNOWN_QUALITY_RULE.kinds["original"]
NEAR = max(ORIGINAL.both, key=lambda box: box.pdq)


def box_of(pdq: int, phash: int) -> Box:
    """The box the engine reports for a pair at these distances (the first that holds it)."""
    return next(box for box in ORIGINAL.both if box.contains(pdq, phash))


def near_match(registry: Registry) -> dict[str, object]:
    """The match of the ``near`` record of ``mixed_records``."""
    box = box_of(NEAR.pdq, NEAR.phash)
    return {
        "kind": "pdq",
        "distance": NEAR.pdq,
        "threshold": box.pdq,
        "opt_out": str(registry.opt_out.public_id),
        "uses": ["ai_training"],
        "evidence": {
            "variant": "original",
            "basis": "pdq+phash",
            "pdq_distance": NEAR.pdq,
            "pdq_threshold": box.pdq,
            "phash_distance": NEAR.phash,
            "phash_threshold": box.phash,
            "quality": "ok",
            "colour_distance": None,
            "colour_threshold": None,
            "layout_distance": None,
            "layout_threshold": None,
            "keypoint_inliers": None,
            "keypoint_threshold": None,
            "strictness": 0,
        },
    }


def mixed_records(registry: Registry) -> list[bytes]:
    """Manifest lines: two exclusions, two allowed, a malformed line, an invalid hash.

    ``near`` is a near-duplicate stating its PDQ quality, at the edge of the
    rule's widest PDQ box; ``bare`` has a PDQ as close as the rule allows a PDQ
    alone, but states no quality, so the stricter rule leaves it out."""
    rng = random.Random(7)
    photo = registry.photo
    assert ORIGINAL.pdq_only is not None and (BARE.pdq_only or -1) < ORIGINAL.pdq_only
    near = {
        "id": "near",
        "pdq": flip_bits(photo.pdq, NEAR.pdq, rng),
        "phash": flip_bits(photo.phash, NEAR.phash, rng),
        "pdq_quality": 100,
    }
    return [
        json.dumps({"id": "exact", "sha256": photo.sha256}).encode(),
        json.dumps(near).encode(),
        json.dumps({"id": "other-use", "sha256": registry.other_use_photo.sha256}).encode(),
        b'{"id": "broken", "sha256": ',
        json.dumps({"id": "short", "phash": "abc"}).encode(),
        json.dumps({"id": "claimed", "url": "https://cdn.photos.example.org/a.jpg"}).encode(),
        json.dumps({"id": "bare", "pdq": flip_bits(photo.pdq, ORIGINAL.pdq_only, rng)}).encode(),
    ]


# --- submission -------------------------------------------------------------------


def test_jsonl_batch_is_accepted_chunked_decided_and_signed(
    client: APIClient,
    organization: Organization,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    caplog: pytest.LogCaptureFixture,
    settings: Settings,
) -> None:
    registry = registry_with_opt_outs()
    settings.OPTOUT_CHUNK_RECORDS = 3
    manifest = b"\n".join(mixed_records(registry)) + b"\n"

    with (
        caplog.at_level(logging.INFO, logger="optout.pipeline"),
        django_capture_on_commit_callbacks(execute=False) as callbacks,
    ):
        response = submit(client, manifest)

    assert response.status_code == 202, response.json()
    body = response.json()
    batch = Batch.objects.get(public_id=body["id"])
    url = f"http://testserver/api/v1/batches/{batch.public_id}"
    assert body == {
        "id": str(batch.public_id),
        "status": "queued",
        "record_count": 7,
        "chunk_count": 3,
        "url": url,
    }
    assert response["Location"] == url
    assert len(callbacks) == 3  # one wake-up per chunk
    chunks = list(Chunk.objects.filter(batch=batch).order_by("index"))
    assert [chunk.record_count for chunk in chunks] == [3, 3, 1]
    assert [record["row"] for chunk in chunks for record in chunk.records] == [1, 2, 3, 4, 5, 6, 7]
    assert chunks[1].records[0] == {
        "row": 4,
        "id": None,
        "invalid": chunks[1].records[0]["invalid"],
    }
    assert chunks[1].records[0]["invalid"].startswith("not valid JSON")
    audit = PipelineRequest.objects.get(batch=batch)
    assert (audit.endpoint, audit.organization_id, audit.record_count) == (
        "batch",
        organization.pk,
        7,
    )
    assert audit.key_prefix == batch.api_key.prefix  # type: ignore[union-attr]
    logged = [r.getMessage() for r in caplog.records if r.name == "optout.pipeline"]
    assert (
        f"batch {batch.public_id} submitted organization=Lab A key={audit.key_prefix} "
        "format=jsonl records=7 chunks=3"
    ) in logged

    assert run_chunks(batch) == [True, True, True]

    batch.refresh_from_db()
    assert (batch.status, batch.chunks_done, batch.excluded_count, batch.invalid_count) == (
        "done",
        3,
        3,
        2,
    )
    status, exclusions = download(client, f"/api/v1/batches/{batch.public_id}/exclusions")
    assert status == 200
    rows = jsonl_rows(exclusions)
    assert [(row["id"], row["row"]) for row in rows] == [("exact", 1), ("near", 2), ("claimed", 6)]
    assert [(m["kind"], m["evidence"]) for m in rows[0]["matches"]] == [("sha256", SHA256_EVIDENCE)]
    assert rows[1]["matches"] == [near_match(registry)]
    assert [m["kind"] for m in rows[2]["matches"]] == ["domain"]
    assert "evidence" not in rows[2]["matches"][0]
    status, invalid = download(
        client, f"/api/v1/batches/{batch.public_id}/exclusions?decision=invalid"
    )
    assert [(row["id"], row["row"]) for row in jsonl_rows(invalid)] == [(None, 4), ("short", 5)]
    assert jsonl_rows(invalid)[1]["reason"] == "phash must be 16 hexadecimal digits"


def test_status_goes_queued_running_done_with_progress_and_receipt(
    client: APIClient, organization: Organization, settings: Settings
) -> None:
    registry = registry_with_opt_outs()
    settings.OPTOUT_CHUNK_RECORDS = 2
    manifest = jsonl(
        [{"id": "hit", "sha256": registry.photo.sha256}]
        + [{"id": f"r{i}", "sha256": secrets.token_hex(32)} for i in range(4)]
    )
    batch = batch_of(submit(client, manifest))
    detail_url = f"/api/v1/batches/{batch.public_id}"

    queued = client.get(detail_url).json()
    chunk_ids = list(batch.chunks.order_by("index").values_list("pk", flat=True))
    batch_chunk_decide_task(chunk_ids[0])
    running = client.get(detail_url).json()
    not_done = client.get(f"{detail_url}/exclusions")
    for chunk_id in chunk_ids[1:]:
        batch_chunk_decide_task(chunk_id)
    done = client.get(detail_url).json()

    assert (queued["status"], queued["progress"], queued["registry_version"]) == (
        "queued",
        0.0,
        None,
    )
    assert queued["counts"] == {"excluded": 0, "invalid": 0}
    assert queued["receipt"] is None and queued["started_at"] is None
    version = OptOut.objects.order_by("-filed_version").first().filed_version  # type: ignore[union-attr]
    assert running["status"] == "running"
    assert running["registry_version"] == version
    assert running["progress"] == pytest.approx(1 / 3)
    assert running["started_at"] is not None and running["finished_at"] is None
    assert not_done.status_code == 409
    assert not_done.json() == {
        "error": "not_done",
        "detail": "batch is running; 1 of 3 chunks done",
    }
    assert done["status"] == "done" and done["progress"] == 1.0
    assert done["counts"] == {"excluded": 1, "invalid": 0, "allowed": 4}
    assert done["exclusions_url"] == f"http://testserver{detail_url}/exclusions"
    assert done["registry_version"] == version
    assert (queued["registry_photos"], done["registry_photos"]) == (None, Photo.objects.count())
    receipt = done["receipt"]
    receipts.receipt_verify(receipt, receipts.public_key_info()["public_key"])
    statement = receipt["statement"]
    assert statement == {
        "type": "optout-registry.batch-receipt",
        "version": 1,
        "batch": str(batch.public_id),
        "organization": str(organization.public_id),
        "use": "ai_training",
        "manifest_sha256": batch.manifest_sha256,
        "manifest_format": "jsonl",
        "record_count": 5,
        "excluded_count": 1,
        "invalid_count": 0,
        "excluded_ids_sha256": receipts.excluded_ids_digest(["hit"]),
        "registry_version": version,
        # The registry's size at that version is signed with the thresholds.
        "thresholds": {
            "pdq": DEFAULT_THRESHOLDS.pdq,
            "phash": DEFAULT_THRESHOLDS.phash,
            "registry_photos": Photo.objects.count(),
        },
        "algorithms": statement["algorithms"],
        "started_at": done["started_at"].replace("Z", "+00:00"),
        "finished_at": done["finished_at"].replace("Z", "+00:00"),
    }
    assert set(statement["algorithms"]) == {"sha256", "pdq", "phash", "decision"}
    assert statement["algorithms"]["pdq"].startswith("PDQ (pdqhash 0.")
    # The receipt names the decision rule (its thresholds and the registered variants).
    assert rule_fingerprint().startswith("sha256:")
    assert rule_fingerprint() in statement["algorithms"]["decision"]
    # No creator identity anywhere a pipeline can read.
    text = json.dumps(done)
    creator = registry.photo.creator
    assert str(creator.public_id) not in text and creator.user.email not in text  # type: ignore[union-attr]
    assert str(registry.photo.public_id) not in text


def test_a_chunk_decided_again_adds_nothing_and_moves_no_counter(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    run_chunks(batch)
    batch.refresh_from_db()
    before = (batch.chunks_done, batch.excluded_count, batch.invalid_count, batch.receipt)
    results_before = list(BatchResult.objects.filter(batch=batch).values_list("row", "decision"))

    again = run_chunks(batch)
    # A lease that expired after the chunk was done does not reopen it either.
    Chunk.objects.filter(batch=batch).update(lease_expires_at=timezone.now() - timedelta(hours=1))
    again += run_chunks(batch)

    batch.refresh_from_db()
    assert again == [False, False]
    assert (batch.chunks_done, batch.excluded_count, batch.invalid_count, batch.receipt) == before
    assert list(BatchResult.objects.filter(batch=batch).values_list("row", "decision")) == (
        results_before
    )
    assert Chunk.objects.get(batch=batch).attempts == 1


def test_a_chunk_decided_concurrently_after_its_lease_expired_counts_once(
    client: APIClient,
) -> None:
    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    chunk = Chunk.objects.get(batch=batch)
    # Another worker took the chunk, wrote its results, and died before marking it done.
    Chunk.objects.filter(pk=chunk.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), attempts=1
    )
    started = batches._batch_start(batch.pk)
    batches.BatchResult.objects.bulk_create(
        [
            batches._result(chunk, decision)
            for decision in batches._chunk_decisions(chunk, started)
            if decision.decision != "allow"
        ]
    )

    recorded = batch_chunk_decide_task(chunk.pk)

    batch.refresh_from_db()
    assert recorded is True
    assert (batch.status, batch.excluded_count, batch.invalid_count) == ("done", 3, 2)
    assert BatchResult.objects.filter(batch=batch).count() == 5
    assert Chunk.objects.get(pk=chunk.pk).attempts == 2


def test_same_idempotency_key_and_body_returns_the_same_batch(client: APIClient) -> None:
    manifest = jsonl([{"id": "a", "sha256": "ab" * 32}])
    first = submit(client, manifest, key="nightly-2026-11-02")

    again = submit(client, manifest, key="nightly-2026-11-02", name="renamed.jsonl")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == first.json() | {"status": "queued"}
    assert again["Location"] == first["Location"]
    assert Batch.objects.count() == 1
    assert Chunk.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_422(client: APIClient) -> None:
    submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}]), key="k")

    other_manifest = submit(client, jsonl([{"id": "b", "sha256": "cd" * 32}]), key="k")
    other_use = submit(
        client, jsonl([{"id": "a", "sha256": "ab" * 32}]), key="k", use="data_mining"
    )
    other_threshold = submit(
        client, jsonl([{"id": "a", "sha256": "ab" * 32}]), key="k", pdq_threshold=10
    )

    for response in (other_manifest, other_use, other_threshold):
        assert response.status_code == 422
        assert response.json()["error"] == "idempotency_conflict"
        assert "'k' was already used for another request" in response.json()["detail"]
    assert Batch.objects.count() == 1 and Chunk.objects.count() == 1


def test_the_same_key_in_another_organization_is_another_batch(client: APIClient) -> None:
    other = pipeline_client(OrganizationFactory())
    manifest = jsonl([{"id": "a", "sha256": "ab" * 32}])

    first = submit(client, manifest, key="k")
    second = submit(other, manifest, key="k")

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "the Idempotency-Key header is required (any unique string)"),
        (
            {"HTTP_IDEMPOTENCY_KEY": "  "},
            "the Idempotency-Key header is required (any unique string)",
        ),
        ({"HTTP_IDEMPOTENCY_KEY": "k" * 256}, "at most 255 characters"),
    ],
)
def test_idempotency_key_is_required_and_bounded(
    client: APIClient, headers: dict[str, str], message: str
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        "/api/v1/batches",
        {
            "manifest": SimpleUploadedFile("m.jsonl", b'{"id": "a", "url": "https://a.org/"}\n'),
            "use": "ai_training",
        },
        format="multipart",
        **headers,
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"Idempotency-Key": [message]},
    }
    assert Batch.objects.count() == 0


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("k", True),
        ("550e8400-e29b-41d4-a716-446655440000", True),
        ("batch 7 of 9", True),
        ("~" * 255, True),
        ("caf\u00e9", False),
        ("tab\there", False),
        ("del\x7f", False),
    ],
)
def test_the_documented_idempotency_key_pattern_is_what_the_view_accepts(
    client: APIClient, key: str, accepted: bool
) -> None:
    schema = client.get("/api/schema/?format=json").json()
    [header] = schema["paths"]["/api/v1/batches"]["post"]["parameters"]

    response = submit(client, jsonl([{"id": "a", "url": "https://a.org/"}]), key=key)

    assert header["name"] == "Idempotency-Key"
    assert bool(re.fullmatch(header["schema"]["pattern"], key)) is accepted
    if accepted:
        assert response.status_code == 202
    else:
        assert response.status_code == 400
        assert response.json()["fields"] == {
            "Idempotency-Key": ["visible ASCII characters (and spaces between them) only"]
        }
        assert Batch.objects.count() == 0


def test_the_schema_bounds_the_thresholds_as_the_view_does(client: APIClient) -> None:
    schema = client.get("/api/schema/?format=json").json()
    fields = schema["components"]["schemas"]["BatchSubmitRequest"]["properties"]

    loosest = submit(
        client,
        jsonl([{"id": "a", "url": "https://a.org/"}]),
        pdq_threshold=DEFAULT_THRESHOLDS.pdq,
        phash_threshold=DEFAULT_THRESHOLDS.phash,
    )
    huge = submit(
        client, jsonl([{"id": "a", "url": "https://a.org/"}]), key="2", pdq_threshold=10**12
    )

    assert (fields["pdq_threshold"]["minimum"], fields["pdq_threshold"]["maximum"]) == (
        0,
        DEFAULT_THRESHOLDS.pdq,
    )
    assert (fields["phash_threshold"]["minimum"], fields["phash_threshold"]["maximum"]) == (
        0,
        DEFAULT_THRESHOLDS.phash,
    )
    assert (fields["strictness"]["minimum"], fields["strictness"]["maximum"]) == (
        0,
        MAX_STRICTNESS,
    )
    assert loosest.status_code == 202
    assert huge.status_code == 400
    assert huge.json()["fields"] == {"pdq_threshold": [loose_message("pdq")]}


def loose_message(kind: str) -> str:
    maximum = getattr(DEFAULT_THRESHOLDS, kind)
    return f"{kind} threshold must be between 0 and {maximum} (the registry's maximum)"


def test_unknown_manifest_format_is_415(client: APIClient) -> None:
    binary = submit(client, b"\x00\x01\x02binary" * 100, name="manifest.bin")
    named = submit(client, jsonl([{"id": "a", "url": "https://a.org/"}]), format="xml", key="2")

    assert binary.status_code == 415
    assert binary.json() == {
        "error": "unsupported_format",
        "detail": "unknown manifest format; send JSONL, CSV, Parquet or a webdataset .tar",
    }
    assert named.status_code == 415
    assert named.json()["detail"] == (
        "unknown format 'xml'; allowed: jsonl, csv, parquet, webdataset"
    )
    assert Batch.objects.count() == 0


def test_a_manifest_over_the_limit_is_413_and_creates_nothing(
    client: APIClient, settings: Settings
) -> None:
    settings.OPTOUT_MAX_MANIFEST_BYTES = 1000
    # Just over the limit: refused while it is read (the body is within the framing allowance).
    slightly = jsonl([{"id": f"r{i}", "url": f"https://a.org/{i}"} for i in range(40)])
    # Far over: refused from its Content-Length, before the body is read.
    far = jsonl([{"id": f"r{i}", "url": f"https://a.org/{i}"} for i in range(5000)])
    assert 1000 < len(slightly) < 2000 and len(far) > 1000 + 64 * 1024

    responses = [submit(client, slightly, key="1"), submit(client, far, key="2")]

    for response in responses:
        assert response.status_code == 413
        assert response.json() == {
            "error": "too_large",
            "detail": "The manifest is larger than the limit of 1000 bytes.",
        }
    assert Batch.objects.count() == 0 and PipelineRequest.objects.count() == 0


def test_the_manifest_limit_is_its_own_not_the_photo_upload_limit(
    client: APIClient, settings: Settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    manifest = jsonl([{"id": f"r{i}", "url": f"https://a.org/{i}"} for i in range(500)])

    response = submit(client, manifest)

    assert response.status_code == 202, response.json()
    assert response.json()["record_count"] == 500


@pytest.mark.parametrize(
    ("content", "name", "detail"),
    [
        (b"", "m.jsonl", "the manifest is empty"),
        (b"id,sha256,url\n", "m.csv", "the manifest holds no records"),
        (b"\n\n\n", "m.jsonl", "the manifest is empty"),
    ],
)
def test_an_empty_manifest_is_400(
    client: APIClient, content: bytes, name: str, detail: str
) -> None:
    response = submit(client, content, name=name)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": detail,
        "fields": {"manifest": [detail]},
    }
    assert Batch.objects.count() == 0 and Chunk.objects.count() == 0


def test_use_and_thresholds_are_validated(client: APIClient) -> None:
    manifest = jsonl([{"id": "a", "url": "https://a.org/"}])

    bad_use = submit(client, manifest, use="scraping")
    loose = submit(client, manifest, pdq_threshold=DEFAULT_THRESHOLDS.pdq + 1)
    loose_phash = submit(client, manifest, phash_threshold=DEFAULT_THRESHOLDS.phash + 1)

    assert bad_use.status_code == 400
    assert bad_use.json()["fields"] == {
        "use": [
            "unknown use 'scraping'; allowed: data_mining, ai_training, "
            "ai_generative_training, ai_inference"
        ]
    }
    assert loose.status_code == 400
    assert loose.json()["fields"] == {"pdq_threshold": [loose_message("pdq")]}
    assert loose_phash.status_code == 400
    assert loose_phash.json()["fields"] == {"phash_threshold": [loose_message("phash")]}
    assert Batch.objects.count() == 0


def test_a_stricter_threshold_excludes_fewer(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    rng = random.Random(3)

    def near(name: str, pdq: int, phash: int) -> dict[str, object]:
        return {
            "id": name,
            "pdq": flip_bits(registry.photo.pdq, pdq, rng),
            "phash": flip_bits(registry.photo.phash, phash, rng),
            "pdq_quality": 100,
        }

    # Every record matches under the registry's rule; the caps (5 PDQ bits,
    # 2 pHash bits) leave out the ones beyond them on either hash.
    records = [near("d5", 5, 0), near("d6", 6, 0), near("p2", 0, 2), near("p3", 0, 3)]
    for record in records:
        pdq, phash = (
            hamming(str(record[kind]), getattr(registry.photo, kind)) for kind in ("pdq", "phash")
        )
        assert any(box.contains(pdq, phash) for box in ORIGINAL.both), record
    default = batch_of(submit(client, jsonl(records), key="default"))
    capped = batch_of(
        submit(client, jsonl(records), key="capped", pdq_threshold=5, phash_threshold=2)
    )

    run_chunks(default)
    run_chunks(capped)

    _status, body = download(client, f"/api/v1/batches/{default.public_id}/exclusions")
    assert [row["id"] for row in jsonl_rows(body)] == ["d5", "d6", "p2", "p3"]
    _status, body = download(client, f"/api/v1/batches/{capped.public_id}/exclusions")
    rows = jsonl_rows(body)
    assert [row["id"] for row in rows] == ["d5", "p2"]
    # The thresholds reported are the rule's, capped.
    assert [row["matches"][0]["threshold"] for row in rows] == [5, 5]
    assert [
        (m["evidence"]["pdq_threshold"], m["evidence"]["phash_threshold"])
        for row in rows
        for m in row["matches"]
    ] == [(5, 2), (5, 2)]
    capped.refresh_from_db()
    assert capped.thresholds == {"pdq": 5, "phash": 2}
    signed = capped.receipt["statement"]["thresholds"]  # type: ignore[index]
    assert signed == {"pdq": 5, "phash": 2, "registry_photos": Photo.objects.count()}


def test_a_stricter_rule_is_asked_for_applied_stored_and_signed(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    rng = random.Random(5)
    # "edited" sits inside the photo's middle box by half a step: the rule one
    # step stricter leaves it out; "close" stays inside every stricter rule.
    box = ORIGINAL.both[1]
    records = [
        {
            "id": name,
            "pdq": flip_bits(registry.photo.pdq, pdq, rng),
            "phash": flip_bits(registry.photo.phash, phash, rng),
            "pdq_quality": 100,
        }
        for name, pdq, phash in (("edited", box.pdq - PDQ_STEP // 2, box.phash), ("close", 2, 0))
    ]
    manifest = jsonl(records)

    default = batch_of(submit(client, manifest, key="default"))
    stricter = batch_of(submit(client, manifest, key="stricter", strictness=1))
    # The same key with another strictness is another request.
    conflict = submit(client, manifest, key="default", strictness=1)
    too_strict = submit(client, manifest, key="too-strict", strictness=MAX_STRICTNESS + 1)
    run_chunks(default)
    run_chunks(stricter)

    _status, body = download(client, f"/api/v1/batches/{default.public_id}/exclusions")
    assert [row["id"] for row in jsonl_rows(body)] == ["edited", "close"]
    _status, body = download(client, f"/api/v1/batches/{stricter.public_id}/exclusions")
    assert [row["id"] for row in jsonl_rows(body)] == ["close"]
    assert conflict.status_code == 422
    assert too_strict.status_code == 400
    assert too_strict.json()["fields"] == {
        "strictness": [f"strictness must be between 0 and {MAX_STRICTNESS}"]
    }
    stricter.refresh_from_db()
    default.refresh_from_db()
    limits = {"pdq": DEFAULT_THRESHOLDS.pdq, "phash": DEFAULT_THRESHOLDS.phash}
    size = {"registry_photos": Photo.objects.count()}
    # The registry's own rule is stored and signed as before strictness existed.
    assert default.thresholds == limits
    assert default.receipt["statement"]["thresholds"] == {**limits, **size}  # type: ignore[index]
    assert stricter.thresholds == {**limits, "strictness": 1}
    signed = stricter.receipt["statement"]["thresholds"]  # type: ignore[index]
    assert signed == {**limits, "strictness": 1, **size}
    shown = client.get(f"/api/v1/batches/{stricter.public_id}").json()["thresholds"]
    assert shown == {**limits, "strictness": 1}
    assert client.get(f"/api/v1/batches/{default.public_id}").json()["thresholds"] == {
        **limits,
        "strictness": 0,
    }


def test_an_exception_granted_to_the_organization_is_honoured(
    client: APIClient, organization: Organization
) -> None:
    creator = CreatorFactory()
    photo = PhotoFactory(creator=creator)
    opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="all_photos",
        exceptions=[organization.public_id],
        channel=Channel.WEB,
    )
    other = pipeline_client(OrganizationFactory())
    manifest = jsonl([{"id": "p", "sha256": photo.sha256}])
    mine = batch_of(submit(client, manifest))
    theirs = batch_of(submit(other, manifest))

    run_chunks(mine)
    run_chunks(theirs)

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.excluded_count, theirs.excluded_count) == (0, 1)


# --- formats --------------------------------------------------------------------------


def test_csv_and_tsv_manifests_keep_line_numbers(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    csv_manifest = (
        (
            "id,sha256,caption\n"
            f"a,{registry.photo.sha256},hello\n"
            "b,nothex,x\n"
            f"c,{secrets.token_hex(32)},y\n"
        ).encode()
        + b"d\xff,"
        + registry.photo.sha256.encode()
        + b",z\n"
    )
    tsv_manifest = f"key\tsha256\nk1\t{registry.photo.sha256}\n".encode()

    csv_batch = batch_of(submit(client, csv_manifest, name="m.csv", key="1"))
    tsv_batch = batch_of(submit(client, tsv_manifest, name="m.tsv", key="2"))
    run_chunks(csv_batch)
    run_chunks(tsv_batch)

    assert csv_batch.format == "csv" and tsv_batch.format == "csv"
    results = list(
        BatchResult.objects.filter(batch=csv_batch).values_list("row", "record_id", "decision")
    )
    assert results == [(2, "a", "exclude"), (3, "b", "invalid"), (5, "", "invalid")]
    assert BatchResult.objects.get(batch=csv_batch, row=5).reason == "row is not valid UTF-8"
    assert list(BatchResult.objects.filter(batch=tsv_batch).values_list("record_id", "row")) == [
        ("k1", 2)
    ]


def test_img2dataset_parquet_is_accepted_unchanged_with_key_as_id(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    count = 6
    manifest = parquet(
        {
            "key": [f"00000{i}" for i in range(count)],
            "url": [
                "https://cdn.photos.example.org/1.jpg",
                "https://elsewhere.org/2.jpg",
                "https://elsewhere.org/3.jpg",
                "https://elsewhere.org/4.jpg",
                "https://elsewhere.org/5.jpg",
                "not a url",
            ],
            "caption": ["a", "b", "c", "d", "e", "f"],
            "sha256": [None, registry.photo.sha256, None, secrets.token_hex(32), None, None],
            "status": ["success", "success", "failed_to_download"] * 2,
            "error_message": [None, None, "timeout", None, None, "bad url"],
            "width": [256, 256, None, 256, 256, None],
            "height": [256, 256, None, 256, 256, None],
            "original_width": [640, 800, None, 512, 512, None],
            "original_height": [480, 600, None, 512, 512, None],
            "exif": ["{}", "{}", None, "{}", "{}", None],
            "md5": ["x"] * count,
        }
    )

    response = submit(client, manifest, name="00000.parquet")
    batch = batch_of(response)
    run_chunks(batch)

    assert response.status_code == 202 and response.json()["record_count"] == count
    batch.refresh_from_db()
    assert batch.format == "parquet"
    assert list(
        BatchResult.objects.filter(batch=batch).values_list("record_id", "row", "decision")
    ) == [("000000", 1, "exclude"), ("000001", 2, "exclude"), ("000005", 6, "invalid")]
    assert (batch.excluded_count, batch.invalid_count) == (2, 1)


def test_a_manifest_pdq_quality_column_is_read_in_every_format(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    assert ORIGINAL.pdq_only is not None and (BARE.pdq_only or -1) < ORIGINAL.pdq_only
    # As close as the rule allows a PDQ alone when the record states its quality.
    pdq = flip_bits(registry.photo.pdq, ORIGINAL.pdq_only, random.Random(5))
    ids = ["stated", "bare", "too-high"]
    qualities: list[int | None] = [100, None, 101]
    manifests = {
        "jsonl": jsonl(
            {"id": i, "pdq": pdq, **({} if q is None else {"pdq_quality": q})}
            for i, q in zip(ids, qualities, strict=True)
        ),
        "csv": b"id,pdq,pdq_quality\n"
        + "".join(
            f"{i},{pdq},{'' if q is None else q}\n" for i, q in zip(ids, qualities, strict=True)
        ).encode(),
        "parquet": parquet({"id": ids, "pdq": [pdq] * 3, "pdq_quality": qualities}),
    }

    decided = {}
    for index, (fmt, manifest) in enumerate(manifests.items()):
        batch = batch_of(submit(client, manifest, name=f"m.{fmt}", key=str(index)))
        run_chunks(batch)
        decided[fmt] = list(
            BatchResult.objects.filter(batch=batch).values_list("record_id", "decision", "reason")
        )

    # A blank or missing quality is a bare PDQ (the stricter rule): allowed.
    expected = [
        ("stated", "exclude", ""),
        ("too-high", "invalid", "pdq_quality must be an integer from 0 to 100"),
    ]
    assert decided == dict.fromkeys(manifests, expected)


def test_a_manifest_colour_column_is_read_in_every_format_and_shown_in_the_exclusions(
    client: APIClient,
) -> None:
    """The registered photo carries the coffee cup's colours: a record with the
    same hashes and the cup's colours is excluded (its evidence naming the colour
    distance in every download format), with the cat's allowed, with none
    excluded; a malformed colour makes its row invalid."""
    coffee = colour_signature(skimage_photo("coffee"))
    cat = colour_signature(skimage_photo("chelsea"))
    registry = registry_with_opt_outs()
    Photo.objects.filter(pk=registry.photo.pk).update(colour=coffee)
    photo = registry.photo
    ids = ["same", "other", "none", "bad"]
    colours: list[str | None] = [coffee, cat, None, coffee[:-2]]
    manifests = {
        "jsonl": jsonl(
            {
                "id": i,
                "pdq": photo.pdq,
                "phash": photo.phash,
                "pdq_quality": 100,
                **({} if c is None else {"colour": c}),
            }
            for i, c in zip(ids, colours, strict=True)
        ),
        "csv": b"id,pdq,phash,pdq_quality,colour\n"
        + "".join(
            f"{i},{photo.pdq},{photo.phash},100,{c or ''}\n"
            for i, c in zip(ids, colours, strict=True)
        ).encode(),
        "parquet": parquet(
            {
                "id": ids,
                "pdq": [photo.pdq] * 4,
                "phash": [photo.phash] * 4,
                "pdq_quality": [100] * 4,
                "colour": colours,
            }
        ),
    }

    for index, (fmt, manifest) in enumerate(manifests.items()):
        batch = batch_of(submit(client, manifest, name=f"m.{fmt}", key=str(index)))
        run_chunks(batch)

        decided = BatchResult.objects.filter(batch=batch).values_list(
            "record_id", "decision", "reason"
        )
        assert sorted(decided) == sorted(
            [
                ("same", "exclude", ""),
                ("none", "exclude", ""),
                ("bad", "invalid", "colour must be 66 hexadecimal digits"),
            ]
        ), fmt
        base = f"/api/v1/batches/{batch.public_id}/exclusions"
        _, body_j = download(client, f"{base}?format=jsonl")
        _, body_c = download(client, f"{base}?format=csv")
        _, body_p = download(client, f"{base}?format=parquet")
        rows = jsonl_rows(body_j)
        evidence = {row["id"]: row["matches"][0]["evidence"] for row in rows}
        assert (evidence["same"]["colour_distance"], evidence["same"]["colour_threshold"]) == (
            0.0,
            COLOUR_THRESHOLD,
        )
        assert (evidence["none"]["colour_distance"], evidence["none"]["colour_threshold"]) == (
            None,
            None,
        )
        from_csv = [
            json.loads(row["matches"]) for row in csv.DictReader(io.StringIO(body_c.decode()))
        ]
        assert from_csv == [row["matches"] for row in rows]
        assert pq.read_table(io.BytesIO(body_p)).to_pylist() == rows


def with_null_evidence(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**row, "matches": [{"evidence": None, **match} for match in row["matches"]]}
        if "matches" in row
        else row
        for row in rows
    ]


def test_exclusions_in_csv_parquet_and_jsonl_parse_back_equal(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    run_chunks(batch)
    base = f"/api/v1/batches/{batch.public_id}/exclusions"

    parsed = {}
    for decision in ("exclude", "invalid"):
        status_j, body_j = download(client, f"{base}?format=jsonl&decision={decision}")
        status_c, body_c = download(client, f"{base}?format=csv&decision={decision}")
        status_p, body_p = download(client, f"{base}?format=parquet&decision={decision}")
        assert (status_j, status_c, status_p) == (200, 200, 200)
        last = "matches" if decision == "exclude" else "reason"
        from_csv = [
            {
                "id": row["id"] or None,
                "row": int(row["row"]),
                last: json.loads(row[last]) if last == "matches" else row[last],
            }
            for row in csv.DictReader(io.StringIO(body_c.decode()))
        ]
        from_parquet = pq.read_table(io.BytesIO(body_p)).to_pylist()
        assert jsonl_rows(body_j) == from_csv
        # Parquet has a column for every field: a claim match's evidence is null
        # there, and absent from JSONL and CSV.
        assert with_null_evidence(jsonl_rows(body_j)) == from_parquet
        parsed[decision] = jsonl_rows(body_j)

    assert [row["row"] for row in parsed["exclude"]] == [1, 2, 6]
    assert [row["row"] for row in parsed["invalid"]] == [4, 5]
    exact, near, claimed = (row["matches"] for row in parsed["exclude"])
    assert [m["evidence"] for m in exact] == [SHA256_EVIDENCE]
    assert near == [near_match(registry)]
    assert [set(m) for m in claimed] == [{"kind", "distance", "threshold", "opt_out", "uses"}]
    response = client.get(f"{base}?format=parquet")
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert response["Content-Disposition"] == (
        f'attachment; filename="batch-{batch.public_id}-exclusions.parquet"'
    )
    assert client.get(f"{base}?format=csv&decision=invalid")["Content-Disposition"] == (
        f'attachment; filename="batch-{batch.public_id}-invalid.csv"'
    )


def test_exclusions_of_a_batch_without_any_are_valid_empty_files(client: APIClient) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}])))
    run_chunks(batch)
    base = f"/api/v1/batches/{batch.public_id}/exclusions"

    assert download(client, f"{base}?format=jsonl") == (200, b"")
    assert download(client, f"{base}?format=csv") == (200, b"id,row,matches\r\n")
    status, body = download(client, f"{base}?format=parquet")
    assert status == 200 and pq.read_table(io.BytesIO(body)).num_rows == 0


def test_unknown_exclusion_format_or_decision_is_400(client: APIClient) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}])))
    run_chunks(batch)
    base = f"/api/v1/batches/{batch.public_id}/exclusions"

    bad_format = client.get(f"{base}?format=xlsx")
    bad_decision = client.get(f"{base}?decision=allow")

    assert bad_format.status_code == 400
    assert bad_format.json()["fields"] == {
        "format": ["unknown format; allowed: jsonl, csv, parquet"]
    }
    assert bad_decision.status_code == 400
    assert bad_decision.json()["fields"] == {
        "decision": ["unknown decision; allowed: exclude, invalid"]
    }


def test_an_exclusions_parameter_given_twice_is_400_not_the_last_one_wins(
    client: APIClient,
) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}])))
    run_chunks(batch)
    base = f"/api/v1/batches/{batch.public_id}/exclusions"

    response = client.get(f"{base}?format=csv&format=jsonl")

    assert response.status_code == 400
    assert response.json()["fields"] == {"format": ["give this parameter once"]}


@pytest.mark.parametrize("query", ["page_size=0", "page_size=1001", "page_size=null", "page=x"])
def test_a_bad_page_of_batches_is_a_documented_400(client: APIClient, query: str) -> None:
    schema = client.get("/api/schema/?format=json").json()

    response = client.get(f"/api/v1/batches?{query}")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "400" in schema["paths"]["/api/v1/batches"]["get"]["responses"]


# --- webdataset shards ----------------------------------------------------------------


def test_a_webdataset_shard_is_spooled_hashed_deleted_and_decided(
    client: APIClient,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    registered = jpeg_bytes(1)
    hashes = hashing.hash_bytes(registered)
    creator = CreatorFactory()
    PhotoFactory(creator=creator, sha256=hashes.sha256, pdq=hashes.pdq, phash=hashes.phash)
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    recompressed = encode(generated_photo(1), "JPEG", quality=60)
    near = hashing.hash_bytes(recompressed)
    assert near.sha256 != hashes.sha256
    assert hashing.hamming(near.pdq, hashes.pdq) <= 31
    shard = tar(
        [
            ("shard/000.jpg", registered),
            ("shard/000.json", b'{"caption": "x"}'),
            ("shard/001.jpg", recompressed),
            ("shard/002.png", encode(generated_photo(2), "PNG")),
            ("shard/002.json", b'{"url": "https://elsewhere.org/2.png"}'),
            ("shard/003.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG"),
            ("shard/004.json", b"[[[" * 10_000),
            ("shard/004.txt", b"caption only"),
        ]
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = submit(client, shard, name="shard-000.tar")
    batch = batch_of(response)
    spool = Path(batch.spool_path)
    spooled = spool.read_bytes()
    hashed = batch_shard_hash_task(batch.pk)
    hashed_again = batch_shard_hash_task(batch.pk)
    stored = [r for chunk in batch.chunks.all() for r in chunk.records]
    run_chunks(batch)

    assert response.status_code == 202
    assert response.json()["record_count"] == 0 and response.json()["status"] == "queued"
    assert len(callbacks) == 1  # the hash task
    assert spool.parent == Path(settings.OPTOUT_SPOOL_DIR) and spool.name == str(batch.public_id)
    assert spooled == shard
    assert (hashed, hashed_again) == (True, False)
    assert not spool.exists() and list(spool.parent.iterdir()) == []
    batch.refresh_from_db()
    assert (batch.status, batch.format, batch.record_count, batch.spool_path) == (
        "done",
        "webdataset",
        5,
        "",
    )
    results = {
        r.record_id: (r.row, r.decision, r.reason, [m["kind"] for m in r.matches])
        for r in BatchResult.objects.filter(batch=batch)
    }
    assert set(results) == {"shard/000", "shard/001", "shard/003", "shard/004"}
    assert results["shard/000"][:2] == (1, "exclude")
    assert "sha256" in results["shard/000"][3] and "pdq" in results["shard/000"][3]
    assert results["shard/001"][:2] == (2, "exclude") and "sha256" not in results["shard/001"][3]
    assert results["shard/003"][:2] == (4, "invalid")
    assert results["shard/003"][2] == "image truncated: image file is truncated"
    assert results["shard/004"] == (5, "invalid", "record has none of sha256, pdq, phash, url", [])
    assert len(stored) == 5 and all("image" not in record for record in stored)
    assert stored[2]["url"] == "https://elsewhere.org/2.png"
    # Once decided, the registry keeps the results, not the pipeline's records.
    assert [bytes(chunk.payload) for chunk in batch.chunks.all()] == [b""]


def test_a_shard_image_is_decided_with_the_colour_its_hashing_gives_it(
    client: APIClient, settings: Settings
) -> None:
    """The worker puts the colour signature registry.hashing computes into the
    record (none while hashing computes none): the photo registered with the
    same hashes but the cat's colours then no longer matches the coffee cup."""
    data = encode(skimage_photo("coffee"), "JPEG", quality=90)
    hashes = hashing.hash_bytes(data, max_bytes=settings.OPTOUT_MAX_PHOTO_BYTES, fast=True)
    creator = CreatorFactory()
    PhotoFactory(
        creator=creator,
        pdq=hashes.pdq,
        phash=hashes.phash,
        colour=colour_signature(skimage_photo("chelsea")),
    )
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    batch = batch_of(submit(client, tar([("s/000.jpg", data)]), name="s.tar"))

    assert batch_shard_hash_task(batch.pk) is True
    [stored] = [r for chunk in batch.chunks.all() for r in chunk.records]
    run_chunks(batch)

    batch.refresh_from_db()
    results = list(BatchResult.objects.filter(batch=batch))  # exclusions only
    assert (batch.status, batch.record_count, batch.invalid_count) == ("done", 1, 0)
    if hashes.colour:
        assert stored["colour"] == hashes.colour
        assert (batch.excluded_count, results) == (0, [])
    else:
        assert "colour" not in stored
        assert batch.excluded_count == 1
        assert results[0].matches[0]["evidence"]["colour_distance"] is None


def test_a_captioned_copy_is_excluded_through_its_middle_band_in_shards_and_manifests(
    client: APIClient,
) -> None:
    """The coffee cup registered with its variants; a copy with captions on
    black bars is sent as a webdataset image (the worker hashes it, band
    included) and as manifest rows with and without its ``band`` column. Its
    own hashes are beyond the rule: only the band finds it."""
    original = encode(skimage_photo("coffee"), "JPEG", quality=92)
    hashes, derived = variants.hash_bytes_with_variants(original)
    creator = CreatorFactory()
    PhotoFactory(
        creator=creator,
        sha256=hashes.sha256,
        pdq=hashes.pdq,
        pdq_quality=hashes.pdq_quality,
        phash=hashes.phash,
        colour=hashes.colour,
        variants=variants.variants_pack(derived),
        variant_colours=variants.colours_pack(derived),
    )
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    copy = encode(meme_captions(skimage_photo("coffee")), "JPEG", quality=90)
    record = hashing.hash_bytes(copy)
    band_pdq, band_phash, _ = hashing.band_split(record.band)
    fields = "id,pdq,phash,pdq_quality,colour,band"
    row = f"{record.pdq},{record.phash},{record.pdq_quality},{record.colour}"
    manifest = f"{fields}\nwith,{row},{record.band}\nwithout,{row},\nbad,{row},{record.band}0\n"

    shard = batch_of(submit(client, tar([("s/000.jpg", copy)]), name="s.tar", key="shard"))
    assert batch_shard_hash_task(shard.pk) is True
    [stored] = [r for chunk in shard.chunks.all() for r in chunk.records]
    rows = batch_of(submit(client, manifest.encode(), name="m.csv", key="csv"))
    for batch in (shard, rows):
        run_chunks(batch)

    assert stored["band"] == hashing.hash_bytes(copy, fast=True).band
    [excluded] = BatchResult.objects.filter(batch=shard, decision="exclude")
    assert excluded.matches[0]["evidence"]["variant"] == "band"
    decided = BatchResult.objects.filter(batch=rows).values_list("record_id", "decision", "reason")
    # Results hold exclusions and invalid rows: "without" (no band) was allowed.
    assert sorted(decided) == [
        ("bad", "invalid", "band must be 82 hexadecimal digits"),
        ("with", "exclude", ""),
    ]
    evidence = BatchResult.objects.get(batch=rows, record_id="with").matches[0]["evidence"]
    assert (evidence["variant"], evidence["phash_threshold"]) == ("band", 4)
    [band] = [v for v in derived if v.name == "band"]
    assert evidence["pdq_distance"] == hashing.hamming(band_pdq, band.pdq)
    assert evidence["phash_distance"] == hashing.hamming(band_phash, band.phash)


def test_a_shard_whose_spool_file_is_lost_fails_with_a_reason(client: APIClient) -> None:
    batch = batch_of(submit(client, tar([("a.jpg", jpeg_bytes(5))]), name="s.tar"))
    Path(batch.spool_path).unlink()

    assert batch_shard_hash_task(batch.pk) is False

    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.failure_reason.startswith("the uploaded shard was lost before it could be hashed")
    assert batch.finished_at is not None and batch.spool_path == ""
    detail = client.get(f"/api/v1/batches/{batch.public_id}").json()
    assert detail["status"] == "failed" and detail["failure_reason"] == batch.failure_reason
    assert detail["receipt"] is None and detail["progress"] == 0.0
    exclusions = client.get(f"/api/v1/batches/{batch.public_id}/exclusions")
    assert exclusions.status_code == 409
    assert exclusions.json()["detail"] == f"batch failed: {batch.failure_reason}"


def test_a_file_that_is_not_a_tar_is_400_and_spools_nothing(
    client: APIClient, settings: Settings
) -> None:
    response = submit(client, b"x" * 600, name="shard.tar")

    assert response.status_code == 400
    assert response.json()["detail"] == "shard.tar does not look like the file its name says"
    spool = Path(settings.OPTOUT_SPOOL_DIR)
    assert not spool.exists() or list(spool.iterdir()) == []


# --- other organizations, listing --------------------------------------------------


def test_another_organization_gets_404_for_a_batch_and_its_exclusions(client: APIClient) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}])))
    run_chunks(batch)
    other = pipeline_client(OrganizationFactory())

    detail = other.get(f"/api/v1/batches/{batch.public_id}")
    exclusions = other.get(f"/api/v1/batches/{batch.public_id}/exclusions")
    missing = client.get("/api/v1/batches/00000000-0000-0000-0000-000000000000")

    for response in (detail, exclusions, missing):
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "detail": "Not found."}
    assert other.get("/api/v1/batches").json()["results"] == []


def test_list_shows_own_batches_newest_first_paginated(client: APIClient) -> None:
    ids = [
        submit(client, jsonl([{"id": str(i), "sha256": "ab" * 32}]), key=str(i)).json()["id"]
        for i in range(3)
    ]
    pipeline_client(OrganizationFactory())  # another organization's key, no batches

    page = client.get("/api/v1/batches?page_size=2").json()
    rest = client.get("/api/v1/batches?page_size=2&page=2").json()

    assert page["count"] == 3
    assert [item["id"] for item in page["results"] + rest["results"]] == ids[::-1]
    assert page["results"][0]["status"] == "queued"


def test_batches_need_an_api_key_with_the_batches_scope(organization: Organization) -> None:
    lookup_only = pipeline_client(organization, scopes=["lookup"])
    anonymous = APIClient()

    denied = submit(lookup_only, jsonl([{"id": "a", "sha256": "ab" * 32}]))
    listing = lookup_only.get("/api/v1/batches")
    unauthenticated = anonymous.get("/api/v1/batches")

    assert denied.status_code == 403
    assert denied.json() == {
        "error": "permission_denied",
        "detail": "This API key lacks the 'batches' scope.",
    }
    assert listing.status_code == 403
    assert unauthenticated.status_code == 401
    assert Batch.objects.count() == 0


# --- failures, the sweeper -------------------------------------------------------------


def test_sweeper_reenqueues_an_expired_lease_and_a_lost_wake_up_but_not_a_live_lease(
    client: APIClient,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    registry = registry_with_opt_outs()
    settings.OPTOUT_CHUNK_RECORDS = 1
    batch = batch_of(
        submit(
            client,
            jsonl(
                [
                    {"id": "a", "sha256": registry.photo.sha256},
                    {"id": "b", "sha256": "ab" * 32},
                    {"id": "c", "sha256": "cd" * 32},
                ]
            ),
        )
    )
    expired, live, never = batch.chunks.order_by("index")
    now = timezone.now()
    Chunk.objects.filter(pk=expired.pk).update(
        lease_expires_at=now - timedelta(seconds=5), attempts=1
    )
    Chunk.objects.filter(pk=live.pk).update(lease_expires_at=now + timedelta(minutes=5), attempts=1)

    with django_capture_on_commit_callbacks(execute=False) as soon_callbacks:
        soon = batches.batch_chunks_sweep(now=now)
    with django_capture_on_commit_callbacks(execute=False) as later_callbacks:
        later = batches.batch_chunks_sweep(now=now + timedelta(seconds=601))

    assert soon.chunks == [expired.pk] and len(soon_callbacks) == 1
    # A lease period later the never-leased chunk lost its wake-up, and the live lease expired.
    assert later.chunks == [expired.pk, live.pk, never.pk] and len(later_callbacks) == 3

    assert batch_chunk_decide_task(expired.pk) is True
    assert Chunk.objects.get(pk=expired.pk).attempts == 2
    assert batch_chunk_decide_task(live.pk) is False  # its lease still runs
    Chunk.objects.filter(pk=live.pk).update(lease_expires_at=now - timedelta(seconds=1))
    assert [batch_chunk_decide_task(live.pk), batch_chunk_decide_task(never.pk)] == [True, True]
    batch.refresh_from_db()
    assert (batch.status, batch.excluded_count) == ("done", 1)
    assert batches.batch_chunks_sweep(now=now + timedelta(hours=1)).chunks == []


def test_sweeper_reenqueues_stale_shards_finalizes_stuck_batches_and_removes_orphans(
    client: APIClient,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    shard_batch = batch_of(submit(client, tar([("a.jpg", jpeg_bytes(5))]), name="s.tar", key="1"))
    stuck = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}]), key="2"))
    chunk = stuck.chunks.get()
    # The last chunk was recorded but finalizing failed (a signing error, a crash).
    batches._batch_start(stuck.pk)
    batches._chunk_record(chunk, [])
    orphan = Path(settings.OPTOUT_SPOOL_DIR) / "d6f1c6a2-0000-4000-8000-000000000000"
    orphan.write_bytes(b"image bytes of a crashed request")
    old = (timezone.now() - timedelta(hours=1)).timestamp()
    import os

    os.utime(orphan, (old, old))
    os.utime(shard_batch.spool_path, (old, old))
    later = timezone.now() + batches.SHARD_STALE_AFTER + timedelta(seconds=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sweep = batches.batch_chunks_sweep(now=later)

    assert sweep.shards == [shard_batch.pk] and len(callbacks) == 1
    assert sweep.finalized == [stuck.pk]
    stuck.refresh_from_db()
    assert stuck.status == "done" and stuck.receipt is not None
    assert sweep.spool_files_removed == 1
    assert not orphan.exists() and Path(shard_batch.spool_path).exists()
    assert batch_chunks_sweep_task() == 0  # nothing left that is due now


def test_a_failing_chunk_releases_its_lease_and_a_poison_chunk_fails_the_batch(
    client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}])))
    chunk = batch.chunks.get()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("snapshot unavailable")

    monkeypatch.setattr(batches, "_chunk_decisions", broken)
    with pytest.raises(RuntimeError, match="snapshot unavailable"):
        batches.batch_chunk_decide(chunk_id=chunk.pk)
    released = Chunk.objects.get(pk=chunk.pk)
    Chunk.objects.filter(pk=chunk.pk).update(attempts=batches.CHUNK_MAX_ATTEMPTS)
    poisoned = batches.batch_chunk_decide(chunk_id=chunk.pk)

    assert (released.status, released.lease_expires_at, released.attempts) == ("pending", None, 1)
    assert released.records == [{"row": 1, "id": "a", "sha256": "ab" * 32}]
    assert poisoned is False
    assert Chunk.objects.get(pk=chunk.pk).records == []  # nothing will decide it now
    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.failure_reason == "chunk 0 could not be decided in 8 attempts"
    assert BatchResult.objects.filter(batch=batch).count() == 0
    # A failed batch's chunks are nobody's work any more.
    Chunk.objects.filter(pk=chunk.pk).update(lease_expires_at=None)
    assert batches.batch_chunks_sweep(now=timezone.now() + timedelta(hours=1)).chunks == []


def test_values_json_cannot_store_become_invalid_records_not_errors(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    lines = (
        b'{"id": NaN, "sha256": "' + registry.photo.sha256.encode() + b'"}\n'
        b'{"id": {"nested": [1, 2]}, "url": "https://a.org/"}\n'
        b'{"id": "inf", "pdq": Infinity}\n'
        b'{"id": "nul\\u0000", "url": "https://a.org/"}\n'
        b'{"id": "half \\ud800 a pair", "url": "https://a.org/"}\n'
        b'{"id": ["x\\u0000"], "url": "https://a.org/"}\n'
    )
    binary = parquet(
        {
            "id": [1, 2],
            "sha256": [bytes.fromhex(registry.photo.sha256), b"\x00" * 32],
            "url": [None, None],
        }
    )

    lines_batch = batch_of(submit(client, lines, key="1"))
    binary_batch = batch_of(submit(client, binary, name="m.parquet", key="2"))
    run_chunks(lines_batch)
    run_chunks(binary_batch)

    assert list(
        BatchResult.objects.filter(batch=lines_batch).values_list(
            "row", "record_id", "decision", "reason"
        )
    ) == [
        (1, "nan", "exclude", ""),
        (2, "", "invalid", "id is required"),
        (3, "inf", "invalid", "pdq must be 64 hexadecimal digits"),
        (4, "", "invalid", "a value holds a NUL character or invalid Unicode"),
        (5, "", "invalid", "a value holds a NUL character or invalid Unicode"),
        (6, "", "invalid", "a value holds a NUL character or invalid Unicode"),
    ]
    assert list(
        BatchResult.objects.filter(batch=binary_batch).values_list("row", "record_id", "decision")
    ) == [(1, "1", "exclude")]


def test_operators_see_batches_chunks_and_results_read_only(
    client: APIClient, admin_client: object
) -> None:
    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    run_chunks(batch)
    pages = {
        "batches": f"/admin/optout/batch/?status=done&q={batch.public_id}",
        "batch": f"/admin/optout/batch/{batch.pk}/change/",
        "chunks": f"/admin/optout/chunk/?q={batch.public_id}",
        "chunk": f"/admin/optout/chunk/{batch.chunks.get().pk}/change/",
        "results": f"/admin/optout/batchresult/?q={batch.public_id}&decision=exclude",
    }

    responses = {name: admin_client.get(url) for name, url in pages.items()}  # type: ignore[attr-defined]

    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(pages, 200)
    assert str(batch.public_id) in responses["batches"].content.decode()
    batch_page = responses["batch"].content.decode()
    assert "1 / 1" in batch_page and "excluded_ids_sha256" in batch_page
    assert f"/admin/optout/batchresult/?q={batch.public_id}" in batch_page
    assert "Save" not in batch_page  # read-only
    assert "exact" in responses["results"].content.decode()
    assert "claimed" in responses["results"].content.decode()
    assert "short" not in responses["results"].content.decode()  # an invalid row, filtered out
    assert admin_client.post(f"/admin/optout/batch/{batch.pk}/delete/").status_code == 403  # type: ignore[attr-defined]


def test_operators_see_shard_answers_read_only(client: APIClient, admin_client: Client) -> None:
    from optout.models import ChunkShardResult

    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    chunk = batch.chunks.get()
    answer = ChunkShardResult.objects.create(
        chunk=chunk, shards=2, shard=1, decisions=[], registry_version=7
    )

    listing = admin_client.get(f"/admin/optout/chunkshardresult/?q={batch.public_id}&shard=1")
    other = admin_client.get(
        "/admin/optout/chunkshardresult/?q=00000000-0000-0000-0000-000000000000"
    )
    page = admin_client.get(f"/admin/optout/chunkshardresult/{answer.pk}/change/")

    assert [row.pk for row in listing.context["cl"].result_list] == [answer.pk]
    assert list(other.context["cl"].result_list) == []
    assert page.status_code == 200 and "Save" not in page.content.decode()
    assert (
        admin_client.post(f"/admin/optout/chunkshardresult/{answer.pk}/delete/").status_code == 403
    )


def test_the_list_costs_the_same_queries_for_one_batch_or_many(client: APIClient) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    submit(client, jsonl([{"id": "0", "sha256": "ab" * 32}]), key="0")
    with CaptureQueriesContext(connection) as one:
        assert len(client.get("/api/v1/batches").json()["results"]) == 1
    for index in range(1, 4):
        submit(client, jsonl([{"id": str(index), "sha256": "ab" * 32}]), key=str(index))

    with CaptureQueriesContext(connection) as four:
        assert len(client.get("/api/v1/batches").json()["results"]) == 4

    # The key (with its organization), the page count, the page.
    assert len(one) == len(four) == 4


def test_submissions_are_rate_limited_per_key_but_reading_is_not(
    client: APIClient, settings: Settings
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"batches": "2/min"},
    }
    manifest = jsonl([{"id": "a", "sha256": "ab" * 32}])

    codes = [submit(client, manifest, key=str(index)).status_code for index in range(3)]
    reads = [client.get("/api/v1/batches").status_code for _ in range(3)]

    assert codes == [202, 202, 429]
    assert reads == [200, 200, 200]
    assert Batch.objects.count() == 2


class CountingPayload(FakePayload):
    """A request body that counts the bytes the application reads from it."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readline(self, size: int = -1, /) -> bytes:
        data = super().readline(size)
        self.bytes_read += len(data)
        return data


def test_a_manifest_far_over_the_limit_is_refused_before_its_body_is_read(
    client: APIClient, settings: Settings
) -> None:
    settings.OPTOUT_MAX_MANIFEST_BYTES = 1000
    manifest = jsonl([{"id": f"r{i}", "url": f"https://a.org/{i}"} for i in range(100_000)])
    body = encode_multipart(
        BOUNDARY,
        {"manifest": SimpleUploadedFile("m.jsonl", manifest), "use": "ai_training"},
    )
    payload = CountingPayload(body)
    assert len(body) > 3_000_000

    response = client.generic(
        "POST",
        "/api/v1/batches",
        body,
        content_type=MULTIPART_CONTENT,
        HTTP_IDEMPOTENCY_KEY="far",
        **{"wsgi.input": payload},
    )

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "The manifest is larger than the limit of 1000 bytes.",
    }
    # Not one byte of the body was read (its Content-Length decided).
    assert payload.bytes_read == 0
    assert Batch.objects.count() == 0 and PipelineRequest.objects.count() == 0


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "parquet"])
def test_exclusions_are_streamed_in_pieces_read_from_the_database_as_they_go(
    client: APIClient, output_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from optout import exclusions

    registry = registry_with_opt_outs()
    batch = batch_of(submit(client, b"\n".join(mixed_records(registry))))
    run_chunks(batch)
    monkeypatch.setattr(exclusions, "ROWS_PER_PIECE", 2)

    with CaptureQueriesContext(connection) as answering:
        response = client.get(
            f"/api/v1/batches/{batch.public_id}/exclusions?format={output_format}"
        )
    with CaptureQueriesContext(connection) as streaming:
        pieces = [piece for piece in response.streaming_content if piece]  # type: ignore[attr-defined]

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    # The results are read while the body is sent, not before the answer starts.
    assert not any("optout_batchresult" in q["sql"] for q in answering.captured_queries)
    assert any("optout_batchresult" in q["sql"] for q in streaming.captured_queries)
    # Three exclusions, two rows a piece: more than one piece.
    assert len(pieces) >= 2
    if output_format == "jsonl":
        assert [row["id"] for row in jsonl_rows(b"".join(pieces))] == ["exact", "near", "claimed"]


def test_the_sweeper_is_scheduled_every_minute_on_the_beat_the_workers_read(
    settings: Settings,
) -> None:
    from config.celery import app

    entry = app.conf.beat_schedule["batch-chunks-sweep"]

    assert entry["task"] == batch_chunks_sweep_task.name
    assert batch_chunks_sweep_task.name in app.tasks
    assert float(entry["schedule"]) <= 60
    # A swept chunk is taken again once its lease ran out: the sweep is more
    # frequent than a lease is long.
    assert float(entry["schedule"]) < settings.OPTOUT_CHUNK_LEASE_SECONDS


@pytest.mark.parametrize(
    "route", ["submit", "list", "detail", "exclusions"], ids=lambda route: route
)
@pytest.mark.parametrize(
    ("header", "status", "detail"),
    [
        (lambda org: f"Api-Key {revoked_api_key(org)}", 401, "Invalid or revoked API key."),
        (lambda org: f"Api-Key {expired_api_key(org)}", 401, "This API key has expired."),
        (lambda org: "Api-Key not.a-key", 401, "Invalid or revoked API key."),
        (lambda org: "Api-Key", 401, "Malformed Authorization header: expected 'Api-Key <key>'."),
        (lambda org: "Api-Key é", 401, "API key contains invalid characters."),
    ],
    ids=["revoked", "expired", "garbled", "no-key", "non-ascii"],
)
def test_batch_routes_refuse_revoked_expired_and_garbled_keys_with_json(
    client: APIClient, organization: Organization, route: str, header: Any, status: int, detail: str
) -> None:
    batch = batch_of(submit(client, jsonl([{"id": "a", "sha256": "ab" * 32}]), key="mine"))
    run_chunks(batch)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=header(organization))
    base = f"/api/v1/batches/{batch.public_id}"

    if route == "submit":
        response = submit(other, jsonl([{"id": "b", "sha256": "cd" * 32}]), key="theirs")
    else:
        response = other.get(
            {"list": "/api/v1/batches", "detail": base, "exclusions": f"{base}/exclusions"}[route]
        )

    assert response.status_code == status
    assert response.json() == {"error": "authentication_failed", "detail": detail}
    assert response["WWW-Authenticate"] == "Api-Key"
    assert Batch.objects.count() == 1
