"""Records carry keypoints (registry.keypoints) wherever a pipeline sends them:
a lookup record's ``keypoints`` key, a manifest's ``keypoints`` column or key
(CSV, TSV, JSONL, Parquet), and the keypoints the worker computes for each
image of a webdataset shard. A perceptual match of a photo registered with
keypoints then stands only when enough of the record's agree geometrically
(optout/matching/decide.py), and the evidence says how many did.

The photos are real (scikit-image's coffee cup and cat): keypoints of
generated noise would say nothing about photographs. They are black and
white: where colours can confirm a match the workers' fast hashing computes
no keypoints (registry.hashing), and keypoints are the check grey copies need.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from optout import manifests
from optout.engine import engine_for
from optout.manifests import ManifestInvalid
from optout.models import Batch, BatchResult, Chunk, OptOut
from optout.services import opt_out_file
from optout.tasks import batch_chunk_decide_task, batch_shard_hash_task
from registry import hashing, keypoints
from registry.ledger import registry_version_current
from registry.models import Channel, Creator, Photo
from registry.services import photos_register_hashed
from registry.uploads import hash_files
from tests.factories import CreatorFactory, OrganizationFactory, PhotoFactory
from tests.images import encode, skimage_photo
from tests.optout.batch_helpers import (
    batch_environment,
    download,
    jsonl,
    jsonl_rows,
    parquet,
    pipeline_client,
    submit,
    tar,
    wait_done,
)
from tests.workers import worker_start, worker_stop

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

# The registry's rule: a match of a record whose colours cannot confirm it
# (this module's grey copies and colourless lookup records) needs this many
# agreeing keypoints (optout.matching.rule.GREY_KEYPOINT_INLIERS; a colour
# record 8, KEYPOINT_INLIERS).
KEYPOINT_THRESHOLD = 10
# This module's own Redis database for its real worker (the other numbers
# serve other tests: tests/optout/test_batch_worker.py and its neighbours).
WORKER_REDIS_DB = 12
NOT_KEYPOINTS = "not keypoints at all!"


# --- photos -------------------------------------------------------------------------


def grey(name: str) -> Image.Image:
    return skimage_photo(name).convert("L")


@cache
def original() -> bytes:
    """The registered photo: the coffee cup in black and white, as a creator
    uploads it."""
    return encode(grey("coffee"), "JPEG", quality=92)


@cache
def edited_copy() -> bytes:
    """A repost of the coffee cup: shrunk to 70 %, brightened, recompressed.
    Its PDQ and pHash are within the rule's box of the photo's."""
    image = grey("coffee")
    smaller = image.resize((image.width * 7 // 10, image.height * 7 // 10))
    return encode(ImageEnhance.Brightness(smaller).enhance(1.08), "JPEG", quality=70)


@cache
def cat_keypoints() -> str:
    """The keypoints of another photograph (the cat), as `optout hash` writes them."""
    return hashing.hash_bytes(encode(grey("chelsea"), "JPEG", quality=90)).keypoints


def photo_keypoints(image: Image.Image) -> bytes:
    """What a registered photo keeps: its keypoints and its mirror image's."""
    return keypoints.photo_keypoints_of(image)


def record(record_id: str, data: bytes, *, with_keypoints: str | None = None) -> dict[str, Any]:
    """A pipeline's record of an image: its hashes as `optout hash` computes
    them, and the given keypoints (none when None)."""
    hashes = hashing.hash_bytes(data)
    fields: dict[str, Any] = {
        "id": record_id,
        "pdq": hashes.pdq,
        "phash": hashes.phash,
        "pdq_quality": hashes.pdq_quality,
    }
    if with_keypoints is not None:
        fields["keypoints"] = with_keypoints
    return fields


def copy_records() -> list[dict[str, Any]]:
    """The edited copy four times: with its own keypoints (``copy``), with the
    cat's (``impostor``: the hashes of the cup, the corners of another
    photograph), with none (``bare``) and with malformed ones (``bad``)."""
    own = hashing.hash_bytes(edited_copy()).keypoints
    return [
        record("copy", edited_copy(), with_keypoints=own),
        record("impostor", edited_copy(), with_keypoints=cat_keypoints()),
        record("bare", edited_copy()),
        record("bad", edited_copy(), with_keypoints=NOT_KEYPOINTS),
    ]


def opt_out_all(creator: Creator) -> OptOut:
    return opt_out_file(
        creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )


def registered_coffee(**fields: Any) -> Photo:
    """The coffee cup's hashes registered with the given keypoints, opted out."""
    hashes = hashing.hash_bytes(original())
    creator = CreatorFactory()
    photo = PhotoFactory(
        creator=creator,
        pdq=hashes.pdq,
        phash=hashes.phash,
        pdq_quality=hashes.pdq_quality,
        **fields,
    )
    opt_out_all(creator)
    return photo


def lookup(client: APIClient, records: list[Any]) -> dict[str, dict[str, Any]]:
    response = client.post(
        "/api/v1/lookup", {"use": "ai_training", "records": records}, format="json"
    )
    assert response.status_code == 200, response.content
    return {result["id"]: result for result in response.json()["results"]}


@pytest.fixture
def client() -> APIClient:
    return pipeline_client(OrganizationFactory(name="Lab K"))


# --- lookups ------------------------------------------------------------------------


def test_a_lookup_record_with_keypoints_is_decided_and_bad_ones_make_it_invalid(
    client: APIClient,
) -> None:
    """Valid keypoints are part of a decided record; malformed ones, keypoints
    without a perceptual hash, or a key misspelling ``keypoints`` (lookup
    records are closed) make the record invalid, naming keypoints."""
    good = hashing.hash_bytes(edited_copy()).keypoints
    hashes = record("x", edited_copy())
    records = [
        {**hashes, "id": "good", "keypoints": good},
        {**hashes, "id": "not-base64", "keypoints": NOT_KEYPOINTS},
        {**hashes, "id": "cut", "keypoints": good[:-8]},
        {**hashes, "id": "number", "keypoints": 12},
        {"id": "alone", "sha256": "a" * 64, "keypoints": good},
        {**hashes, "id": "snake", "key_points": good},
        {**hashes, "id": "singular", "keypoint": good},
    ]

    results = lookup(client, records)

    assert results["good"]["decision"] == "allow"  # nothing is registered
    invalid = {rid: r["reason"] for rid, r in results.items() if r["decision"] == "invalid"}
    assert set(invalid) == {"not-base64", "cut", "number", "alone", "snake", "singular"}
    assert all(invalid[rid].startswith("keypoints") for rid in ("not-base64", "cut", "number"))
    assert invalid["alone"] == "keypoints need a pdq or a phash"
    assert invalid["snake"] == '"key_points" is not a field; did you mean "keypoints"?'
    assert invalid["singular"] == '"keypoint" is not a field; did you mean "keypoints"?'


def test_the_openapi_schema_documents_a_record_s_keypoints_and_their_evidence() -> None:
    schema = APIClient().get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]

    field = components["LookupRecordRequest"]["properties"]["keypoints"]
    evidence = components["MatchEvidence"]

    assert field["type"] == "string"
    assert "base64" in field["description"] and "optout hash" in field["description"]
    assert "keypoints" not in components["LookupRecordRequest"].get("required", [])
    for name in ("keypoint_inliers", "keypoint_threshold"):
        assert evidence["properties"][name]["type"] == "integer", name
        assert evidence["properties"][name]["nullable"] is True, name
        assert name in evidence["required"]


def test_an_edited_copy_of_an_uploaded_photo_is_excluded_only_with_keypoints_that_agree(
    client: APIClient,
) -> None:
    """The coffee cup registered as an upload is (registry.uploads, the
    photos page's path) and opted out. Its edited copy, looked up with its own
    keypoints, is excluded with the keypoints' evidence; the same hashes with
    the cat's keypoints are allowed; without keypoints the hashes alone decide."""
    creator = CreatorFactory()
    [outcome] = photos_register_hashed(
        creator=creator, items=hash_files([("coffee.jpg", original())]), channel=Channel.WEB
    )
    assert outcome.status == "registered"
    opt_out_all(creator)
    assert Photo.objects.get(public_id=outcome.photo).keypoints, (
        "registration stores no keypoints yet (registry/services.py, registry/uploads.py)"
    )

    results = lookup(client, copy_records()[:3])

    copy, impostor, bare = results["copy"], results["impostor"], results["bare"]
    assert copy["decision"] == "exclude"
    found = [match["evidence"] for match in copy["matches"]]
    assert all(e["keypoint_inliers"] >= KEYPOINT_THRESHOLD for e in found), found
    assert all(e["keypoint_threshold"] == KEYPOINT_THRESHOLD for e in found), found
    assert impostor["decision"] == "allow", impostor
    assert bare["decision"] == "exclude"
    assert all(
        (m["evidence"]["keypoint_inliers"], m["evidence"]["keypoint_threshold"]) == (None, None)
        for m in bare["matches"]
    )


# --- manifests ----------------------------------------------------------------------


@pytest.fixture
def batch_settings(settings: Settings, tmp_path: Path) -> Iterator[None]:
    yield from batch_environment(settings, tmp_path)


def run_chunks(batch: Batch) -> None:
    chunks = Chunk.objects.filter(batch=batch).order_by("index")
    for chunk_id in chunks.values_list("pk", flat=True):
        batch_chunk_decide_task(chunk_id)


def batch_of(response: Any) -> Batch:
    assert response.status_code == 202, response.content
    return Batch.objects.get(public_id=response.json()["id"])


def delimited(records: list[dict[str, Any]], delimiter: str) -> bytes:
    buffer = io.StringIO()
    columns = ["id", "pdq", "phash", "pdq_quality", "keypoints", "caption"]
    writer = csv.DictWriter(buffer, columns, delimiter=delimiter, extrasaction="ignore")
    writer.writeheader()
    for row in records:
        writer.writerow({**row, "caption": "a cup of coffee"})
    return buffer.getvalue().encode()


def manifests_of(records: list[dict[str, Any]]) -> dict[str, bytes]:
    return {
        "m.jsonl": jsonl(records),
        "m.csv": delimited(records, ","),
        "m.tsv": delimited(records, "\t"),
        "m.parquet": parquet(
            {
                name: [row.get(name) for row in records]
                for name in ("id", "pdq", "phash", "pdq_quality", "keypoints")
            }
        ),
    }


@pytest.mark.usefixtures("batch_settings")
def test_a_manifest_s_keypoints_are_read_in_every_format_and_decide_the_match(
    client: APIClient,
) -> None:
    """The coffee cup registered with its keypoints; the edited copy's rows in
    JSONL, CSV, TSV and Parquet: its own keypoints excluded with their
    evidence, the cat's allowed, none excluded on the hashes alone, malformed
    ones invalid naming keypoints."""
    registered_coffee(keypoints=photo_keypoints(grey("coffee")))

    for index, (name, manifest) in enumerate(manifests_of(copy_records()).items()):
        batch = batch_of(submit(client, manifest, name=name, key=f"k{index}"))
        run_chunks(batch)

        results = {r.record_id: r for r in BatchResult.objects.filter(batch=batch)}
        # Results hold exclusions and invalid rows: the impostor was allowed.
        assert set(results) == {"copy", "bare", "bad"}, name
        assert (results["bad"].decision, results["bad"].reason[:10]) == ("invalid", "keypoints:")
        assert results["copy"].decision == results["bare"].decision == "exclude"
        status, body = download(client, f"/api/v1/batches/{batch.public_id}/exclusions")
        assert status == 200
        evidence = {row["id"]: [m["evidence"] for m in row["matches"]] for row in jsonl_rows(body)}
        assert all(e["keypoint_inliers"] >= KEYPOINT_THRESHOLD for e in evidence["copy"]), name
        assert all(e["keypoint_threshold"] == KEYPOINT_THRESHOLD for e in evidence["copy"])
        assert all(e["keypoint_inliers"] is None for e in evidence["bare"]), name


def test_the_readers_keep_a_full_keypoints_value_and_refuse_the_column_twice() -> None:
    """A keypoints value as long as one set gets (128 keypoints, 5 808 base64
    characters) comes through each text reader whole; a header naming the
    column twice leaves in doubt which one holds the record."""
    full = cat_keypoints()
    assert len(full) == (len(keypoints.KEYPOINTS_MAGIC) + 1 + 128 * 34 + 2) // 3 * 4
    rows = [{"id": "r1", "pdq": "0f" * 32, "keypoints": full}]

    for name in ("m.csv", "m.tsv", "m.jsonl"):
        content = manifests_of(rows)[name]
        _, read = manifests.read_manifest(name, io.BytesIO(content))
        [(_, raw)] = list(read)
        assert isinstance(raw, dict) and raw["keypoints"] == full, name

    twice = f"id,pdq,keypoints,keypoints\nr1,{'0f' * 32},{full},{full}\n".encode()
    with pytest.raises(ManifestInvalid, match="keypoints"):
        list(manifests.read_csv(io.BytesIO(twice)))


# --- webdataset shards --------------------------------------------------------------


@pytest.mark.usefixtures("batch_settings")
def test_a_shard_image_is_stored_with_the_keypoints_its_hashing_gives_it(
    client: APIClient, settings: Settings
) -> None:
    """The worker's hashing of a shard image (the fast path) puts the image's
    keypoints into the chunk's record, which then decides the match."""
    registered_coffee(keypoints=photo_keypoints(grey("coffee")))
    batch = batch_of(submit(client, tar([("s/000.jpg", edited_copy())]), name="s.tar"))

    assert batch_shard_hash_task(batch.pk) is True
    [stored] = [r for chunk in batch.chunks.all() for r in chunk.records]
    run_chunks(batch)

    fast = hashing.hash_bytes(edited_copy(), max_bytes=settings.OPTOUT_MAX_PHOTO_BYTES, fast=True)
    assert fast.keypoints and stored["keypoints"] == fast.keypoints
    [excluded] = BatchResult.objects.filter(batch=batch)
    assert excluded.decision == "exclude"
    assert all(
        m["evidence"]["keypoint_inliers"] >= KEYPOINT_THRESHOLD
        and m["evidence"]["keypoint_threshold"] == KEYPOINT_THRESHOLD
        for m in excluded.matches
    )


@cache
def colour_copy() -> bytes:
    """A repost of the coffee cup in colour: shrunk to 70 %, brightened,
    recompressed."""
    image = skimage_photo("coffee")
    smaller = image.resize((image.width * 7 // 10, image.height * 7 // 10))
    return encode(ImageEnhance.Brightness(smaller).enhance(1.08), "JPEG", quality=70)


def uploaded_coffee(*, keypoints_of: Image.Image | None = None) -> Photo:
    """The colour coffee cup registered as the photos page registers it, opted
    out; ``keypoints_of``: its stored keypoints then are another image's (the
    cup's hashes and colours, another photograph's corners)."""
    creator = CreatorFactory()
    [outcome] = photos_register_hashed(
        creator=creator,
        items=hash_files([("coffee.jpg", encode(skimage_photo("coffee"), "JPEG", quality=92))]),
        channel=Channel.WEB,
    )
    opt_out_all(creator)
    photo = Photo.objects.get(public_id=outcome.photo)
    if keypoints_of is not None:
        photo.keypoints = photo_keypoints(keypoints_of)
        photo.save(update_fields=["keypoints"])
    return photo


def shard_hashed(client: APIClient, members: list[tuple[str, bytes]], **fields: Any) -> Batch:
    """A shard submitted and hashed as a worker hashes it; its chunks not yet decided."""
    batch = batch_of(submit(client, tar(members), name="s.tar", **fields))
    assert batch_shard_hash_task(batch.pk) is True
    batch.refresh_from_db()
    return batch


def stored_records(batch: Batch) -> dict[str, dict[str, Any]]:
    """The batch's chunk records by sample key."""
    return {r["id"]: r for chunk in batch.chunks.all() for r in chunk.records}


def own_keypoints(data: bytes) -> str:
    """An image's keypoints as the worker's fast hashing computes them."""
    _, luminance = hashing.hash_bytes_fast_deferred(data)
    return keypoints.to_text(keypoints.keypoints_of(luminance))


@pytest.mark.usefixtures("batch_settings")
def test_a_shard_image_gets_keypoints_when_a_match_would_check_them_colour_or_grey(
    client: APIClient,
) -> None:
    """Keypoints cost half as much as the hashes, so the worker computes them only
    for samples with a perceptual match against a photo registered with
    keypoints: the colour and the grey copy of the cup get them; a colour and
    a grey photograph that match nothing do not (before, every grey image
    did and no colour one)."""
    uploaded_coffee()
    members = [
        ("copy.jpg", colour_copy()),
        ("grey-copy.jpg", encode(grey("coffee"), "JPEG", quality=80)),
        ("astronaut.jpg", encode(skimage_photo("astronaut"), "JPEG", quality=85)),
        ("camera.jpg", encode(grey("camera"), "JPEG", quality=85)),
    ]

    batch = shard_hashed(client, members)

    stored = stored_records(batch)
    assert stored["copy"]["keypoints"] == own_keypoints(colour_copy())
    assert stored["grey-copy"]["keypoints"] == own_keypoints(members[1][1])
    assert "keypoints" not in stored["astronaut"] and "keypoints" not in stored["camera"]
    run_chunks(batch)
    excluded = {r.record_id: r for r in BatchResult.objects.filter(batch=batch)}
    assert set(excluded) == {"copy", "grey-copy"}
    for result in excluded.values():
        evidence = [m["evidence"] for m in result.matches]
        assert all(e["keypoint_inliers"] >= KEYPOINT_THRESHOLD for e in evidence), evidence


@pytest.mark.usefixtures("batch_settings")
def test_a_colour_shard_image_whose_keypoints_disagree_is_allowed(client: APIClient) -> None:
    """The cup's hashes and colours registered with the cat's corners: the
    colour copy's hashes and colours match, its keypoints do not agree, so it
    is allowed — colours alone decided it before. The same photo registered
    without keypoints (before they existed) gets no keypoints checked: the
    sample carries none and the match stands on the hashes and colours."""
    uploaded_coffee(keypoints_of=grey("chelsea"))
    batch = shard_hashed(client, [("copy.jpg", colour_copy())], key="impostor")
    assert "keypoints" in stored_records(batch)["copy"]
    run_chunks(batch)
    assert not BatchResult.objects.filter(batch=batch).exists()

    Photo.objects.update(keypoints=b"")
    batch = shard_hashed(client, [("copy.jpg", colour_copy())], key="no-keypoints")
    assert "keypoints" not in stored_records(batch)["copy"]
    run_chunks(batch)
    [excluded] = BatchResult.objects.filter(batch=batch)
    assert all(m["evidence"]["keypoint_inliers"] is None for m in excluded.matches)


@pytest.mark.usefixtures("batch_settings")
def test_a_shard_image_s_keypoints_follow_the_batch_s_thresholds(client: APIClient) -> None:
    """A batch that asks for thresholds its copy's hashes do not meet decides
    no match for it, so the worker computes no keypoints for it."""
    uploaded_coffee()

    batch = shard_hashed(
        client, [("copy.jpg", colour_copy())], key="strict", pdq_threshold=0, phash_threshold=0
    )

    assert "keypoints" not in stored_records(batch)["copy"]


@pytest.mark.usefixtures("batch_settings")
def test_a_split_index_gives_keypoints_to_every_shard_image(
    client: APIClient, settings: Settings
) -> None:
    """With the index split across workers (OPTOUT_SHARDS > 1) no engine of the
    hashing worker holds every photo to tell which samples a match needs
    keypoints for: every image gets them, colour or grey, matching or not."""
    settings.OPTOUT_SHARDS = 2
    members = [
        ("astronaut.jpg", encode(skimage_photo("astronaut"), "JPEG", quality=85)),
        ("camera.jpg", encode(grey("camera"), "JPEG", quality=85)),
    ]

    stored = stored_records(shard_hashed(client, members))

    assert stored["astronaut"]["keypoints"] == own_keypoints(members[0][1])
    assert stored["camera"]["keypoints"] == own_keypoints(members[1][1])


@pytest.mark.usefixtures("batch_settings")
def test_a_shard_is_checked_for_keypoints_at_the_version_its_chunks_are_decided_at(
    client: APIClient,
) -> None:
    """Hashing the shard fixes the batch's registry version: a photo
    registered afterwards is neither a reason for keypoints nor a match, and
    the engine keeps that version's entries while the batch waits."""
    batch = shard_hashed(client, [("copy.jpg", colour_copy())])
    version = batch.registry_version
    assert (batch.status, version) == ("queued", registry_version_current())
    assert "keypoints" not in stored_records(batch)["copy"]

    uploaded_coffee()
    engine = engine_for()
    with engine.current():  # caught up, as the next lookup would
        pass
    assert engine.loaded_version > version and engine.horizon == version
    run_chunks(batch)

    batch.refresh_from_db()
    assert (batch.status, batch.registry_version, batch.excluded_count) == ("done", version, 0)


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_checks_a_shard_image_s_keypoints_against_each_photo(
    broker: str, tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """Two creators registered the coffee cup's hashes and opted out: one with
    the cup's keypoints, one with the cat's. A real worker hashes the edited
    copy in a shard; only the first photo's match stands, with its evidence."""
    # Given
    client = pipeline_client(OrganizationFactory(name="Lab KW"))
    cup = registered_coffee(keypoints=photo_keypoints(grey("coffee")))
    registered_coffee(keypoints=photo_keypoints(grey("chelsea")))
    cup_opt_out = OptOut.objects.get(creator=cup.creator)
    log_path = tmp_path / "worker.log"

    # When
    worker = worker_start(broker, tmp_path, log_path, extra_env=worker_env)
    try:
        shard = tar([("s/000.jpg", edited_copy())])
        response = submit(client, shard, name="shard.tar", key="keypoints-shard")
        assert response.status_code == 202, response.content
        detail = wait_done(client, response.json()["id"], worker, log_path)
    finally:
        worker_stop(worker)

    # Then
    assert (detail["status"], detail["counts"]["excluded"]) == ("done", 1), detail
    status, body = download(client, f"/api/v1/batches/{detail['id']}/exclusions?format=jsonl")
    assert status == 200
    [row] = jsonl_rows(body)
    assert {m["opt_out"] for m in row["matches"]} == {str(cup_opt_out.public_id)}
    evidence = [m["evidence"] for m in row["matches"]]
    assert all(e["keypoint_inliers"] >= KEYPOINT_THRESHOLD for e in evidence), evidence
    assert all(e["keypoint_threshold"] == KEYPOINT_THRESHOLD for e in evidence), evidence
