"""The matching engine follows the registry without rebuilding and decides, at
every version it can see, exactly what the brute-force Snapshot of that version
decides (snapshot_load + Snapshot.within: the reference)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from optout import receipts
from optout.engine import MatchingEngine, engine_for
from optout.matching import DEFAULT_THRESHOLDS, Thresholds, decide, record_parse
from optout.matching.decide import Decision
from optout.models import Batch, BatchResult, Chunk, EngineState, OptOut
from optout.services import creator_delete, opt_out_file, opt_out_withdraw
from optout.snapshots import snapshot_load
from optout.tasks import batch_chunk_decide_task
from optout.uses import USES
from registry.colour import colour_signature
from registry.ledger import registry_version_current
from registry.models import Channel, Claim, Creator, Photo
from registry.services import claim_add, photos_register_from_hashes
from registry.uploads import HashLine
from registry.variants import Variant, variants_unpack
from tests.factories import CreatorFactory, OrganizationFactory
from tests.images import skimage_photo
from tests.optout.batch_helpers import flip_bits, jsonl, pipeline_client, submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

PDQ_DISTANCES = (0, 7, 15, 16, 30, 31, 32, 40, 41, 45, 56, 57)
PHASH_DISTANCES = (0, 1, 3, 6, 8, 9, 10, 11, 14, 18, 19)
# Colour signatures of real photographs: the coffee cup, the cat (agreeing with
# neither), the cup in grayscale and a black-and-white photograph.
COLOURS = [
    colour_signature(skimage_photo("coffee")),
    colour_signature(skimage_photo("chelsea")),
    colour_signature(skimage_photo("coffee").convert("L")),
    colour_signature(skimage_photo("camera")),
]


@pytest.fixture(autouse=True)
def batch_settings(settings: Settings, tmp_path: Any) -> Iterator[None]:
    settings.OPTOUT_SPOOL_DIR = tmp_path / "spool"
    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(receipts.private_key_generate())
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"batches": None, "lookup": None, "changes": None},
    }
    receipts.signing_key_cache_clear()
    yield
    receipts.signing_key_cache_clear()


# --- a registry that changes at random -----------------------------------------------------


class World:
    """Creators, organizations and a registry changed through the real services."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.organizations = [OrganizationFactory() for _ in range(3)]
        self.creators: list[Creator] = [CreatorFactory() for _ in range(5)]
        self.hashes: list[tuple[str, str, str]] = []  # every (sha256, pdq, phash) registered
        self.variants: list[tuple[str, str]] = []  # every derived variant's (pdq, phash)
        self.colours: dict[tuple[str, str], str] = {}  # (pdq, phash) -> its colour signature
        # Colours drawn apart, so the rest of the world is what it was without them.
        self.colour_rng = random.Random(len(COLOURS))
        self.urls: list[str] = ["https://unclaimed.example.org/a.jpg"]
        self.batches: list[Batch] = []

    def creator(self) -> Creator:
        live = [c for c in self.creators if c.anonymized_at is None]
        return self.rng.choice(live)

    def register(self, count: int | None = None) -> None:
        """One to three photos; some near-duplicates of photos already registered
        (reposts by another creator), so one record can hit several photos."""
        lines = []
        for _ in range(count or self.rng.randint(1, 3)):
            sha256 = self.rng.randbytes(32).hex()
            if self.hashes and self.rng.random() < 0.4:
                _, pdq, phash = self.rng.choice(self.hashes)
                pdq = flip_bits(pdq, self.rng.randint(0, 20), self.rng)
                phash = flip_bits(phash, self.rng.randint(0, 6), self.rng)
            else:
                pdq, phash = self.rng.randbytes(32).hex(), self.rng.randbytes(8).hex()
            if self.hashes and self.rng.random() < 0.1:
                sha256 = self.rng.choice(self.hashes)[0]  # the same file, another creator
            # Some photos come with derived variants (a crop, the mirror image)
            # and a PDQ quality, low or high; others without either.
            variants = tuple(
                Variant(
                    name,
                    self.rng.randbytes(32).hex(),
                    self.rng.choice((30, 90)),
                    self.rng.randbytes(8).hex(),
                )
                for name in self.rng.sample(
                    ("mirror", "crop_centre_90", "rotate_-2"), self.rng.randint(0, 2)
                )
            )
            quality = self.rng.choice((None, 30, 90))
            line = HashLine(
                sha256=sha256, pdq=pdq, phash=phash, pdq_quality=quality, variants=variants
            )
            lines.append((None, line))
            self.hashes.append((sha256, pdq, phash))
            self.variants.extend((v.pdq, v.phash) for v in variants)
        creator = self.creator()
        photos_register_from_hashes(creator=creator, items=lines, channel=Channel.API)
        # Most photos get colour signatures (as registration stores them), for
        # the photo, its variants, both or neither.
        shas = [line.sha256 for _, line in lines]
        for photo in Photo.objects.filter(creator=creator, sha256__in=shas, colour=""):
            derived = variants_unpack(bytes(photo.variants))
            photo.colour = self.colour_rng.choice(COLOURS) if self.colour_rng.random() < 0.7 else ""
            self.colours[(photo.pdq, photo.phash)] = photo.colour
            if self.colour_rng.random() < 0.7:
                colours = [self.colour_rng.choice(COLOURS) for _ in derived]
                photo.variant_colours = b"".join(bytes.fromhex(c) for c in colours)
                self.colours.update(
                    ((v.pdq, v.phash), c) for v, c in zip(derived, colours, strict=True)
                )
            photo.save(update_fields=["colour", "variant_colours"])

    def claim(self) -> None:
        index = len(self.urls)
        kind, value, url = self.rng.choice(
            [
                ("domain", f"site{index}.example", f"https://cdn.site{index}.example/{index}.jpg"),
                (
                    "url_prefix",
                    f"https://host{index}.example/gallery/",
                    f"https://host{index}.example/gallery/{index}.jpg",
                ),
                ("handle", f"instagram:artist{index}", f"https://instagram.com/artist{index}/p/1"),
            ]
        )
        claim_add(creator=self.creator(), kind=kind, value=value, channel=Channel.WEB)
        self.urls.append(url)

    def file(self) -> None:
        creator = self.creator()
        photos = list(Photo.objects.filter(creator=creator).values_list("public_id", flat=True))
        claims = list(Claim.objects.filter(creator=creator).values_list("public_id", flat=True))
        scopes = ["all_photos"] + (["photos"] if photos else []) + (["claims"] if claims else [])
        scope = self.rng.choice(scopes)
        chosen: dict[str, Any] = {}
        if scope == "photos":
            chosen["photos"] = self.rng.sample(photos, self.rng.randint(1, len(photos)))
        if scope == "claims":
            chosen["claims"] = self.rng.sample(claims, self.rng.randint(1, len(claims)))
        exceptions = [o.public_id for o in self.organizations if self.rng.random() < 0.3]
        uses = self.rng.sample(USES, self.rng.randint(1, 2))
        opt_out_file(
            creator=creator,
            uses=uses,
            scope=scope,
            exceptions=exceptions,
            channel=Channel.WEB,
            **chosen,
        )

    def withdraw(self) -> None:
        active = list(OptOut.objects.filter(withdrawn_at__isnull=True).select_related("creator"))
        if active:
            opt_out = self.rng.choice(active)
            opt_out_withdraw(
                creator=opt_out.creator, opt_out_id=opt_out.public_id, channel=Channel.WEB
            )

    def delete_account(self) -> None:
        creator = self.creator()
        creator_delete(creator=creator, keep_opt_outs=self.rng.random() < 0.5, channel=Channel.WEB)
        creator.refresh_from_db()
        self.creators.append(CreatorFactory())

    def batch_start(self) -> None:
        """A batch running at the current version: the engine must keep answering
        that version exactly while the registry moves on."""
        self.batches.append(
            Batch.objects.create(
                organization=self.organizations[0],
                use="ai_training",
                format="jsonl",
                manifest_sha256="0" * 64,
                manifest_bytes=1,
                idempotency_key=f"k{len(self.batches)}",
                request_digest="0" * 64,
                status=Batch.Status.RUNNING,
                registry_version=registry_version_current(),
            )
        )

    def batch_finish(self) -> None:
        running = [b for b in self.batches if b.status == Batch.Status.RUNNING]
        if running:
            batch = self.rng.choice(running)
            batch.status = Batch.Status.DONE
            batch.save(update_fields=["status"])

    def step(self) -> None:
        action = self.rng.choices(
            [
                self.register,
                self.claim,
                self.file,
                self.withdraw,
                self.delete_account,
                self.batch_start,
                self.batch_finish,
            ],
            weights=[6, 2, 4, 3, 1, 1.5, 0.7],
        )[0]
        action()

    def records(self) -> list[dict[str, Any]]:
        """Records at exact distances around the thresholds from every registered
        hash, every claimed URL, and a few that match nothing."""
        records: list[dict[str, Any]] = []
        targets = [(pdq, phash) for _, pdq, phash in self.hashes] + self.variants
        for index, (sha256, _, _) in enumerate(self.hashes):
            records.append({"id": f"s{index}", "sha256": sha256})
        for index, (pdq, phash) in enumerate(targets):
            quality = self.rng.choice((None, 30, 90))
            records.append(
                {
                    "id": f"p{index}",
                    "pdq": flip_bits(pdq, self.rng.choice(PDQ_DISTANCES), self.rng),
                    "pdq_quality": quality,
                }
            )
            records.append(
                {
                    "id": f"h{index}",
                    "phash": flip_bits(phash, self.rng.choice(PHASH_DISTANCES), self.rng),
                }
            )
            records.append(
                {
                    "id": f"b{index}",
                    "pdq": flip_bits(pdq, self.rng.choice(PDQ_DISTANCES), self.rng),
                    "phash": flip_bits(phash, self.rng.choice(PHASH_DISTANCES), self.rng),
                    "pdq_quality": quality,
                    # The target's own colours half the time, others (or none) else.
                    "colour": self.colours.get((pdq, phash), "")
                    if self.colour_rng.random() < 0.5
                    else self.colour_rng.choice([*COLOURS, ""]),
                }
            )
        records += [{"id": f"u{i}", "url": url} for i, url in enumerate(self.urls)]
        records.append({"id": "nothing", "sha256": "0" * 64, "pdq": "0" * 64, "phash": "0" * 16})
        return records


def reference(records: list[dict[str, Any]], version: int, **how: Any) -> list[Decision]:
    parsed = [record_parse(r, row=i) for i, r in enumerate(records)]
    return decide(parsed, snapshot_load(version=version), **how)


def by_engine(
    engine: MatchingEngine, records: list[dict[str, Any]], version: int, **how: Any
) -> list[Decision]:
    parsed = [record_parse(r, row=i) for i, r in enumerate(records)]
    with engine.at(version) as registry:
        return decide(parsed, registry, **how)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_engine_decides_like_brute_force_at_current_and_older_versions_without_reloading(
    seed: int,
) -> None:
    # Given a registry that changes at random, with an engine following it
    rng = random.Random(seed)
    world = World(rng)
    for _ in range(6):
        world.register()
    world.batch_start()
    engine = MatchingEngine()
    checked = excluded = older = coloured = 0

    for _ in range(15):
        # When the registry changes and the engine catches up
        for _ in range(rng.randint(2, 7)):
            world.step()
        with engine.current() as registry:
            assert registry.version == registry_version_current()

        # Then at the newest version, at the versions of running batches and at
        # older versions still held, its decisions are brute force's
        current = engine.loaded_version
        versions = {current, engine.horizon}
        versions |= {rng.randint(engine.horizon, current) for _ in range(2)}
        versions |= {b.registry_version for b in world.batches if b.status == "running"}
        records = world.records()
        for version in sorted(v for v in versions if v is not None):
            organization = rng.choice(world.organizations)
            how = {
                "use": rng.choice(USES),
                "organization": organization.pk,
                "thresholds": rng.choice([DEFAULT_THRESHOLDS, Thresholds(pdq=20, phash=5)]),
            }
            expected = reference(records, version, **how)
            assert by_engine(engine, records, version, **how) == expected, version
            checked += 1
            older += version < current
            excluded += sum(d.decision == "exclude" for d in expected)
            coloured += sum(
                (m.evidence or {}).get("colour_distance") is not None
                for d in expected
                for m in d.matches
            )

    # ... with one load from the database, and catch-ups after it
    assert engine.full_loads == 1
    assert engine.catch_ups >= 10
    # (not vacuous: many records are excluded)
    assert checked >= 30 and older >= 15 and excluded >= 60
    assert coloured >= 1  # matches confirmed by their colours among them


def test_a_version_older_than_the_engine_horizon_is_still_decided_exactly() -> None:
    # Given an engine that retired a withdrawn opt-out (no batch needs its versions)
    world = World(random.Random(7))
    world.register(2)
    creator = Photo.objects.first().creator  # type: ignore[union-attr]
    opt_out = opt_out_file(
        creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    filed_at = registry_version_current()
    engine = MatchingEngine()
    with engine.current():
        pass
    opt_out_withdraw(creator=creator, opt_out_id=opt_out.public_id, channel=Channel.WEB)
    with engine.current():
        pass
    assert engine.horizon > filed_at
    assert engine.index is not None and engine.index.sizes()["sha256"] == 0

    # When a chunk of a batch fixed before the withdrawal is decided
    records = world.records()
    how = {"use": "ai_training", "organization": None, "thresholds": DEFAULT_THRESHOLDS}
    decisions = by_engine(engine, records, filed_at, **how)

    # Then a one-off engine answers for that version, exactly; the engine stays as it is
    assert decisions == reference(records, filed_at, **how)
    assert {d.decision for d in decisions} == {"exclude", "allow"}
    assert engine.full_loads == 1 and engine.index.sizes()["sha256"] == 0
    # ... the next chunk of that batch reuses it, until no running batch needs it
    one_off = engine._one_off
    assert by_engine(engine, records, filed_at, **how) == decisions
    assert engine._one_off is one_off and one_off is not None and one_off.full_loads == 1
    world.register()
    with engine.current():
        pass
    assert engine._one_off is None


# --- through the API and the batch path ------------------------------------------------------


def lookup(api: APIClient, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.post("/api/v1/lookup", {"use": "ai_training", "records": records}, format="json")
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


def test_a_withdrawal_is_seen_by_the_next_lookup_without_a_rebuild() -> None:
    # Given a photo under an opt-out and a lookup that excluded it
    world = World(random.Random(11))
    world.register(1)
    photo = Photo.objects.get()
    opt_out = opt_out_file(
        creator=photo.creator, uses=["ai_training"], scope="photos",
        photos=[photo.public_id], channel=Channel.WEB,
    )  # fmt: skip
    api = pipeline_client(OrganizationFactory())
    records = [
        {
            "id": "r",
            "sha256": photo.sha256,
            "pdq": flip_bits(photo.pdq, 31, world.rng),
            "pdq_quality": 90,
        }
    ]
    first = lookup(api, records)
    assert first["results"][0]["decision"] == "exclude"
    assert {m["kind"] for m in first["results"][0]["matches"]} == {"sha256", "pdq"}
    engine = engine_for()

    # When the creator withdraws
    opt_out_withdraw(creator=photo.creator, opt_out_id=opt_out.public_id, channel=Channel.WEB)
    second = lookup(api, records)

    # Then the next lookup allows it, at the new version, caught up, not reloaded
    assert second["results"][0] == {"id": "r", "decision": "allow", "matches": []}
    assert second["registry_version"] == first["registry_version"] + 1
    assert (engine.full_loads, engine.catch_ups) == (1, 1)
    assert engine.index is not None and engine.index.sizes() == {"sha256": 0, "pdq": 0, "phash": 0}

    # And a new all_photos opt-out, then a photo registered under it, are seen too
    opt_out_file(
        creator=photo.creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    assert lookup(api, records)["results"][0]["decision"] == "exclude"
    world.creators = [photo.creator]
    world.register()
    newest = world.hashes[-1]
    # (a bare pHash never decides alone: the newest photo is looked up by its PDQ)
    newest_record = {"id": "n", "pdq": newest[1], "pdq_quality": 90}
    assert lookup(api, [newest_record])["results"][0]["decision"] == "exclude"
    assert (engine.full_loads, engine.catch_ups) == (1, 3)


def test_a_chunk_decided_after_newer_changes_gives_the_answer_of_its_batch_version(
    settings: Settings,
) -> None:
    # Given a two-chunk batch whose first chunk fixed its version V
    settings.OPTOUT_CHUNK_RECORDS = 2
    world = World(random.Random(5))
    refusing, later = world.creators[:2]
    world.creators = [refusing]
    world.register(1)
    world.creators = [later]
    world.register(1)
    photos = list(Photo.objects.order_by("id"))
    withdrawn = opt_out_file(
        creator=refusing, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    organization = OrganizationFactory()
    api = pipeline_client(organization)
    records = [{"id": f"r{p.pk}", "sha256": p.sha256} for p in photos] * 2
    response = submit(api, jsonl(records), key="at-v")
    assert response.status_code == 202, response.content
    batch = Batch.objects.get(public_id=response.json()["id"])
    first, second = Chunk.objects.filter(batch=batch).order_by("index")
    assert batch_chunk_decide_task(first.pk) is True
    batch.refresh_from_db()
    version = batch.registry_version
    assert version is not None

    # When the registry moves on (a withdrawal, a new opt-out) and a lookup
    # catches the engine up past V
    opt_out_withdraw(creator=refusing, opt_out_id=withdrawn.public_id, channel=Channel.WEB)
    opt_out_file(creator=later, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    assert lookup(api, records)["registry_version"] == version + 2
    engine = engine_for()
    assert engine.loaded_version == version + 2 and engine.horizon == version

    # Then the second chunk is still decided as of V, by the same engine
    assert batch_chunk_decide_task(second.pk) is True
    batch.refresh_from_db()
    assert batch.status == "done" and batch.receipt["statement"]["registry_version"] == version
    results = {r.row: r.decision for r in BatchResult.objects.filter(batch=batch, chunk=second)}
    parsed = [record_parse(r, row=i + 1) for i, r in enumerate(records)]
    expected = decide(
        parsed, snapshot_load(version=version), use="ai_training",
        organization=organization.pk, thresholds=DEFAULT_THRESHOLDS,
    )  # fmt: skip
    assert results == {d.row: d.decision for d in expected[2:] if d.decision != "allow"}
    assert results == {3: "exclude"}  # the withdrawn opt-out, not the newer one
    assert engine.full_loads == 1
    assert engine.index is not None and set(engine.index.photos) == {p.pk for p in photos}

    # And once the batch is done, the next change retires what only V needed
    world.register(1)
    lookup(api, records)
    assert engine.horizon == engine.loaded_version
    assert photos[0].pk not in engine.index.photos and photos[1].pk in engine.index.photos
    assert engine.index.sizes()["sha256"] == 2


def test_registry_endpoint_shows_the_version_each_engine_has_loaded() -> None:
    # Given an engine that decided a lookup at the newest version
    world = World(random.Random(3))
    world.register(1)
    photo = Photo.objects.get()
    opt_out_file(
        creator=photo.creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    organization = OrganizationFactory()
    api = pipeline_client(organization)
    version = lookup(api, [{"id": "r", "sha256": photo.sha256}])["registry_version"]
    EngineState.objects.create(
        worker="gone:1", kind="pdq", loaded_version=1, size=1,
        updated_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip

    # When a pipeline asks for the registry's state
    response = api.get("/api/v1/registry")

    # Then it lists this process's engine per hash kind with its loaded version
    # and lag, not the engine that stopped reporting an hour ago
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["registry_version"] == version
    rows = {(w["kind"], w["loaded_version"], w["lag"], w["size"]) for w in body["workers"]}
    assert rows == {("sha256", version, 0, 1), ("pdq", version, 0, 1), ("phash", version, 0, 1)}
    assert {w["worker"] for w in body["workers"]} != {"gone:1"}
    assert all((w["shards"], w["shard"]) == (1, 0) for w in body["workers"])
    text = response.content.decode()
    assert str(photo.public_id) not in text and str(photo.creator.public_id) not in text
    batches_only = pipeline_client(organization, scopes=["batches"])
    assert batches_only.get("/api/v1/registry").status_code == 403
