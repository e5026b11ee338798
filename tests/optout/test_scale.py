"""A match that neither the colours nor the keypoints confirm is held back by
the registry's size (optout/matching/scale.py, decide._size_judged)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from optout.matching import DEFAULT_THRESHOLDS, Record, Snapshot, decide
from optout.matching.rule import DEFAULT_RULE, MAX_STRICTNESS, PDQ_STEP, QueryHashes
from optout.matching.scale import (
    COLOURS_AGREE,
    FALSE_EXCLUSION_TARGET,
    UNCONFIRMED,
    form_strictness,
    held_back_strictness,
    tail_strictness,
)
from registry import keypoints
from registry.colour import colour_signature
from tests.images import skimage_photo
from tests.optout.batch_helpers import flip_bits
from tests.optout.test_matching import opt_out, photo

BOTH = QueryHashes("a" * 64, "b" * 16, 90)
BARE = QueryHashes("a" * 64, "b" * 16, None)
PDQ_ONLY = QueryHashes("a" * 64, "", 90)
BARE_PHASH = QueryHashes("", "b" * 16, None)
# The most photos at which a record with both hashes and its quality gets the
# registry's own rule for an unconfirmed match.
FULL_RULE_UP_TO = math.floor(FALSE_EXCLUSION_TARGET / UNCONFIRMED["pdq+phash", True].rate)
# The photo's middle box: "edited" sits inside it by half a step, so the rule
# one step stricter leaves it out; "close" stays inside every stricter rule.
BOX = DEFAULT_RULE.kinds["original"].both[1]
# The most photos at which a match whose colours agree keeps the full rule.
COLOURS_FULL_RULE_UP_TO = math.floor(FALSE_EXCLUSION_TARGET / COLOURS_AGREE.rate)
EDITS = {"edited": (BOX.pdq - PDQ_STEP // 2, BOX.phash), "close": (2, 0)}


def unconfirmed(photos: int, query: QueryHashes) -> int:
    return held_back_strictness(photos, query, colours_agree=False)


# --- how many steps --------------------------------------------------------------


def test_a_small_registry_judges_every_match_by_its_own_rule() -> None:
    for query in (BOTH, BARE, PDQ_ONLY, BARE_PHASH):
        assert unconfirmed(0, query) == 0
    assert unconfirmed(FULL_RULE_UP_TO, BOTH) == 0
    assert unconfirmed(FULL_RULE_UP_TO + 1, BOTH) == 1


def test_each_step_holds_back_the_rate_by_its_factor() -> None:
    """Every factor of the form's tail more photos is one step more, up to
    the strictest rule a pipeline could ask for."""
    for form, tail in UNCONFIRMED.items():
        if not tail.rate:
            continue
        for steps in range(MAX_STRICTNESS + 1):
            most = math.floor(FALSE_EXCLUSION_TARGET * tail.factor**steps / tail.rate)
            assert form_strictness(most, form) == steps, (form, steps)
            assert form_strictness(most + 1, form) == min(steps + 1, MAX_STRICTNESS)
    held = [unconfirmed(10**k, BOTH) for k in range(2, 10)]
    assert held == sorted(held)  # never looser for a larger registry
    assert held[-1] == MAX_STRICTNESS


def test_at_a_million_photos_every_record_form_is_held_to_the_target() -> None:
    """The expected false exclusions per record, N x rate / factor^steps, at
    or under the target at 10^6 photos for every form the table knows, with
    no step more than that needs."""
    photos = 1_000_000
    for form, (rate, factor) in UNCONFIRMED.items():
        steps = form_strictness(photos, form)
        assert photos * rate / factor**steps <= FALSE_EXCLUSION_TARGET, form
        assert steps == 0 or photos * rate / factor ** (steps - 1) > FALSE_EXCLUSION_TARGET
    # A PDQ with its quality is far more selective than PDQ + pHash: fewer steps.
    assert unconfirmed(photos, PDQ_ONLY) < unconfirmed(photos, BOTH) == 4
    # A bare pHash never matches anything: nothing to hold back.
    assert unconfirmed(10**9, BARE_PHASH) == 0


# --- deciding --------------------------------------------------------------------


def near_edits(pdq: str, phash: str) -> dict[str, tuple[str, str]]:
    """A photo's PDQ and pHash moved as EDITS says, by name."""
    rng = random.Random(3)
    return {
        name: (flip_bits(pdq, pdq_bits, rng), flip_bits(phash, phash_bits, rng))
        for name, (pdq_bits, phash_bits) in EDITS.items()
    }


def _decisions(snapshot: Snapshot, records: list[Record], **thresholds: int) -> dict[str, object]:
    found = decide(
        records,
        snapshot,
        use="ai_training",
        organization=None,
        thresholds=replace(DEFAULT_THRESHOLDS, **thresholds),
    )
    return {d.id: d for d in found}


def _records(given, **extra: object) -> list[Record]:
    return [
        Record(id=name, pdq=pdq, phash=phash, pdq_quality=90, **extra)
        for name, (pdq, phash) in near_edits(given.pdq, given.phash).items()
    ]


def test_an_unconfirmed_match_needs_the_stricter_rule_in_a_larger_registry() -> None:
    given = photo(1)
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    records = _records(given)

    small = _decisions(snapshot, records, registry_photos=FULL_RULE_UP_TO)
    large = _decisions(snapshot, records, registry_photos=FULL_RULE_UP_TO + 1)

    assert {name: d.decision for name, d in small.items()} == {
        "edited": "exclude",
        "close": "exclude",
    }
    assert small["edited"].matches[0].evidence["strictness"] == 0
    assert {name: d.decision for name, d in large.items()} == {
        "edited": "allow",
        "close": "exclude",
    }
    # The evidence names the stricter rule it was judged by: its step and box.
    evidence = large["close"].matches[0].evidence
    stricter = DEFAULT_RULE.shifted(-1).kinds["original"].both
    assert evidence["strictness"] == 1
    assert (evidence["pdq_threshold"], evidence["phash_threshold"]) in {
        (box.pdq, box.phash) for box in stricter
    }


def test_a_pipelines_own_strictness_counts_towards_the_registrys() -> None:
    given = photo(1)
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    records = _records(given)

    # Two steps asked for, one needed by the size: the pipeline's two.
    asked = _decisions(snapshot, records, registry_photos=FULL_RULE_UP_TO + 1, strictness=2)

    assert asked["edited"].decision == "allow"
    assert asked["close"].matches[0].evidence["strictness"] == 2


@pytest.fixture(scope="module")
def coffee():
    return skimage_photo("coffee")


def test_agreeing_colours_hold_a_match_back_far_less(coffee) -> None:
    """Colours that agree make a match far more selective: the full rule for
    registries where hashes alone are held back, one step stricter only
    once the colours' own tail needs it."""
    colour = colour_signature(coffee)
    given = replace(photo(1), colour=colour)
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    size = FULL_RULE_UP_TO + 1

    confirmed = _decisions(snapshot, _records(given, colour=colour), registry_photos=size)
    unconfirmed_ = _decisions(snapshot, _records(given), registry_photos=size)
    larger = _decisions(
        snapshot, _records(given, colour=colour), registry_photos=COLOURS_FULL_RULE_UP_TO + 1
    )

    assert confirmed["edited"].decision == "exclude"
    evidence = confirmed["edited"].matches[0].evidence
    assert evidence["colour_distance"] is not None and evidence["strictness"] == 0
    # Without the record's colours the same hashes are held back.
    assert unconfirmed_["edited"].decision == "allow"
    # A registry large enough for the colours' tail: one step stricter.
    assert tail_strictness(COLOURS_FULL_RULE_UP_TO + 1, COLOURS_AGREE) == 1
    assert larger["edited"].decision == "allow"
    assert larger["close"].matches[0].evidence["strictness"] == 1


def test_agreeing_keypoints_confirm_a_match_whatever_the_registrys_size(coffee) -> None:
    given = replace(photo(1), keypoints=keypoints.photo_keypoints_of(coffee))
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    own = keypoints.keypoints_of(coffee)
    other = keypoints.keypoints_of(skimage_photo("astronaut"))

    found = _decisions(snapshot, _records(given, keypoints=own), registry_photos=10**8)
    impostor = _decisions(snapshot, _records(given, keypoints=other), registry_photos=10**8)

    assert found["edited"].decision == "exclude"
    evidence = found["edited"].matches[0].evidence
    assert evidence["keypoint_inliers"] >= evidence["keypoint_threshold"]
    assert evidence["strictness"] == 0
    # Keypoints that disagree are no confirmation: the hashes alone do not
    # count, however close.
    assert {name: d.decision for name, d in impostor.items()} == {
        "edited": "allow",
        "close": "allow",
    }


def test_a_sha256_match_is_never_held_back() -> None:
    given = photo(1)
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])

    found = _decisions(snapshot, [Record(id="exact", sha256=given.sha256)], registry_photos=10**9)

    assert found["exact"].decision == "exclude"
    assert found["exact"].matches[0].kind == "sha256"


def test_a_photo_registered_without_colours_cannot_confirm_a_colour_record(coffee) -> None:
    """The registered side counts too: other tools' hashes, registered with
    neither colours nor keypoints, confirm nothing."""
    given = photo(1)  # no colour, no keypoints
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    record = _records(given, colour=colour_signature(coffee))

    found = _decisions(snapshot, record, registry_photos=FULL_RULE_UP_TO + 1)
    assert found["edited"].decision == "allow"
