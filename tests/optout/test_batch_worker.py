"""A real Celery worker, through real Redis, decides a 100 000-record batch and
hashes a webdataset shard, and its exclusions equal a brute-force oracle.

The oracle reads the registry with plain ORM queries and compares hashes with
plain Python integers: it shares no code with the snapshot loader or the
decision engine. The worker is a separate process on the pytest test database
(transaction=True) with its own Redis database number.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import ImageOps
from rest_framework.test import APIClient

from optout import receipts
from optout.matching import DEFAULT_THRESHOLDS
from optout.matching.rule import DEFAULT_RULE, QueryHashes, VariantHashes, rule_for
from optout.models import Batch, BatchResult, Chunk, OptOut, Organization
from optout.services import opt_out_file, opt_out_withdraw
from optout.tasks import batch_chunk_decide_task
from registry import hashing
from registry.models import Channel, Claim, Creator, Photo
from registry.variants import (
    Variant,
    variant_kind,
    variants_compute,
    variants_pack,
    variants_unpack,
)
from tests.factories import CreatorFactory, OrganizationFactory, PhotoFactory
from tests.images import encode, generated_photo, jpeg_bytes
from tests.optout.batch_helpers import (
    download,
    flip_bits,
    jsonl_rows,
    parquet,
    pipeline_client,
    submit,
    tar,
    wait_done,
)
from tests.workers import worker_start, worker_stop

# This module's own Redis database (the other numbers serve other tests).
WORKER_REDIS_DB = 4
RECORDS = 100_000
# The registry's rule (optout/matching/rule.py): its single-PDQ threshold, the
# photo's widest-on-PDQ box and the crop variants' box.
PDQ_ONLY = DEFAULT_RULE.kinds["original"].pdq_only or 0
BOX = max(DEFAULT_RULE.kinds["original"].both, key=lambda box: box.pdq)
CROP_BOX = DEFAULT_RULE.kinds["crop"].both[0]
WIDEST = DEFAULT_THRESHOLDS
BLOCKED_DOMAIN = "blocked.example"


# --- the registry and its oracle ---------------------------------------------------


@dataclass
class RegistryPhotos:
    covered: list[Photo]  # under an opt-out that applies to this organization's ai_training
    uncovered: list[Photo]  # other use, exception, withdrawn, or no opt-out at all
    with_variants: list[Photo]  # covered photos registered with derived variants


def random_variants(rng: random.Random) -> bytes:
    names = ("crop_centre_90", "mirror", "rotate_+2")
    return variants_pack(
        [Variant(name, rng.randbytes(32).hex(), 80, rng.randbytes(8).hex()) for name in names]
    )


def opt_out(creator: Creator, uses: list[str], scope: str = "all_photos", **kwargs: Any) -> OptOut:
    return opt_out_file(creator=creator, uses=uses, scope=scope, channel=Channel.WEB, **kwargs)


def registry_build(organization: Organization) -> RegistryPhotos:
    refusing_all = CreatorFactory()
    covered = PhotoFactory.create_batch(120, creator=refusing_all)
    opt_out(refusing_all, ["ai_training"])
    claim = Claim.objects.create(
        creator=refusing_all, kind="domain", value=BLOCKED_DOMAIN, registered_version=0
    )
    opt_out(refusing_all, ["ai_training"], "claims", claims=[claim.public_id])

    choosing = CreatorFactory()
    chosen = PhotoFactory.create_batch(80, creator=choosing)
    opt_out(
        choosing,
        ["data_mining", "ai_training"],
        "photos",
        photos=[p.public_id for p in chosen[:40]],
    )

    other_use = CreatorFactory()
    other_use_photos = PhotoFactory.create_batch(40, creator=other_use)
    opt_out(other_use, ["ai_inference", "data_mining"])

    granting = CreatorFactory()
    granting_photos = PhotoFactory.create_batch(40, creator=granting)
    opt_out(granting, ["ai_training"], exceptions=[organization.public_id])

    withdrawing = CreatorFactory()
    withdrawn_photos = PhotoFactory.create_batch(30, creator=withdrawing)
    withdrawn = opt_out(withdrawing, ["ai_training"])
    opt_out_withdraw(creator=withdrawing, opt_out_id=withdrawn.public_id, channel=Channel.WEB)

    nobody = PhotoFactory.create_batch(50, creator=CreatorFactory())
    rng = random.Random(7)
    with_variants = covered[:20]
    for photo in with_variants + nobody[:20]:
        photo.variants = random_variants(rng)
        photo.save(update_fields=["variants"])
    return RegistryPhotos(
        covered=covered + chosen[:40],
        uncovered=chosen[40:] + other_use_photos + granting_photos + withdrawn_photos + nobody,
        with_variants=with_variants,
    )


@dataclass
class Oracle:
    """The registry as brute force sees it: what applies to one organization's
    ai_training, read with plain queries. Every variant of every covered photo
    is judged by the registry's rule (optout.matching.rule, the specification)
    one by one: no index, no snapshot, no decide()."""

    sha256: set[str]
    variants: list[VariantHashes]
    pdq: list[int]  # -1: no PDQ
    phash: list[int]  # -1: no pHash
    domains: list[str]

    @classmethod
    def load(cls, organization: Organization) -> Oracle:
        photos: set[Photo] = set()
        domains: list[str] = []
        for row in OptOut.objects.filter(withdrawn_at__isnull=True):
            if "ai_training" not in row.uses or organization in row.exceptions.all():
                continue
            if row.scope == "all_photos":
                photos.update(Photo.objects.filter(creator=row.creator))
            photos.update(row.photos.all())
            domains += [c.value for c in row.claims.all() if c.kind == "domain"]
        variants = []
        for photo in photos:
            quality = 100 if photo.pdq_quality is None else photo.pdq_quality
            variants.append(VariantHashes("original", "original", photo.pdq, quality, photo.phash))
            variants += [
                VariantHashes(v.name, variant_kind(v.name), v.pdq, v.pdq_quality, v.phash)
                for v in variants_unpack(bytes(photo.variants))
            ]
        return cls(
            sha256={p.sha256 for p in photos},
            variants=variants,
            pdq=[int(v.pdq, 16) if v.pdq else -1 for v in variants],
            phash=[int(v.phash, 16) if v.phash else -1 for v in variants],
            domains=domains,
        )

    def kinds(self, record: dict[str, Any]) -> set[str]:
        """The kinds of match that exclude a record (empty: allowed)."""
        kinds = set()
        if record.get("sha256") in self.sha256:
            kinds.add("sha256")
        query = QueryHashes(
            pdq=record.get("pdq") or "",
            phash=record.get("phash") or "",
            pdq_quality=record.get("pdq_quality"),
        )
        rule = rule_for(query)
        pdq = int(query.pdq, 16) if query.pdq else -1
        phash = int(query.phash, 16) if query.phash else -1
        for variant, other_pdq, other_phash in zip(
            self.variants, self.pdq, self.phash, strict=True
        ):
            # Only pairs within the registry's widest distances can match.
            near = (
                pdq >= 0 and other_pdq >= 0 and (pdq ^ other_pdq).bit_count() <= WIDEST.pdq
            ) or (
                phash >= 0
                and other_phash >= 0
                and (phash ^ other_phash).bit_count() <= WIDEST.phash
            )
            if near and (evidence := rule.evaluate(query, variant)).matched:
                kinds.add("pdq" if evidence.pdq_distance is not None else "phash")
        if record.get("url"):
            host = urlsplit(record["url"]).hostname or ""
            if any(host == d or host.endswith("." + d) for d in self.domains):
                kinds.add("domain")
        return kinds


# --- the manifest -----------------------------------------------------------------------


def records_build(registry: RegistryPhotos, rng: random.Random) -> list[dict[str, Any]]:
    """100 000 random records with a few hundred planted near and far matches."""
    records: list[dict[str, Any]] = [
        {
            "id": f"r{index:06d}",
            "sha256": rng.randbytes(32).hex(),
            "pdq": rng.randbytes(32).hex() if index % 7 else None,
            "phash": rng.randbytes(8).hex(),
            "url": f"https://img{index % 97}.example.net/{index}.jpg",
        }
        for index in range(RECORDS)
    ]
    slots = iter(rng.sample(range(RECORDS), 800))

    def plant(**fields: Any) -> None:
        records[next(slots)].update(fields)

    for _ in range(60):
        plant(sha256=rng.choice(registry.covered).sha256)
    for _ in range(30):
        plant(sha256=rng.choice(registry.uncovered).sha256)
    # A PDQ alone (with its quality): up to the single-hash threshold.
    for distance in (0, 12, PDQ_ONLY, PDQ_ONLY + 1, 60):
        for _ in range(40):
            photo = rng.choice(registry.covered)
            plant(pdq=flip_bits(photo.pdq, distance, rng), phash=None, pdq_quality=90)
    # Both hashes: at a box's corner, and one bit beyond it on PDQ.
    for pdq_bits, phash_bits in ((BOX.pdq, BOX.phash), (BOX.pdq + 1, BOX.phash), (3, 2)):
        for _ in range(40):
            photo = rng.choice(registry.covered)
            plant(
                pdq=flip_bits(photo.pdq, pdq_bits, rng),
                phash=flip_bits(photo.phash, phash_bits, rng),
                pdq_quality=90,
            )
    # A bare pHash (no PDQ, no quality) never decides alone.
    for _ in range(40):
        plant(pdq=None, phash=rng.choice(registry.covered).phash)
    # Near a derived variant (a crop) of a photo registered with variants.
    for _ in range(40):
        plant(**near_crop(rng.choice(registry.with_variants), rng))
    for _ in range(60):
        plant(pdq=flip_bits(rng.choice(registry.uncovered).pdq, 3, rng), pdq_quality=90)
        plant(phash=flip_bits(rng.choice(registry.uncovered).phash, 2, rng))
    for index in range(30):
        plant(url=f"https://cdn{index}.{BLOCKED_DOMAIN}/{index}.jpg")
        plant(url=f"https://not{BLOCKED_DOMAIN}/{index}.jpg")  # no subdomain boundary
    for _ in range(20):
        plant(phash="not-hex")
    return records


def near_crop(photo: Photo, rng: random.Random) -> dict[str, Any]:
    """Record fields at the corner of the crop box from the photo's first
    derived variant (a crop: ``random_variants``)."""
    crop = variants_unpack(bytes(photo.variants))[0]
    return {
        "pdq": flip_bits(crop.pdq, CROP_BOX.pdq, rng),
        "phash": flip_bits(crop.phash, CROP_BOX.phash, rng),
        "pdq_quality": 90,
    }


def manifest_parquet(records: list[dict[str, Any]]) -> bytes:
    names = ("id", "sha256", "pdq", "phash", "url", "pdq_quality")
    return parquet({name: [r.get(name) for r in records] for name in names})


# --- waiting on the worker --------------------------------------------------------


def exclusions_by_row(
    client: APIClient, batch_id: str, decision: str = "exclude"
) -> dict[int, Any]:
    status, body = download(
        client, f"/api/v1/batches/{batch_id}/exclusions?format=jsonl&decision={decision}"
    )
    assert status == 200
    return {row["row"]: row for row in jsonl_rows(body)}


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_decides_100k_records_and_a_shard_exactly_like_brute_force(
    broker: str, tmp_path: Path, worker_env: dict[str, str]
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    organization = OrganizationFactory(name="Lab W")
    client = pipeline_client(organization)
    registry = registry_build(organization)
    rng = random.Random(20261102)
    records = records_build(registry, rng)
    manifest = manifest_parquet(records)
    registered = jpeg_bytes(11)
    registered_hashes = hashing.hash_bytes(registered)
    PhotoFactory(
        creator=registry.covered[0].creator,
        sha256=registered_hashes.sha256,
        pdq=registered_hashes.pdq,
        pdq_quality=registered_hashes.pdq_quality,
        phash=registered_hashes.phash,
        variants=variants_pack(variants_compute(hashing.decode(registered))[1:]),
    )
    samples = [
        ("s/000.jpg", registered),
        ("s/001.jpg", encode(generated_photo(11), "JPEG", quality=55)),
        ("s/002.png", encode(generated_photo(12), "PNG")),
        ("s/003.jpg", registered[: len(registered) // 2]),
        ("s/004.json", json.dumps({"url": f"https://www.{BLOCKED_DOMAIN}/x.jpg"}).encode()),
        # A mirrored repost: matches the photo's mirror variant.
        ("s/005.jpg", encode(ImageOps.mirror(generated_photo(11)), "JPEG", quality=80)),
    ]
    oracle = Oracle.load(organization)
    timings["setup"] = time.monotonic() - started

    log_path = tmp_path / "worker.log"
    worker = worker_start(broker, tmp_path, log_path, extra_env=worker_env)
    try:
        mark = time.monotonic()
        response = submit(client, manifest, name="part-00000.parquet", key="big")
        timings["submit_100k"] = time.monotonic() - mark
        assert response.status_code == 202, response.json()
        assert response.json()["record_count"] == RECORDS
        assert response.json()["chunk_count"] == 10
        batch_id = response.json()["id"]
        mark = time.monotonic()
        detail = wait_done(client, batch_id, worker, log_path)
        timings["decide_100k"] = time.monotonic() - mark

        shard_response = submit(client, tar(samples), name="shard.tar", key="shard")
        shard_id = shard_response.json()["id"]
        mark = time.monotonic()
        shard_detail = wait_done(client, shard_id, worker, log_path)
        timings["shard"] = time.monotonic() - mark
    finally:
        worker_stop(worker)

    # The 100k batch: the exclusions downloaded through the API are brute force's.
    assert detail["status"] == "done", detail
    mark = time.monotonic()
    excluded = exclusions_by_row(client, batch_id)
    timings["download"] = time.monotonic() - mark
    mark = time.monotonic()
    expected = {
        row: kinds
        for row, record in enumerate(records, start=1)
        if record["phash"] != "not-hex" and (kinds := oracle.kinds(record))
    }
    timings["oracle"] = time.monotonic() - mark
    assert {row: {m["kind"] for m in r["matches"]} for row, r in excluded.items()} == expected
    assert all(excluded[row]["id"] == records[row - 1]["id"] for row in excluded)
    # 60 sha256 + 3 x 40 PDQ alone + 2 x 40 both hashes + 40 crops + 30 url plants
    # within reach (a random record matching by chance is possible, if most unlikely).
    assert 330 <= len(expected) <= 332
    evidence = [m["evidence"] for r in excluded.values() for m in r["matches"] if "evidence" in m]
    pdq_alone = {e["pdq_distance"] for e in evidence if e["basis"] == "pdq"}
    assert {PDQ_ONLY, 12, 0} <= pdq_alone and max(pdq_alone) == PDQ_ONLY
    assert sum(e["variant"] == "crop_centre_90" for e in evidence) == 40
    assert not any(e["basis"] == "phash" for e in evidence)
    invalid = exclusions_by_row(client, batch_id, "invalid")
    assert sorted(invalid) == [i + 1 for i, r in enumerate(records) if r["phash"] == "not-hex"]
    assert detail["counts"] == {
        "excluded": len(expected),
        "invalid": 20,
        "allowed": RECORDS - len(expected) - 20,
    }
    receipt = detail["receipt"]
    receipts.receipt_verify(receipt, receipts.public_key_info()["public_key"])
    statement = receipt["statement"]
    assert statement["excluded_ids_sha256"] == receipts.excluded_ids_digest(
        excluded[row]["id"] for row in sorted(excluded)
    )
    assert (statement["record_count"], statement["excluded_count"]) == (RECORDS, len(expected))
    assert statement["registry_version"] == detail["registry_version"]

    # Deciding every chunk again adds nothing and moves no counter.
    batch = Batch.objects.get(public_id=batch_id)
    counters = (batch.chunks_done, batch.excluded_count, batch.invalid_count, batch.receipt)
    result_count = BatchResult.objects.filter(batch=batch).count()
    again = [
        batch_chunk_decide_task(pk)
        for pk in Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    ]
    batch.refresh_from_db()
    assert again == [False] * 10
    assert (batch.chunks_done, batch.excluded_count, batch.invalid_count, batch.receipt) == counters
    assert BatchResult.objects.filter(batch=batch).count() == result_count

    # The shard: hashed by the worker, its spool file gone, decided like brute force.
    assert shard_detail["status"] == "done", shard_detail
    assert list((tmp_path / "spool").iterdir()) == []
    shard_excluded = exclusions_by_row(client, shard_id)
    shard_invalid = exclusions_by_row(client, shard_id, "invalid")
    shard_hashes = [hashing.hash_bytes(samples[i][1], fast=True) for i in (0, 1, 2, 5)]
    shard_records = [
        {"sha256": h.sha256, "pdq": h.pdq, "phash": h.phash, "pdq_quality": h.pdq_quality}
        for h in shard_hashes
    ]
    shard_records[3:3] = [{}, {"url": f"https://www.{BLOCKED_DOMAIN}/x.jpg"}]
    oracle = Oracle.load(organization)
    expected_shard = {
        row: kinds
        for row, record in enumerate(shard_records, start=1)
        if (kinds := oracle.kinds(record))
    }
    assert {1, 2, 5, 6} <= set(expected_shard) and 3 not in expected_shard
    assert {row: {m["kind"] for m in r["matches"]} for row, r in shard_excluded.items()} == (
        expected_shard
    )
    assert [r["id"] for r in shard_excluded.values()] == ["s/000", "s/001", "s/004", "s/005"]
    mirrored = shard_excluded[6]["matches"][0]["evidence"]
    assert mirrored["variant"] == "mirror" and mirrored["basis"] == "pdq+phash"
    assert list(shard_invalid) == [4]
    assert shard_invalid[4]["reason"].startswith("image ")

    timings["total"] = time.monotonic() - started
    print("\nbatch worker timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
