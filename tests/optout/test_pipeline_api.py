"""Pipeline API, synchronous part: POST /api/v1/lookup and GET /api/v1/changes
(optout/pipeline_api.py), with API-key auth, quotas and the audit log.

Creators, photos, claims and opt-outs are set up through the real services, so
every decision is made against ledger versions PostgreSQL handed out."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from jsonschema import Draft202012Validator
from rest_framework.response import Response
from rest_framework.test import APIClient

from optout import changes, services
from optout.matching import DEFAULT_THRESHOLDS
from optout.matching.rule import (
    DEFAULT_RULE,
    MAX_STRICTNESS,
    PDQ_STEP,
    UNKNOWN_QUALITY_RULE,
    Box,
    KindRule,
)
from optout.models import OptOut, Organization, PipelineRequest
from registry import services as registry_services
from registry.colour import COLOUR_HEX_LENGTH, COLOUR_THRESHOLD, colour_signature
from registry.ledger import registry_version_current
from registry.models import Channel, Claim, ConsentEvent, Creator, Photo
from registry.uploads import HashLine
from registry.variants import Variant
from tests.factories import (
    CreatorFactory,
    OrganizationFactory,
    UserFactory,
    expired_api_key,
    revoked_api_key,
)
from tests.images import skimage_photo
from tests.optout.batch_helpers import SHA256_EVIDENCE

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
PDQ_A = "0f" * 32
PHASH_A = "3c" * 8
USES_ALLOWED = "data_mining, ai_training, ai_generative_training, ai_inference"
# The registry's rule for the photo itself: records stating their PDQ quality
# are held to ORIGINAL, bare hashes to BARE (the stricter rule). Box sizes come
# from the rule, never from here: the rule is calibrated on its own.
ORIGINAL: KindRule = DEFAULT_RULE.kinds["original"]
BARE: KindRule = UNKNOWN_QUALITY_RULE.kinds["original"]
GOOD_QUALITY = 100
LOW_QUALITY = DEFAULT_RULE.min_quality - 1


def flip(value: str, bits: int) -> str:
    """``value`` with its lowest ``bits`` bits inverted (Hamming distance ``bits``)."""
    number = int(value, 16) ^ ((1 << bits) - 1)
    return f"{number:0{len(value)}x}"


def register(creator: Creator, *lines: HashLine) -> list[Photo]:
    registry_services.photos_register_from_hashes(
        creator=creator, items=[(None, line) for line in lines], channel=Channel.WEB
    )
    by_sha = {photo.sha256: photo for photo in Photo.objects.filter(creator=creator)}
    return [by_sha[line.sha256] for line in lines]


def claim(creator: Creator, kind: str, value: str) -> Claim:
    added, _ = registry_services.claim_add(
        creator=creator, kind=kind, value=value, channel=Channel.WEB
    )
    return added


def file(creator: Creator, uses: list[str], scope: str = "all_photos", **kwargs: Any) -> OptOut:
    return services.opt_out_file(
        creator=creator, uses=uses, scope=scope, channel=Channel.WEB, **kwargs
    )


def change_to(opt_out: OptOut, uses: list[str], scope: str = "all_photos", **kwargs: Any) -> OptOut:
    return services.opt_out_change(
        creator=opt_out.creator,
        public_id=opt_out.public_id,
        uses=uses,
        scope=scope,
        channel=Channel.WEB,
        **kwargs,
    )


def withdraw(opt_out: OptOut) -> OptOut:
    return services.opt_out_withdraw(
        creator=opt_out.creator, opt_out_id=opt_out.public_id, channel=Channel.WEB
    )


def raw_key(organization: Organization, scopes: tuple[str, ...] = ("lookup", "batches")) -> str:
    _, raw = services.api_key_create(organization=organization, name="tests", scopes=scopes)
    return raw


def pipeline(raw: str, scheme: str = "Api-Key") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {raw}")
    return client


def lookup(api: APIClient, records: list[Any], use: str = "ai_training", **body: Any) -> Response:
    response: Response = api.post(
        "/api/v1/lookup", {"use": use, "records": records, **body}, format="json"
    )
    return response


def match(
    kind: str,
    opt_out: OptOut,
    distance: int = 0,
    threshold: int = 0,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A match as the API answers it; claim matches carry no evidence."""
    data = {
        "kind": kind,
        "distance": distance,
        "threshold": threshold,
        "opt_out": str(opt_out.public_id),
        "uses": opt_out.uses,
    }
    if evidence is not None:
        data["evidence"] = evidence
    return data


def sha_match(opt_out: OptOut) -> dict[str, Any]:
    return match("sha256", opt_out, evidence=SHA256_EVIDENCE)


def evidence(
    basis: str,
    *,
    pdq: int | None = None,
    pdq_threshold: int | None = None,
    phash: int | None = None,
    phash_threshold: int | None = None,
    quality: str = "ok",
    colour: float | None = None,
    colour_threshold: float | None = None,
) -> dict[str, Any]:
    """The evidence of a match of the registered photo itself (``original``)."""
    return {
        "variant": "original",
        "basis": basis,
        "pdq_distance": pdq,
        "pdq_threshold": pdq_threshold,
        "phash_distance": phash,
        "phash_threshold": phash_threshold,
        "quality": quality,
        "colour_distance": colour,
        "colour_threshold": colour_threshold,
        "layout_distance": None,
        "layout_threshold": None,
        "keypoint_inliers": None,
        "keypoint_threshold": None,
        "strictness": 0,
    }


def box_of(rule: KindRule, pdq: int, phash: int) -> Box:
    """The box the engine reports for a pair at these distances: the first of
    the rule's boxes that holds it."""
    held = [box for box in rule.both if box.contains(pdq, phash)]
    assert held, f"({pdq}, {phash}) is in none of {rule.both}"
    return held[0]


def both_match(opt_out: OptOut, rule: KindRule, pdq: int, phash: int) -> dict[str, Any]:
    """The match of a record with both hashes at these distances from the photo."""
    box = box_of(rule, pdq, phash)
    found = evidence(
        "pdq+phash", pdq=pdq, pdq_threshold=box.pdq, phash=phash, phash_threshold=box.phash
    )
    return match("pdq", opt_out, pdq, box.pdq, found)


def pdq_match(opt_out: OptOut, distance: int, threshold: int) -> dict[str, Any]:
    """The match of a PDQ-only record."""
    found = evidence("pdq", pdq=distance, pdq_threshold=threshold)
    return match("pdq", opt_out, distance, threshold, found)


def at(opt_out_or_event: ConsentEvent) -> str:
    return opt_out_or_event.created_at.isoformat().replace("+00:00", "Z")


def event_of(kind: str, subject: uuid.UUID) -> ConsentEvent:
    return ConsentEvent.objects.get(kind=kind, subject_public_id=subject)


@dataclass
class World:
    alice: Creator  # one photo, an all_photos opt-out refusing ai_training
    photo_a: Photo
    opt_alice: OptOut
    bob: Creator  # a domain and a URL prefix, a claims opt-out refusing ai_training
    opt_bob: OptOut
    carol: Creator  # a photo and no opt-out
    photo_c: Photo
    acme: Organization
    api: APIClient


@pytest.fixture
def world() -> World:
    alice = CreatorFactory(user=UserFactory(email="alice@example.org"))
    [photo_a] = register(
        alice, HashLine(sha256=SHA_A, pdq=PDQ_A, phash=PHASH_A, filename="alice-dawn.jpg")
    )
    opt_alice = file(alice, ["ai_training"])
    bob = CreatorFactory(user=UserFactory(email="bob@example.org"))
    domain = claim(bob, "domain", "bob.example")
    prefix = claim(bob, "url_prefix", "https://photos.example.net/bob/")
    opt_bob = file(bob, ["ai_training"], "claims", claims=[domain.public_id, prefix.public_id])
    carol = CreatorFactory(user=UserFactory(email="carol@example.org"))
    [photo_c] = register(carol, HashLine(sha256=SHA_C, filename="carol.jpg"))
    acme = OrganizationFactory(name="Acme Vision")
    return World(
        alice, photo_a, opt_alice, bob, opt_bob, carol, photo_c, acme, pipeline(raw_key(acme))
    )


# --- POST /api/v1/lookup: decisions ----------------------------------------------------


def test_lookup_excludes_by_every_hash_kind_and_by_url_and_allows_the_rest(world: World) -> None:
    bare_pdq, known_pdq = BARE.pdq_only, ORIGINAL.pdq_only
    assert bare_pdq is not None and known_pdq is not None
    widest = max(ORIGINAL.both, key=lambda box: box.pdq)
    records = [
        {"id": "sha", "sha256": SHA_A},
        {"id": "pdq", "pdq": flip(PDQ_A, bare_pdq)},
        {"id": "pdq-quality", "pdq": flip(PDQ_A, known_pdq), "pdq_quality": GOOD_QUALITY},
        {
            "id": "both",
            "pdq": flip(PDQ_A, widest.pdq),
            "phash": flip(PHASH_A, widest.phash),
            "pdq_quality": GOOD_QUALITY,
        },
        {"id": "domain", "url": "https://cdn.bob.example/x.jpg"},
        {"id": "prefix", "url": "https://photos.example.net/bob/1.jpg"},
        {"id": "other-path", "url": "https://photos.example.net/carol/1.jpg"},
        {"id": "carol", "sha256": SHA_C},
    ]

    response = lookup(world.api, records)

    assert response.status_code == 200
    assert response.json() == {
        "registry_version": registry_version_current(),
        "results": [
            {"id": "sha", "decision": "exclude", "matches": [sha_match(world.opt_alice)]},
            {
                "id": "pdq",
                "decision": "exclude",
                "matches": [pdq_match(world.opt_alice, bare_pdq, bare_pdq)],
            },
            {
                "id": "pdq-quality",
                "decision": "exclude",
                "matches": [pdq_match(world.opt_alice, known_pdq, known_pdq)],
            },
            {
                "id": "both",
                "decision": "exclude",
                "matches": [both_match(world.opt_alice, ORIGINAL, widest.pdq, widest.phash)],
            },
            {"id": "domain", "decision": "exclude", "matches": [match("domain", world.opt_bob)]},
            {
                "id": "prefix",
                "decision": "exclude",
                "matches": [match("url_prefix", world.opt_bob)],
            },
            {"id": "other-path", "decision": "allow", "matches": []},
            {"id": "carol", "decision": "allow", "matches": []},
        ],
    }


def test_malformed_records_are_invalid_with_reasons_while_the_others_are_decided(
    world: World,
) -> None:
    records = [
        {"id": "ok", "sha256": SHA_A},
        {"id": "short", "sha256": "abc"},
        "just text",
        {"sha256": SHA_A},
        {"id": "empty"},
        {"id": "ftp", "url": "ftp://bob.example/x.jpg"},
        {"id": 7, "sha256": "f" * 64},
    ]

    response = lookup(world.api, records)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"id": "ok", "decision": "exclude", "matches": [sha_match(world.opt_alice)]},
        {
            "id": "short",
            "decision": "invalid",
            "reason": "sha256 must be 64 hexadecimal digits",
            "row": 1,
        },
        {"id": None, "decision": "invalid", "reason": "record must be an object", "row": 2},
        {"id": None, "decision": "invalid", "reason": "id is required", "row": 3},
        {
            "id": "empty",
            "decision": "invalid",
            "reason": "record has none of sha256, pdq, phash, url",
            "row": 4,
        },
        {
            "id": "ftp",
            "decision": "invalid",
            "reason": "url: 'ftp://bob.example/x.jpg' is not an http or https URL",
            "row": 5,
        },
        {"id": "7", "decision": "allow", "matches": []},
    ]
    audit = PipelineRequest.objects.get()
    assert (audit.record_count, audit.excluded_count) == (7, 1)


QUALITY_REASON = "pdq_quality must be an integer from 0 to 100"


def test_a_pdq_quality_out_of_range_or_not_an_integer_is_invalid_with_the_reason(
    world: World,
) -> None:
    bad = [101, -1, 1000, 50.5, "high", "90%", True, [90], {"q": 90}, "\u00b2", "9" * 5000]
    hashes = {"pdq": PDQ_A, "phash": PHASH_A}
    records = [
        {"id": "edge-0", **hashes, "pdq_quality": 0},
        {"id": "edge-100", **hashes, "pdq_quality": 100},
        # An empty cell (a CSV column left blank) states no quality: a bare record.
        {"id": "blank", **hashes, "pdq_quality": ""},
        *({"id": f"bad-{i}", **hashes, "pdq_quality": value} for i, value in enumerate(bad)),
        {"id": "no-pdq", "phash": PHASH_A, "pdq_quality": 90},
        {"id": "no-hash", "url": "https://bob.example/x.jpg", "pdq_quality": 90},
    ]

    response = lookup(world.api, records)

    assert response.status_code == 200
    results = response.json()["results"]
    # 0 and 100 are qualities (0: a featureless image, matched only nearly exactly).
    assert [r["decision"] for r in results[:3]] == ["exclude"] * 3
    assert [r["matches"][0]["evidence"]["quality"] for r in results[:3]] == [
        "low_query",
        "ok",
        "ok",
    ]
    assert results[3:] == [
        *(
            {"id": f"bad-{i}", "decision": "invalid", "reason": QUALITY_REASON, "row": 3 + i}
            for i in range(len(bad))
        ),
        {
            "id": "no-pdq",
            "decision": "invalid",
            "reason": "pdq_quality needs a pdq",
            "row": len(records) - 2,
        },
        {
            "id": "no-hash",
            "decision": "invalid",
            "reason": "pdq_quality needs a pdq",
            "row": len(records) - 1,
        },
    ]
    audit = PipelineRequest.objects.get()
    assert (audit.record_count, audit.excluded_count) == (len(records), 3)


# --- colour signatures ----------------------------------------------------------------

# Colour signatures of real photographs (registry.colour): the coffee cup, the
# cat, the cup in grayscale, the cameraman (black and white).
COFFEE = colour_signature(skimage_photo("coffee"))
CAT = colour_signature(skimage_photo("chelsea"))
COFFEE_GREY = colour_signature(skimage_photo("coffee").convert("L"))
CAMERA = colour_signature(skimage_photo("camera"))
MIRROR = Variant("mirror", "1e" * 32, 77, "5a" * 8)


def coloured_photo(colour: str, mirror_colour: str) -> tuple[Photo, OptOut]:
    """A photo and its mirror image registered by hashes, their colour
    signatures set in the database (as registration stores them), under an
    all_photos opt-out refusing ai_training."""
    dora = CreatorFactory(user=UserFactory(email="dora@example.org"))
    [photo] = register(
        dora,
        HashLine(
            sha256="d" * 64,
            pdq=PDQ_A,
            phash=PHASH_A,
            pdq_quality=GOOD_QUALITY,
            filename="dora.jpg",
            variants=(MIRROR,),
        ),
    )
    Photo.objects.filter(pk=photo.pk).update(
        colour=colour, variant_colours=bytes.fromhex(mirror_colour)
    )
    return photo, file(dora, ["ai_training"])


def test_a_record_whose_colours_disagree_with_the_photo_is_allowed() -> None:
    """The same PDQ and pHash as the registered coffee cup (or its mirror image):
    with the cup's colours or none (or a grayscale copy's) the record is
    excluded, with the cat's colours allowed; the evidence says which colours
    were compared and how far apart."""
    _, opt_out = coloured_photo(COFFEE, COFFEE)
    api = pipeline(raw_key(OrganizationFactory()))

    def record(name: str, target: str, colour: str | None) -> dict[str, Any]:
        pdq, phash = (PDQ_A, PHASH_A) if target == "original" else (MIRROR.pdq, MIRROR.phash)
        data = {"id": name, "pdq": pdq, "phash": phash, "pdq_quality": GOOD_QUALITY}
        return data if colour is None else {**data, "colour": colour}

    records = [
        record(f"{target}-{name}", target, colour)
        for target in ("original", "mirror")
        for name, colour in (
            ("same", COFFEE.upper()),
            ("none", None),
            ("grey", COFFEE_GREY),
            ("other", CAT),
        )
    ]
    response = lookup(api, records)

    assert response.status_code == 200
    results = {r["id"]: r for r in response.json()["results"]}
    for target in ("original", "mirror"):
        assert results[f"{target}-other"] == {
            "id": f"{target}-other",
            "decision": "allow",
            "matches": [],
        }
        same = results[f"{target}-same"]["matches"]
        assert [(m["kind"], m["opt_out"]) for m in same] == [("pdq", str(opt_out.public_id))]
        assert same[0]["evidence"]["variant"] == target
        assert same[0]["evidence"]["colour_distance"] == 0.0
        assert same[0]["evidence"]["colour_threshold"] == COLOUR_THRESHOLD
        for unchecked in ("none", "grey"):
            [found] = results[f"{target}-{unchecked}"]["matches"]
            assert found["evidence"]["variant"] == target
            assert found["evidence"]["colour_distance"] is None
            assert found["evidence"]["colour_threshold"] is None


def test_agreeing_colours_let_a_more_distant_copy_match_and_the_evidence_says_so() -> None:
    """PDQ 60 and pHash 10 bits from the coffee cup: beyond the boxes for
    hashes alone, inside the colour-confirmed (64, 10). A grayscale record
    against the colour photo is held two steps stricter: (32, 18) is no
    longer enough."""
    _, opt_out = coloured_photo(COFFEE, COFFEE)
    api = pipeline(raw_key(OrganizationFactory()))
    far = {"pdq": flip(PDQ_A, 60), "phash": flip(PHASH_A, 10), "pdq_quality": GOOD_QUALITY}
    near = {"pdq": flip(PDQ_A, 32), "phash": flip(PHASH_A, 18), "pdq_quality": GOOD_QUALITY}

    results = lookup(
        api,
        [
            {"id": "far-same", **far, "colour": COFFEE},
            {"id": "far-none", **far},
            {"id": "far-other", **far, "colour": CAT},
            {"id": "far-grey", **far, "colour": COFFEE_GREY},
            {"id": "near-none", **near},
            {"id": "near-grey", **near, "colour": COFFEE_GREY},
        ],
    ).json()["results"]

    decisions = {r["id"]: r["decision"] for r in results}
    assert decisions == {
        "far-same": "exclude",
        "far-none": "allow",
        "far-other": "allow",
        "far-grey": "allow",
        "near-none": "exclude",
        "near-grey": "allow",
    }
    [match] = results[0]["matches"]
    assert match["opt_out"] == str(opt_out.public_id)
    evidence = match["evidence"]
    assert evidence["basis"] == "pdq+phash+colour"
    assert (evidence["pdq_distance"], evidence["pdq_threshold"]) == (60, 64)
    assert (evidence["phash_distance"], evidence["phash_threshold"]) == (10, 10)
    assert evidence["colour_distance"] == 0.0
    # A pipeline's own caps apply to it like to any match.
    capped = lookup(
        api, [{"id": "far-same", **far, "colour": COFFEE}], thresholds={"pdq": 48}
    ).json()["results"]
    assert capped[0]["decision"] == "allow"


def test_a_black_and_white_photo_is_not_matched_by_a_colour_record() -> None:
    coloured_photo(CAMERA, CAMERA)
    api = pipeline(raw_key(OrganizationFactory()))
    base = {"pdq": PDQ_A, "phash": PHASH_A, "pdq_quality": GOOD_QUALITY}

    results = lookup(
        api, [{"id": "colour", **base, "colour": COFFEE}, {"id": "grey", **base, "colour": CAMERA}]
    ).json()["results"]

    assert [r["decision"] for r in results] == ["allow", "exclude"]


def test_a_malformed_colour_is_invalid_with_the_reason(world: World) -> None:
    base = {"pdq": PDQ_A, "phash": PHASH_A}
    records = [
        {"id": "short", **base, "colour": COFFEE[:-1]},
        {"id": "not-hex", **base, "colour": "z" * COLOUR_HEX_LENGTH},
        {"id": "number", **base, "colour": 7},
        {"id": "alone", "sha256": SHA_A, "colour": COFFEE},
        {"id": "ok", **base, "colour": COFFEE},
    ]

    response = lookup(world.api, records)

    assert response.status_code == 200
    colour_reason = f"colour must be {COLOUR_HEX_LENGTH} hexadecimal digits"
    assert [(r["decision"], r.get("reason"), r.get("row")) for r in response.json()["results"]] == [
        ("invalid", colour_reason, 0),
        ("invalid", colour_reason, 1),
        ("invalid", colour_reason, 2),
        ("invalid", "colour needs a pdq or a phash", 3),
        ("exclude", None, None),
    ]


def test_a_stated_pdq_quality_holds_a_record_to_the_registry_rule_and_a_bare_hash_to_the_stricter(
    world: World,
) -> None:
    def record(name: str, pdq: int, phash: int | None, quality: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {"id": name, "pdq": flip(PDQ_A, pdq)}
        if phash is not None:
            data["phash"] = flip(PHASH_A, phash)
        if quality is not None:
            data["pdq_quality"] = quality
        return data

    corners = [(box.pdq, box.phash) for box in ORIGINAL.both]
    # The stricter rule leaves every corner of the registry's boxes out (else
    # this test could not tell the rules apart), and the low-quality box too.
    for pdq, phash in corners:
        assert not any(box.contains(pdq, phash) for box in BARE.both), (pdq, phash)
        assert not any(box.contains(pdq, phash) for box in DEFAULT_RULE.low_quality.both)
    known_pdq, bare_pdq = ORIGINAL.pdq_only, BARE.pdq_only
    assert known_pdq is not None and bare_pdq is not None and bare_pdq < known_pdq
    low = DEFAULT_RULE.low_quality.both[0]
    records = [
        *(
            record(f"stated-{i}", pdq, phash, GOOD_QUALITY)
            for i, (pdq, phash) in enumerate(corners)
        ),
        *(record(f"bare-{i}", pdq, phash, None) for i, (pdq, phash) in enumerate(corners)),
        *(record(f"low-{i}", pdq, phash, LOW_QUALITY) for i, (pdq, phash) in enumerate(corners)),
        record("pdq-stated", known_pdq, None, GOOD_QUALITY),
        record("pdq-bare", known_pdq, None, None),
        record("low-near", low.pdq, low.phash, LOW_QUALITY),
    ]

    results = {r["id"]: r for r in lookup(world.api, records).json()["results"]}

    for i, (pdq, phash) in enumerate(corners):
        assert results[f"stated-{i}"]["matches"] == [
            both_match(world.opt_alice, ORIGINAL, pdq, phash)
        ]
        assert results[f"bare-{i}"] == {"id": f"bare-{i}", "decision": "allow", "matches": []}
        assert results[f"low-{i}"] == {"id": f"low-{i}", "decision": "allow", "matches": []}
    assert results["pdq-stated"]["matches"] == [pdq_match(world.opt_alice, known_pdq, known_pdq)]
    assert results["pdq-bare"]["decision"] == "allow"
    assert results["low-near"]["matches"] == [
        match(
            "pdq",
            world.opt_alice,
            low.pdq,
            low.pdq,
            evidence(
                "pdq+phash",
                pdq=low.pdq,
                pdq_threshold=low.pdq,
                phash=low.phash,
                phash_threshold=low.phash,
                quality="low_query",
            ),
        )
    ]


def test_a_bare_phash_near_duplicate_is_not_excluded_but_with_its_pdq_and_quality_it_is(
    world: World,
) -> None:
    # A pHash alone is not precise enough on photographs: a bare pHash-only
    # record matches only within the stricter rule's pHash-only threshold.
    beyond = 0 if BARE.phash_only is None else BARE.phash_only + 1
    box = max(ORIGINAL.both, key=lambda b: b.phash)
    assert 0 <= beyond <= box.phash
    near_phash = flip(PHASH_A, beyond)
    records = [
        {"id": "phash", "phash": near_phash},
        {"id": "with-pdq", "pdq": flip(PDQ_A, box.pdq), "phash": near_phash},
        {
            "id": "with-pdq-and-quality",
            "pdq": flip(PDQ_A, box.pdq),
            "phash": near_phash,
            "pdq_quality": GOOD_QUALITY,
        },
    ]

    results = lookup(world.api, records).json()["results"]

    assert results[0] == {"id": "phash", "decision": "allow", "matches": []}
    expected_bare = (
        [both_match(world.opt_alice, BARE, box.pdq, beyond)]
        if any(b.contains(box.pdq, beyond) for b in BARE.both)
        else []
    )
    assert results[1]["matches"] == expected_bare
    assert results[2] == {
        "id": "with-pdq-and-quality",
        "decision": "exclude",
        "matches": [both_match(world.opt_alice, ORIGINAL, box.pdq, beyond)],
    }


def test_an_exception_is_honoured_for_the_excepted_organization_only(world: World) -> None:
    dave = CreatorFactory()
    [photo] = register(dave, HashLine(sha256=SHA_B))
    opt_out = file(
        dave,
        ["ai_training"],
        "photos",
        photos=[photo.public_id],
        exceptions=[world.acme.public_id],
    )
    other = pipeline(raw_key(OrganizationFactory(name="Other Lab")))

    excepted = lookup(world.api, [{"id": "r", "sha256": SHA_B}])
    refused = lookup(other, [{"id": "r", "sha256": SHA_B}])

    assert excepted.json()["results"] == [{"id": "r", "decision": "allow", "matches": []}]
    assert refused.json()["results"] == [
        {"id": "r", "decision": "exclude", "matches": [sha_match(opt_out)]}
    ]


@pytest.mark.parametrize(
    ("use", "decision"),
    [
        ("ai_training", "exclude"),
        ("ai_generative_training", "exclude"),
        ("data_mining", "allow"),
        ("ai_inference", "allow"),
    ],
)
def test_refusing_ai_training_also_refuses_generative_training_and_nothing_else(
    world: World, use: str, decision: str
) -> None:
    response = lookup(world.api, [{"id": "r", "sha256": SHA_A}], use=use)

    assert response.status_code == 200
    assert response.json()["results"][0]["decision"] == decision
    assert PipelineRequest.objects.get().use == use


def test_stricter_thresholds_cap_the_distances_of_every_match(world: World) -> None:
    pdq, phash = 10, 4
    known_pdq = ORIGINAL.pdq_only
    assert known_pdq is not None and pdq <= known_pdq
    box = box_of(ORIGINAL, pdq, phash)
    records = [
        {"id": "pdq", "pdq": flip(PDQ_A, pdq), "pdq_quality": GOOD_QUALITY},
        {
            "id": "both",
            "pdq": flip(PDQ_A, pdq),
            "phash": flip(PHASH_A, phash),
            "pdq_quality": GOOD_QUALITY,
        },
    ]

    default = lookup(world.api, records)
    narrower = lookup(world.api, records, thresholds={"pdq": pdq - 1, "phash": phash - 1})
    phash_capped = lookup(world.api, records, thresholds={"phash": phash - 1})
    exact_fit = lookup(world.api, records, thresholds={"pdq": pdq, "phash": phash})

    assert [r["matches"] for r in default.json()["results"]] == [
        [pdq_match(world.opt_alice, pdq, known_pdq)],
        [both_match(world.opt_alice, ORIGINAL, pdq, phash)],
    ]
    assert [r["decision"] for r in narrower.json()["results"]] == ["allow", "allow"]
    # A cap on the pHash leaves out a match beyond it even when the PDQ is close;
    # a record without a pHash is not held to it.
    assert [r["matches"] for r in phash_capped.json()["results"]] == [
        [pdq_match(world.opt_alice, pdq, known_pdq)],
        [],
    ]
    # The thresholds reported are the rule's, capped.
    assert [r["matches"] for r in exact_fit.json()["results"]] == [
        [pdq_match(world.opt_alice, pdq, pdq)],
        [
            match(
                "pdq",
                world.opt_alice,
                pdq,
                pdq,
                evidence(
                    "pdq+phash",
                    pdq=pdq,
                    pdq_threshold=pdq,
                    phash=phash,
                    phash_threshold=min(box.phash, phash),
                ),
            )
        ],
    ]


def test_strictness_decides_with_the_rule_that_many_steps_stricter(world: World) -> None:
    # A copy inside the photo's middle box by 4 PDQ bits: one step (8 bits)
    # stricter, no box holds it; an exact copy stays matched at every step.
    box = ORIGINAL.both[1]
    pdq, phash = box.pdq - PDQ_STEP // 2, box.phash
    assert not any(b.contains(pdq, phash) for b in DEFAULT_RULE.shifted(-1).kinds["original"].both)
    edited = {
        "id": "edited",
        "pdq": flip(PDQ_A, pdq),
        "phash": flip(PHASH_A, phash),
        "pdq_quality": GOOD_QUALITY,
    }
    exact = {"id": "exact", "pdq": PDQ_A, "phash": PHASH_A, "pdq_quality": GOOD_QUALITY}

    default = lookup(world.api, [edited, exact])
    stricter = lookup(world.api, [edited, exact], thresholds={"strictness": 1})
    strictest = lookup(world.api, [edited, exact], thresholds={"strictness": MAX_STRICTNESS})

    assert [r["decision"] for r in default.json()["results"]] == ["exclude", "exclude"]
    assert [r["decision"] for r in stricter.json()["results"]] == ["allow", "exclude"]
    assert [r["decision"] for r in strictest.json()["results"]] == ["allow", "exclude"]
    # The evidence reports the thresholds of the rule it was decided with.
    widest = max(b.pdq for b in ORIGINAL.both)
    found = strictest.json()["results"][1]["matches"][0]["evidence"]
    assert found["pdq_distance"] == 0
    assert found["pdq_threshold"] <= widest - MAX_STRICTNESS * PDQ_STEP


def strictness_message() -> str:
    return f"strictness must be between 0 and {MAX_STRICTNESS}"


def loose_message(kind: str) -> str:
    maximum = getattr(DEFAULT_THRESHOLDS, kind)
    return f"{kind} threshold must be between 0 and {maximum} (the registry's maximum)"


def test_the_default_thresholds_are_the_widest_distances_the_rule_accepts() -> None:
    rules = [*DEFAULT_RULE.kinds.values(), DEFAULT_RULE.low_quality]
    # The colour-confirmed boxes included: a pipeline leaving the thresholds
    # alone gets every match the rule makes.
    boxes = [box for rule in rules for box in (*rule.both, *rule.confirmed)]
    singles = {
        kind: [v for rule in rules if (v := getattr(rule, f"{kind}_only")) is not None]
        for kind in ("pdq", "phash")
    }

    assert DEFAULT_THRESHOLDS.pdq == max([box.pdq for box in boxes] + singles["pdq"])
    assert DEFAULT_THRESHOLDS.phash == max([box.phash for box in boxes] + singles["phash"])


@pytest.mark.parametrize(
    ("thresholds", "field", "message"),
    [
        ({"pdq": DEFAULT_THRESHOLDS.pdq + 1}, "pdq", loose_message("pdq")),
        ({"phash": DEFAULT_THRESHOLDS.phash + 1}, "phash", loose_message("phash")),
        ({"pdq": -1}, "pdq", loose_message("pdq")),
        ({"pdq": 2094623224568405248}, "pdq", loose_message("pdq")),
        ({"strictness": MAX_STRICTNESS + 1}, "strictness", strictness_message()),
        ({"strictness": -1}, "strictness", strictness_message()),
    ],
)
def test_a_looser_threshold_is_a_400_naming_the_threshold_and_the_maximum(
    world: World, thresholds: dict[str, int], field: str, message: str
) -> None:
    response = lookup(world.api, [{"id": "r", "sha256": SHA_A}], thresholds=thresholds)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"thresholds": {field: [message]}},
    }
    assert PipelineRequest.objects.count() == 0


def test_the_lookup_schema_documents_what_the_view_accepts(world: World) -> None:
    schemas = world.api.get("/api/schema/?format=json").json()["components"]["schemas"]
    records = schemas["LookupRequestRequest"]["properties"]["records"]
    thresholds = schemas["LookupThresholdsRequest"]["properties"]

    # Any item is accepted (a malformed one is decided `invalid`), so the schema
    # documents a record or anything else rather than refusing what the view takes.
    assert records["items"]["anyOf"][0] == {"$ref": "#/components/schemas/LookupRecordRequest"}
    assert set(records["items"]["anyOf"][1]) == {"description"}
    assert (thresholds["pdq"]["minimum"], thresholds["pdq"]["maximum"]) == (
        0,
        DEFAULT_THRESHOLDS.pdq,
    )
    assert (thresholds["phash"]["minimum"], thresholds["phash"]["maximum"]) == (
        0,
        DEFAULT_THRESHOLDS.phash,
    )
    assert (thresholds["strictness"]["minimum"], thresholds["strictness"]["maximum"]) == (
        0,
        MAX_STRICTNESS,
    )
    quality = schemas["LookupRecordRequest"]["properties"]["pdq_quality"]
    assert (quality["type"], quality["minimum"], quality["maximum"]) == ("integer", 0, 100)
    assert "pdq_quality" not in schemas["LookupRecordRequest"]["required"]
    colour = schemas["LookupRecordRequest"]["properties"]["colour"]
    assert (colour["type"], colour["minLength"], colour["maxLength"]) == (
        "string",
        COLOUR_HEX_LENGTH,
        COLOUR_HEX_LENGTH,
    )
    assert "colour" not in schemas["LookupRecordRequest"]["required"]
    assert "signature" in colour["description"]


def test_the_lookup_schema_documents_the_evidence_of_a_match(world: World) -> None:
    schema = world.api.get("/api/schema/?format=json").json()
    schemas = schema["components"]["schemas"]
    response = schema["paths"]["/api/v1/lookup"]["post"]["responses"]["200"]
    answer = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    result = schemas[answer]["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[-1]
    match_schema = schemas[
        schemas[result]["properties"]["matches"]["items"]["$ref"].rsplit("/")[-1]
    ]
    found = world.api.post(
        "/api/v1/lookup",
        {
            "use": "ai_training",
            "records": [
                {"id": "p", "pdq": PDQ_A, "phash": PHASH_A, "pdq_quality": GOOD_QUALITY},
                {"id": "u", "url": "https://bob.example/x.jpg"},
            ],
        },
        format="json",
    ).json()["results"]
    [photo_match], [claim_match] = found[0]["matches"], found[1]["matches"]

    # Claim matches carry no evidence: the field is documented but not required.
    assert "evidence" not in match_schema["required"] and "evidence" not in claim_match
    [evidence_ref] = match_schema["properties"]["evidence"]["allOf"]
    evidence_schema = schemas[evidence_ref["$ref"].rsplit("/", 1)[-1]]
    properties = evidence_schema["properties"]
    assert set(properties) == set(photo_match["evidence"]) == set(SHA256_EVIDENCE)
    assert set(evidence_schema["required"]) == set(properties)
    for name in ("pdq_distance", "pdq_threshold", "phash_distance", "phash_threshold"):
        assert (properties[name]["type"], properties[name]["nullable"]) == ("integer", True)
    for name in ("colour_distance", "colour_threshold", "layout_distance", "layout_threshold"):
        assert (properties[name]["type"], properties[name]["nullable"]) == ("number", True)
    enums = {
        name: schemas[properties[name]["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"]
        for name in ("basis", "quality")
    }
    assert set(enums["basis"]) == {"sha256", "pdq+phash", "pdq+phash+colour", "pdq", "phash"}
    assert set(enums["quality"]) == {"ok", "low_registered", "low_query"}
    assert photo_match["evidence"]["basis"] in enums["basis"]
    assert photo_match["evidence"]["quality"] in enums["quality"]


def test_a_withdrawal_and_a_new_opt_out_apply_from_the_next_version_and_show_in_changes(
    world: World,
) -> None:
    records = [{"id": "a", "sha256": SHA_A}, {"id": "c", "sha256": SHA_C}]
    before = lookup(world.api, records).json()

    withdrawn = withdraw(world.opt_alice)
    after_withdrawal = lookup(world.api, records).json()
    opt_carol = file(world.carol, ["ai_training"], "photos", photos=[world.photo_c.public_id])
    after_filing = lookup(world.api, records).json()
    feed = world.api.get("/api/v1/changes", {"since": before["registry_version"]})

    assert [r["decision"] for r in before["results"]] == ["exclude", "allow"]
    assert [r["decision"] for r in after_withdrawal["results"]] == ["allow", "allow"]
    assert [r["decision"] for r in after_filing["results"]] == ["allow", "exclude"]
    assert after_withdrawal["registry_version"] == withdrawn.withdrawn_version
    assert after_filing["registry_version"] == opt_carol.filed_version
    assert (
        before["registry_version"]
        < after_withdrawal["registry_version"]
        < after_filing["registry_version"]
    )
    assert feed.status_code == 200
    assert feed.json() == {
        "registry_version": opt_carol.filed_version,
        "next": None,
        "results": [
            {
                "registry_version": withdrawn.withdrawn_version,
                "kind": "opt_out_withdrawn",
                "opt_out": str(world.opt_alice.public_id),
                "replaces": None,
                "uses": ["ai_training"],
                "scope": "all_photos",
                "hashes": [
                    {
                        "sha256": SHA_A,
                        "pdq": PDQ_A,
                        "pdq_quality": None,
                        "phash": PHASH_A,
                        "colour": None,
                        "variants": [],
                    }
                ],
                "hashes_complete": True,
                "claims": [],
                "at": at(event_of("opt_out_withdrawn", world.opt_alice.public_id)),
            },
            {
                "registry_version": opt_carol.filed_version,
                "kind": "opt_out_filed",
                "opt_out": str(opt_carol.public_id),
                "replaces": None,
                "uses": ["ai_training"],
                "scope": "photos",
                "hashes": [plain(SHA_C)],
                "hashes_complete": True,
                "claims": [],
                "at": at(event_of("opt_out_filed", opt_carol.public_id)),
            },
        ],
    }


# --- POST /api/v1/lookup: bad requests ------------------------------------------------


def test_more_than_10000_records_is_a_413_before_anything_is_decided(world: World) -> None:
    records = [{"id": str(i), "sha256": SHA_A} for i in range(10_001)]

    response = lookup(world.api, records)

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "10001 records; one lookup takes at most 10000. "
        "Split them, or submit a batch (POST /api/v1/batches).",
    }
    assert PipelineRequest.objects.count() == 0


def test_exactly_10000_records_are_all_decided_in_order(world: World) -> None:
    records = [{"id": f"r{i}", "sha256": SHA_A if i % 2 else SHA_C} for i in range(10_000)]

    response = lookup(world.api, records)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == [f"r{i}" for i in range(10_000)]
    assert sum(r["decision"] == "exclude" for r in results) == 5_000
    assert PipelineRequest.objects.get().excluded_count == 5_000


def test_an_unknown_use_is_a_400_naming_the_allowed_uses(world: World) -> None:
    response = lookup(world.api, [{"id": "r", "sha256": SHA_A}], use="face_recognition")

    message = f'"face_recognition" is not a use; allowed: {USES_ALLOWED}.'
    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": message, "fields": {"use": [message]}}
    assert PipelineRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"use": "ai_training"}, {"records": ["This field is required."]}),
        (
            {"use": "ai_training", "records": {"id": "r1"}},
            {"records": ["Expected a list of records, got dict."]},
        ),
        (
            {"use": "ai_training", "records": "r1"},
            {"records": ["Expected a list of records, got str."]},
        ),
        (
            {"use": "ai_training", "records": [], "thresholds": "strict"},
            {
                "thresholds": {
                    "non_field_errors": ["Invalid data. Expected a dictionary, but got str."]
                }
            },
        ),
        (
            [{"id": "r1", "sha256": SHA_A}],
            {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        ),
    ],
)
def test_a_body_without_a_list_of_records_is_a_400_naming_the_field(
    world: World, body: Any, fields: dict[str, Any]
) -> None:
    response = world.api.post("/api/v1/lookup", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["fields"] == fields
    assert PipelineRequest.objects.count() == 0


def test_an_empty_list_of_records_is_answered_with_no_results(world: World) -> None:
    response = lookup(world.api, [])

    assert response.json() == {"registry_version": registry_version_current(), "results": []}


def test_malformed_json_is_a_400_and_a_form_is_a_415(world: World) -> None:
    garbled = world.api.post("/api/v1/lookup", "{not json", content_type="application/json")
    form = world.api.post("/api/v1/lookup", {"use": "ai_training"}, format="multipart")

    assert (garbled.status_code, garbled.json()["error"]) == (400, "parse_error")
    assert (form.status_code, form.json()["error"]) == (415, "unsupported_media_type")
    assert PipelineRequest.objects.count() == 0


# --- authentication, scopes, quotas (every synchronous pipeline endpoint) ---------------

ENDPOINTS: dict[str, Callable[[APIClient], Response]] = {
    "lookup": lambda api: api.post(
        "/api/v1/lookup", {"use": "ai_training", "records": []}, format="json"
    ),
    "changes": lambda api: api.get("/api/v1/changes"),
    "urls": lambda api: api.post(
        "/api/v2/query/urls/", "https://bob.example/x.jpg", content_type="text/plain"
    ),
}


def _creator_token(organization: Organization) -> str:
    _, raw = registry_services.token_create(creator=CreatorFactory(), name="laptop")
    return raw


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize(
    ("header", "status", "error", "detail"),
    [
        (lambda org: "", 401, "not_authenticated", "Authentication credentials were not provided."),
        (
            lambda org: "Api-Key",
            401,
            "authentication_failed",
            "Malformed Authorization header: expected 'Api-Key <key>'.",
        ),
        (
            lambda org: "Api-Key not.a-key",
            401,
            "authentication_failed",
            "Invalid or revoked API key.",
        ),
        (
            lambda org: "Api-Key é",
            401,
            "authentication_failed",
            "API key contains invalid characters.",
        ),
        (
            lambda org: f"Api-Key {revoked_api_key(org)}",
            401,
            "authentication_failed",
            "Invalid or revoked API key.",
        ),
        (
            lambda org: f"Api-Key {expired_api_key(org)}",
            401,
            "authentication_failed",
            "This API key has expired.",
        ),
        (
            lambda org: f"Token {_creator_token(org)}",
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        (
            lambda org: f"Api-Key {raw_key(org, scopes=('batches',))}",
            403,
            "permission_denied",
            "This API key lacks the 'lookup' scope.",
        ),
    ],
    ids=["none", "no-key", "garbled", "non-ascii", "revoked", "expired", "token", "no-scope"],
)
def test_pipeline_endpoints_refuse_bad_credentials_with_json(
    endpoint: str,
    header: Callable[[Organization], str],
    status: int,
    error: str,
    detail: str,
) -> None:
    organization = OrganizationFactory()
    api = APIClient()
    value = header(organization)
    if value:
        api.credentials(HTTP_AUTHORIZATION=value)

    response = ENDPOINTS[endpoint](api)

    assert response.status_code == status
    assert response.json() == {"error": error, "detail": detail}
    if status == 401:
        assert response["WWW-Authenticate"] == "Api-Key"
    assert PipelineRequest.objects.count() == 0


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_suspended_organization_is_refused_with_403(endpoint: str) -> None:
    organization = OrganizationFactory()
    api = pipeline(raw_key(organization))
    Organization.objects.filter(pk=organization.pk).update(suspended_at=timezone.now())

    response = ENDPOINTS[endpoint](api)

    assert response.status_code == 403
    assert response.json() == {
        "error": "permission_denied",
        "detail": "This organization is suspended.",
    }
    assert PipelineRequest.objects.count() == 0


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_key_over_its_quota_gets_429_with_retry_after(endpoint: str, settings: Any) -> None:
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, endpoint: "2/min"},
    }
    organization = OrganizationFactory()
    api, other_key = pipeline(raw_key(organization)), pipeline(raw_key(organization))
    other_endpoint = next(name for name in sorted(ENDPOINTS) if name != endpoint)

    statuses = [ENDPOINTS[endpoint](api).status_code for _ in range(2)]
    refused = ENDPOINTS[endpoint](api)
    same_key_other_quota = ENDPOINTS[other_endpoint](api)
    other_key_same_quota = ENDPOINTS[endpoint](other_key)

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert refused.json() == {
        "error": "throttled",
        "detail": f"Request was throttled. Expected available in {refused['Retry-After']} seconds.",
    }
    assert same_key_other_quota.status_code == 200
    assert other_key_same_quota.status_code == 200
    assert PipelineRequest.objects.count() == 4


def test_the_spawning_scheme_api_is_accepted_too(world: World) -> None:
    raw = raw_key(world.acme)

    response = lookup(pipeline(raw, scheme="API"), [{"id": "r", "sha256": SHA_A}])

    assert response.status_code == 200
    assert response.json()["results"][0]["decision"] == "exclude"


@pytest.mark.worker  # needs Redis: the quota lives in the shared cache
def test_quotas_are_counted_in_the_shared_redis_cache(world: World, settings: Any) -> None:
    """Every web process reads and writes one history per key in Redis: emptied
    there (as if by another process's view of it), the key has its quota back."""
    import os

    import redis

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "lookup": "2/min"},
    }
    key, raw = services.api_key_create(organization=world.acme, name="quota")
    api = pipeline(raw)
    shared = redis.Redis.from_url(os.environ["REDIS_URL"])

    first = [lookup(api, []).status_code for _ in range(2)]
    names = list(shared.scan_iter(match=f"*throttle_lookup_{key.prefix}", count=10_000))
    refused = lookup(api, []).status_code
    shared.delete(*names)
    after_reset = lookup(api, []).status_code

    # (The history expires by itself a minute later.)
    assert first == [200, 200]
    assert len(names) == 1
    assert refused == 429
    assert after_reset == 200


def test_an_all_photos_opt_out_covers_photos_registered_after_it(world: World) -> None:
    records = [{"id": "alice-later", "sha256": SHA_B}, {"id": "carol-later", "sha256": "d" * 64}]
    file(world.carol, ["ai_training"], "photos", photos=[world.photo_c.public_id])
    before = lookup(world.api, records).json()

    [alice_later] = register(world.alice, HashLine(sha256=SHA_B))
    [carol_later] = register(world.carol, HashLine(sha256="d" * 64))
    after = lookup(world.api, records).json()

    assert alice_later.registered_version > world.opt_alice.filed_version
    assert [r["decision"] for r in before["results"]] == ["allow", "allow"]
    # Alice's opt-out over all her photos covers the one registered later; Carol's
    # over chosen photos does not.
    assert after["results"] == [
        {"id": "alice-later", "decision": "exclude", "matches": [sha_match(world.opt_alice)]},
        {"id": "carol-later", "decision": "allow", "matches": []},
    ]
    assert after["registry_version"] == carol_later.registered_version


# --- audit log ---------------------------------------------------------------------------


def test_every_lookup_leaves_an_audit_row_and_a_log_line_with_the_key_prefix(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    key, raw = services.api_key_create(organization=world.acme, name="crawler")
    records = [{"id": "a", "sha256": SHA_A}, {"id": "c", "sha256": SHA_C}, {"id": "x"}]

    with caplog.at_level(logging.INFO, logger="optout.pipeline"):
        response = lookup(pipeline(raw), records, use="ai_generative_training")

    assert response.status_code == 200
    audit = PipelineRequest.objects.get()
    assert {
        "organization": audit.organization,
        "api_key": audit.api_key,
        "key_prefix": audit.key_prefix,
        "endpoint": audit.endpoint,
        "use": audit.use,
        "record_count": audit.record_count,
        "excluded_count": audit.excluded_count,
        "registry_version": audit.registry_version,
        "batch": audit.batch,
    } == {
        "organization": world.acme,
        "api_key": key,
        "key_prefix": key.prefix,
        "endpoint": "lookup",
        "use": "ai_generative_training",
        "record_count": 3,
        "excluded_count": 1,
        "registry_version": response.json()["registry_version"],
        "batch": None,
    }
    [line] = [r.getMessage() for r in caplog.records if r.name == "optout.pipeline"]
    assert line == (
        f"lookup key={key.prefix} organization=Acme Vision use=ai_generative_training "
        f"records=3 excluded=1 registry_version={audit.registry_version}"
    )


# --- membership privacy -----------------------------------------------------------------


def test_no_pipeline_response_names_a_creator_photo_or_claim(world: World) -> None:
    [later] = register(world.alice, HashLine(sha256=SHA_B, filename="alice-later.jpg"))
    claims = list(Claim.objects.filter(creator=world.bob))
    records = [
        {"id": "a", "sha256": SHA_A},
        {"id": "b", "sha256": SHA_B},
        {"id": "u", "url": "https://bob.example/x.jpg"},
        # A perceptual match, with its evidence (variant, distances).
        {"id": "p", "pdq": PDQ_A, "phash": PHASH_A, "pdq_quality": GOOD_QUALITY},
    ]

    bodies = [
        lookup(world.api, records).content,
        world.api.get("/api/v1/changes", {"since": 0}).content,
        world.api.post(
            "/api/v2/query/urls/", "https://bob.example/x.jpg\n", content_type="text/plain"
        ).content,
    ]

    secrets = [
        "alice@example.org",
        "bob@example.org",
        "alice-dawn",
        "alice-later",
        str(world.alice.public_id),
        str(world.bob.public_id),
        str(world.photo_a.public_id),
        str(later.public_id),
        *(str(c.public_id) for c in claims),
    ]
    for body in bodies:
        text = body.decode()
        assert [secret for secret in secrets if secret in text] == []
    # The check can fail: the opt-out ids (which pipelines may see) are there.
    assert str(world.opt_alice.public_id) in bodies[0].decode()
    assert '"evidence"' in bodies[0].decode()
    assert str(world.opt_bob.public_id) in bodies[1].decode()
    assert SHA_B in bodies[1].decode()


def openapi_to_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a null alternative."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: openapi_to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def undocumented(schema: dict[str, Any], method: str, path: str, response: Response) -> list[str]:
    """What in a JSON response its operation's schema for that status does not allow."""
    responses = schema["paths"][path][method]["responses"]
    body_schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
    root = {
        **openapi_to_json_schema(body_schema),
        "components": openapi_to_json_schema(schema["components"]),
    }
    validator = Draft202012Validator(root)
    return [
        f"{method} {path} {response.status_code} at /{'/'.join(map(str, e.absolute_path))}: "
        f"{e.message}"
        for e in validator.iter_errors(response.json())
    ]


def pipeline_response_objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object schema reachable from a pipeline operation's responses (every
    path outside the creator API), by the component or operation it is found in."""
    components = schema["components"]["schemas"]
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
        elif isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    walk(components[name], name)
            if node.get("type") == "object" and "properties" in node:
                found[f"{where}:{','.join(node['properties'])}"] = node
            for value in node.values():
                walk(value, where)

    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1/me/"):
            for method, operation in operations.items():
                walk(operation.get("responses", {}), f"{method.upper()} {path}")
    return found


def test_every_pipeline_response_schema_is_closed(world: World) -> None:
    schema = world.api.get("/api/schema/?format=json").json()

    objects = pipeline_response_objects(schema)

    names = {where.split(":")[0] for where in objects}
    # The walk reaches every response body a pipeline reads, down to the evidence.
    assert {
        "LookupResponse",
        "LookupResult",
        "LookupMatch",
        "MatchEvidence",
        "ChangesPage",
        "Change",
        "ChangeHash",
        "ChangeVariant",
        "ChangeClaim",
        "UrlQueryResult",
        "BatchAccepted",
        "Batch",
        "BatchCounts",
        "Receipt",
        "ReceiptStatement",
        "ReceiptPublicKey",
        "RegistryEngine",
        "Error",
    } <= names
    assert {
        where: node.get("additionalProperties") for where, node in objects.items()
    } == dict.fromkeys(objects, False)


def test_pipeline_responses_hold_only_the_fields_their_schemas_name(
    world: World, settings: Any
) -> None:
    from optout import receipts
    from optout.models import Batch, Chunk
    from optout.tasks import batch_chunk_decide_task
    from tests.optout.batch_helpers import jsonl, submit

    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(receipts.private_key_generate())
    receipts.signing_key_cache_clear()
    schema = world.api.get("/api/schema/?format=json").json()
    records = [
        {"id": "sha", "sha256": SHA_A},
        {"id": "both", "pdq": PDQ_A, "phash": PHASH_A, "pdq_quality": GOOD_QUALITY},
        {"id": "domain", "url": "https://cdn.bob.example/x.jpg"},
        {"id": "carol", "sha256": SHA_C},
        {"id": "short", "sha256": "abc"},
    ]
    submitted = submit(world.api, jsonl(records), key="closed")
    batch = Batch.objects.get(public_id=submitted.json()["id"])
    for chunk_id in Chunk.objects.filter(batch=batch).values_list("pk", flat=True):
        batch_chunk_decide_task(chunk_id)
    anonymous = APIClient()

    responses = [
        ("post", "/api/v1/lookup", lookup(world.api, records)),
        ("get", "/api/v1/changes", world.api.get("/api/v1/changes", {"since": 0})),
        (
            "post",
            "/api/v2/query/urls/",
            world.api.post(
                "/api/v2/query/urls/",
                "https://bob.example/x.jpg\nhttps://example.org/a.jpg",
                content_type="text/plain",
            ),
        ),
        ("post", "/api/v1/batches", submitted),
        ("get", "/api/v1/batches/{id}", world.api.get(f"/api/v1/batches/{batch.public_id}")),
        ("get", "/api/v1/batches", world.api.get("/api/v1/batches")),
        ("get", "/api/v1/receipts/public-key", anonymous.get("/api/v1/receipts/public-key")),
        ("get", "/api/v1/registry", world.api.get("/api/v1/registry")),
        ("post", "/api/v1/lookup", lookup(world.api, records, use="scraping")),
        ("get", "/api/v1/changes", anonymous.get("/api/v1/changes")),
        ("get", "/api/v1/batches/{id}", world.api.get(f"/api/v1/batches/{uuid.uuid4()}")),
    ]

    statuses = [response.status_code for _, _, response in responses]
    assert statuses == [200, 200, 200, 202, 200, 200, 200, 200, 400, 401, 404]
    detail = responses[4][2].json()
    assert detail["status"] == "done" and detail["receipt"]["statement"]["excluded_count"] == 3
    lookup_body = responses[0][2].json()
    assert [r["decision"] for r in lookup_body["results"]] == [
        "exclude",
        "exclude",
        "exclude",
        "allow",
        "invalid",
    ]
    assert "evidence" in lookup_body["results"][1]["matches"][0]
    assert [problem for m, p, r in responses for problem in undocumented(schema, m, p, r)] == []
    # The check can fail: one field more, anywhere in a body, is refused.
    grown = APIClient().get("/api/v1/receipts/public-key")
    grown.json = lambda: {**lookup_body, "creator": str(world.alice.public_id)}  # type: ignore[method-assign]
    assert undocumented(schema, "post", "/api/v1/lookup", grown) == [
        "post /api/v1/lookup 200 at /: Additional properties are not allowed "
        "('creator' was unexpected)"
    ]
    lookup_body["results"][1]["matches"][0]["evidence"]["photo"] = "x"
    grown.json = lambda: lookup_body  # type: ignore[method-assign]
    assert len(undocumented(schema, "post", "/api/v1/lookup", grown)) == 1
    receipts.signing_key_cache_clear()


# --- GET /api/v1/changes ------------------------------------------------------------------


def change(
    opt_out: OptOut | None,
    event: ConsentEvent,
    hashes: list[dict[str, Any]],
    *,
    uses: list[str] | None = None,
    scope: str | None = None,
    claims: list[dict[str, str]] | None = None,
    complete: bool = True,
    kind: str | None = None,
    replaces: OptOut | None = None,
) -> dict[str, Any]:
    return {
        "registry_version": event.registry_version,
        "kind": kind or event.kind,
        "opt_out": str(opt_out.public_id) if opt_out else None,
        "replaces": str(replaces.public_id) if replaces else None,
        "uses": uses if uses is not None else opt_out.uses if opt_out else [],
        "scope": scope or (opt_out.scope if opt_out else "all_photos"),
        "hashes": hashes,
        "hashes_complete": complete,
        "claims": claims or [],
        "at": at(event),
    }


def query_of(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


def plain(sha256: str) -> dict[str, Any]:
    return {
        "sha256": sha256,
        "pdq": None,
        "pdq_quality": None,
        "phash": None,
        "colour": None,
        "variants": [],
    }


def test_changes_list_what_changes_decisions_and_nothing_else() -> None:
    alice, bob, carol = CreatorFactory(), CreatorFactory(), CreatorFactory()
    since = registry_version_current()
    register(alice, HashLine(sha256=SHA_B))
    opt_alice = file(alice, ["ai_training", "data_mining"])
    mirror = Variant("mirror", "1e" * 32, 77, "5a" * 8, colour="0c" * 33)
    crop = Variant("crop_centre_90", "2d" * 32, 64, "69" * 8, colour="f3" * 33)
    [later] = register(
        alice,
        HashLine(
            sha256=SHA_A,
            pdq=PDQ_A,
            pdq_quality=88,
            phash=PHASH_A,
            variants=(mirror, crop),
            colour="0b" * 33,
        ),
    )
    domain = claim(bob, "domain", "bob.example")
    opt_bob = file(bob, ["data_mining"], "claims", claims=[domain.public_id])
    register(carol, HashLine(sha256=SHA_C))
    withdraw(opt_alice)
    register(alice, HashLine(sha256="d" * 64))
    api = pipeline(raw_key(OrganizationFactory()))

    response = api.get("/api/v1/changes", {"since": since})

    assert response.status_code == 200
    # A photo is listed with its quality and its derived variants: pipelines
    # re-checking earlier batches match against them as the registry does.
    full_a = {
        "sha256": SHA_A,
        "pdq": PDQ_A,
        "pdq_quality": 88,
        "phash": PHASH_A,
        "colour": "0b" * 33,
        "variants": [
            {
                "name": "mirror",
                "pdq": "1e" * 32,
                "pdq_quality": 77,
                "phash": "5a" * 8,
                "colour": "0c" * 33,
            },
            {
                "name": "crop_centre_90",
                "pdq": "2d" * 32,
                "pdq_quality": 64,
                "phash": "69" * 8,
                "colour": "f3" * 33,
            },
        ],
    }
    assert response.json() == {
        "registry_version": registry_version_current(),
        "next": None,
        "results": [
            change(opt_alice, event_of("opt_out_filed", opt_alice.public_id), [plain(SHA_B)]),
            change(
                None,
                event_of("photo_registered", later.public_id),
                [full_a],
                uses=["data_mining", "ai_training"],
            ),
            change(
                opt_bob,
                event_of("opt_out_filed", opt_bob.public_id),
                [],
                claims=[{"kind": "domain", "value": "bob.example"}],
            ),
            change(
                opt_alice,
                event_of("opt_out_withdrawn", opt_alice.public_id),
                [full_a, plain(SHA_B)],
            ),
        ],
    }
    assert PipelineRequest.objects.get().endpoint == "changes"


def test_changes_leave_out_opt_outs_excepting_the_organization() -> None:
    alice = CreatorFactory()
    acme, other = OrganizationFactory(), OrganizationFactory()
    since = registry_version_current()
    opt_out = file(alice, ["ai_training"], exceptions=[acme.public_id])
    register(alice, HashLine(sha256=SHA_A))
    withdraw(opt_out)

    excepted = pipeline(raw_key(acme)).get("/api/v1/changes", {"since": since}).json()
    refused = pipeline(raw_key(other)).get("/api/v1/changes", {"since": since}).json()

    assert excepted["results"] == []
    assert [r["kind"] for r in refused["results"]] == [
        "opt_out_filed",
        "photo_registered",
        "opt_out_withdrawn",
    ]


def test_a_changed_opt_out_matches_from_its_version_and_the_one_it_replaces_stops_there() -> None:
    dave = CreatorFactory()
    photo_a, photo_b = register(dave, HashLine(sha256=SHA_A), HashLine(sha256=SHA_B))
    old = file(dave, ["ai_training"], "photos", photos=[photo_a.public_id])
    api = pipeline(raw_key(OrganizationFactory()))
    records = [{"id": "a", "sha256": SHA_A}, {"id": "b", "sha256": SHA_B}]
    before = lookup(api, records).json()

    new = change_to(old, ["ai_training"], "photos", photos=[photo_b.public_id])
    after = lookup(api, records).json()
    feed = api.get("/api/v1/changes", {"since": before["registry_version"]})

    changed = event_of("opt_out_changed", new.public_id)
    v = changed.registry_version
    assert [r["decision"] for r in before["results"]] == ["exclude", "allow"]
    assert before["results"][0]["matches"] == [sha_match(old)]
    assert [r["decision"] for r in after["results"]] == ["allow", "exclude"]
    assert after["results"][1]["matches"] == [sha_match(new)]
    assert after["registry_version"] == v == before["registry_version"] + 1
    assert new.filed_version == OptOut.objects.get(pk=old.pk).withdrawn_version == v
    # One change tells both effects at v: the new opt-out matches (with its
    # hashes, as a filing would list them), the one it replaces stops.
    assert feed.status_code == 200
    assert feed.json() == {
        "registry_version": v,
        "next": None,
        "results": [change(new, changed, [plain(SHA_B)], replaces=old)],
    }
    assert str(dave.public_id) not in feed.content.decode()
    assert str(photo_b.public_id) not in feed.content.decode()


def test_a_change_into_or_out_of_an_exception_is_listed_as_the_organization_sees_it() -> None:
    alice = CreatorFactory()
    acme, other = OrganizationFactory(), OrganizationFactory()
    register(alice, HashLine(sha256=SHA_A))
    since = registry_version_current()
    first = file(alice, ["ai_training"])
    second = change_to(first, ["ai_training"], exceptions=[acme.public_id])
    third = change_to(second, ["ai_training", "data_mining"])
    acme_api, other_api = pipeline(raw_key(acme)), pipeline(raw_key(other))

    excepted = acme_api.get("/api/v1/changes", {"since": since}).json()
    refused = other_api.get("/api/v1/changes", {"since": since}).json()

    filed = event_of("opt_out_filed", first.public_id)
    to_second = event_of("opt_out_changed", second.public_id)
    to_third = event_of("opt_out_changed", third.public_id)
    hashes = [plain(SHA_A)]
    # Acme: the second opt-out never applied to it, so the change into it is the
    # first one's withdrawal, and the change out of it is a plain new opt-out.
    assert excepted["results"] == [
        change(first, filed, hashes),
        change(first, to_second, hashes, kind="opt_out_withdrawn"),
        change(third, to_third, hashes),
    ]
    answer = lookup(other_api, [{"id": "a", "sha256": SHA_A}]).json()
    assert answer["results"][0]["matches"] == [sha_match(third)], answer
    assert refused["results"] == [
        change(first, filed, hashes),
        change(second, to_second, hashes, replaces=first),
        change(third, to_third, hashes, replaces=second),
    ]


def test_changes_pages_follow_next_to_the_end() -> None:
    creators = [CreatorFactory() for _ in range(3)]
    since = registry_version_current()
    for index, creator in enumerate(creators):
        register(creator, HashLine(sha256=f"{index + 1}" * 64))
        file(creator, ["ai_training"])
    api = pipeline(raw_key(OrganizationFactory()))
    whole = api.get("/api/v1/changes", {"since": since}).json()

    pages, url = [], f"/api/v1/changes?since={since}&limit=2"
    while url:
        page = api.get(url).json()
        pages.append(page)
        url = page["next"]

    assert [len(page["results"]) for page in pages] == [2, 1]
    path, query = query_of(pages[0]["next"])
    assert (path, query["limit"]) == ("http://testserver/api/v1/changes", "2")
    # The cursor may pass events that change nothing, never a change.
    second, third = (r["registry_version"] for r in whole["results"][1:])
    assert second <= int(query["since"]) < third
    assert [r for page in pages for r in page["results"]] == whole["results"]
    assert len(whole["results"]) == 3
    assert whole["next"] is None


def test_a_change_over_more_hashes_than_a_page_holds_is_split_in_sha256_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(changes, "PAGE_MAX_HASHES", 3)
    alice = CreatorFactory()
    shas = [f"{digit}" * 64 for digit in "7352164"]
    since = registry_version_current()
    register(alice, *(HashLine(sha256=sha) for sha in shas))
    opt_out = file(alice, ["ai_training"])
    api = pipeline(raw_key(OrganizationFactory()))

    pages, url = [], f"/api/v1/changes?since={since}"
    while url:
        page = api.get(url).json()
        pages.append(page)
        url = page["next"]

    ordered = sorted(shas)
    filed = event_of("opt_out_filed", opt_out.public_id)
    assert [page["results"] for page in pages] == [
        [change(opt_out, filed, [plain(s) for s in ordered[:3]], complete=False)],
        [change(opt_out, filed, [plain(s) for s in ordered[3:6]], complete=False)],
        [change(opt_out, filed, [plain(s) for s in ordered[6:]])],
    ]
    assert query_of(pages[0]["next"]) == (
        "http://testserver/api/v1/changes",
        {"since": str(filed.registry_version - 1), "hashes_after": ordered[2]},
    )


def test_a_page_reads_a_bounded_part_of_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "PAGE_MAX_SCANNED_EVENTS", 2)
    monkeypatch.setattr(changes, "SCAN_CHUNK", 2)
    carol, alice = CreatorFactory(), CreatorFactory()
    since = registry_version_current()
    register(carol, *(HashLine(sha256=f"{digit}" * 64) for digit in "12345"))
    opt_out = file(alice, ["ai_training"])
    api = pipeline(raw_key(OrganizationFactory()))

    pages, url = [], f"/api/v1/changes?since={since}"
    while url:
        page = api.get(url).json()
        pages.append(page)
        url = page["next"]

    versions = list(
        ConsentEvent.objects.filter(registry_version__gt=since)
        .order_by("registry_version")
        .values_list("registry_version", flat=True)
    )
    assert len(versions) == 6
    assert [len(page["results"]) for page in pages] == [0, 0, 1]
    assert [query_of(page["next"])[1] for page in pages[:2]] == [
        {"since": str(versions[1])},
        {"since": str(versions[3])},
    ]
    assert pages[2]["next"] is None
    assert pages[2]["results"][0]["opt_out"] == str(opt_out.public_id)


def test_the_query_count_of_a_changes_page_does_not_grow_with_its_photos() -> None:
    def queries_for(photo_count: int) -> int:
        alice = CreatorFactory()
        since = registry_version_current()
        file(alice, ["ai_training"])
        register(alice, *(HashLine(sha256=uuid.uuid4().hex * 2) for _ in range(photo_count)))
        api = pipeline(raw_key(OrganizationFactory()))
        with CaptureQueriesContext(connection) as captured:
            body = api.get("/api/v1/changes", {"since": since}).json()
        assert len(body["results"]) == 1 + photo_count
        return len(captured)

    assert queries_for(2) == queries_for(20)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "-1"}, "since"),
        ({"since": "abc"}, "since"),
        ({"since": "1.5"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"hashes_after": "xyz"}, "hashes_after"),
        # A blank value is a bad value, not a missing one.
        ({"since": ""}, "since"),
        ({"limit": ""}, "limit"),
        ({"hashes_after": ""}, "hashes_after"),
    ],
)
def test_bad_changes_parameters_are_a_400_naming_them(
    world: World, params: dict[str, str], field: str
) -> None:
    response = world.api.get("/api/v1/changes", params)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert list(response.json()["fields"]) == [field]
    assert PipelineRequest.objects.count() == 0


def test_a_changes_parameter_given_twice_is_a_400_not_the_last_one_wins(world: World) -> None:
    response = world.api.get("/api/v1/changes?since=0&since=1")

    assert response.status_code == 400
    assert response.json()["fields"] == {"since": ["give this parameter once"]}


def test_changes_without_since_start_at_the_beginning(world: World) -> None:
    response = world.api.get("/api/v1/changes")

    assert [r["opt_out"] for r in response.json()["results"]] == [
        str(world.opt_alice.public_id),
        str(world.opt_bob.public_id),
    ]


def test_changes_since_the_current_version_are_empty(world: World) -> None:
    current = registry_version_current()

    response = world.api.get("/api/v1/changes", {"since": current + 5})

    assert response.json() == {"registry_version": current, "next": None, "results": []}
