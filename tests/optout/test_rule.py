"""optout.matching.rule: the perceptual decision rule at its threshold edges.

Pure: hashes are built here with an exact number of differing bits; colour
signatures from scikit-image's photographs (registry.colour).
"""

from __future__ import annotations

import importlib
import io
import math
import random
import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from optout.matching import rule_fingerprint
from optout.matching.rule import (
    DEFAULT_RULE,
    KINDS,
    MAX_STRICTNESS,
    PDQ_INDEXED_KINDS,
    PDQ_STEP,
    PHASH_STEP,
    PRIMARY_KINDS,
    PRIMARY_PHASH_RADIUS,
    UNKNOWN_QUALITY_RULE,
    Box,
    KindRule,
    MatchRule,
    QueryHashes,
    VariantHashes,
    hamming_hex,
    rule_for,
    sha256_evidence,
)
from registry.colour import (
    COLOUR_CONFIRM_THRESHOLD,
    COLOUR_THRESHOLD,
    LAYOUT_THRESHOLD,
    colour_distance,
    colour_signature,
    faint_colour,
    layout_parts,
)
from registry.hashing import band_signature
from tests.images import encode, skimage_photo

PDQ = "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724"
PHASH = "d1c4a5b2e6f0193c"


def flip(hex_value: str, bits: int, seed: int = 0) -> str:
    """``hex_value`` with exactly ``bits`` distinct bits flipped."""
    width = len(hex_value) * 4
    positions = random.Random(seed).sample(range(width), bits)
    value = int(hex_value, 16)
    for position in positions:
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def variant(
    kind: str = "original", quality: int = 100, name: str | None = None, colour: str = ""
) -> VariantHashes:
    return VariantHashes(
        name=name or kind, kind=kind, pdq=PDQ, pdq_quality=quality, phash=PHASH, colour=colour
    )


def query(
    pdq_bits: int | None, phash_bits: int | None, quality: int | None = None, colour: str = ""
) -> QueryHashes:
    return QueryHashes(
        pdq="" if pdq_bits is None else flip(PDQ, pdq_bits),
        phash="" if phash_bits is None else flip(PHASH, phash_bits, seed=1),
        pdq_quality=quality,
        colour=colour,
    )


def _jpeg_again(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, "JPEG", quality=quality)))


# Colour signatures of real photographs: the coffee cup, a recompressed copy of
# it (the same photo), the cat (another colour photo), the cup in grayscale
# and the cameraman (black and white).
COFFEE = colour_signature(skimage_photo("coffee"))
COFFEE_JPEG = colour_signature(_jpeg_again(skimage_photo("coffee"), 50))
CAT = colour_signature(skimage_photo("chelsea"))
COFFEE_GREY = colour_signature(skimage_photo("coffee").convert("L"))
CAMERA = colour_signature(skimage_photo("camera"))
COFFEE_GREY_JPEG = colour_signature(_jpeg_again(skimage_photo("coffee").convert("L"), 50))


def test_flip_changes_exactly_the_requested_bits() -> None:
    assert hamming_hex(PDQ, flip(PDQ, 31)) == 31
    assert hamming_hex(PHASH, flip(PHASH, 9)) == 9


@pytest.mark.parametrize(
    ("pdq_bits", "phash_bits", "matched"),
    [
        (32, 18, True),  # corner of the caption box
        (33, 18, False),
        (32, 19, False),
        (48, 10, True),  # corner of the middle box
        (49, 10, False),
        (48, 11, False),
        (60, 4, True),  # corner of the resize box
        (61, 4, False),
        (60, 5, False),
        (0, 0, True),
        (40, 12, False),  # between the boxes
        (54, 8, False),
    ],
)
def test_the_photo_matches_inside_one_of_three_boxes_only(
    pdq_bits: int, phash_bits: int, matched: bool
) -> None:
    evidence = DEFAULT_RULE.evaluate(query(pdq_bits, phash_bits), variant("original"))

    assert evidence.matched is matched
    assert (evidence.pdq_distance, evidence.phash_distance) == (pdq_bits, phash_bits)


@pytest.mark.parametrize("kind", ["mirror", "crop", "rotation"])
@pytest.mark.parametrize(("pdq_limit", "phash_limit"), [(44, 2), (32, 4), (24, 6)])
def test_derived_variants_need_a_closer_match(kind: str, pdq_limit: int, phash_limit: int) -> None:
    rule = DEFAULT_RULE

    assert rule.evaluate(query(pdq_limit, phash_limit), variant(kind)).matched
    assert not rule.evaluate(query(pdq_limit + 1, phash_limit), variant(kind)).matched
    assert not rule.evaluate(query(pdq_limit, phash_limit + 1), variant(kind)).matched
    # What the photo itself would accept, a derived variant does not.
    for pdq_bits, phash_bits in ((32, 18), (48, 10), (60, 4)):
        assert rule.evaluate(query(pdq_bits, phash_bits), variant("original")).matched
        assert not rule.evaluate(query(pdq_bits, phash_bits), variant(kind)).matched


def test_turned_or_flipped_variants_match_nearly_exactly_only() -> None:
    assert DEFAULT_RULE.evaluate(query(24, 4), variant("dihedral")).matched
    assert not DEFAULT_RULE.evaluate(query(25, 4), variant("dihedral")).matched
    assert not DEFAULT_RULE.evaluate(query(24, 5), variant("dihedral")).matched


def test_evidence_names_variant_hashes_distances_and_thresholds() -> None:
    evidence = DEFAULT_RULE.evaluate(query(50, 8), variant("crop", name="crop_top_left_95"))
    assert not evidence.matched

    evidence = DEFAULT_RULE.evaluate(query(58, 4), variant("original"))

    assert evidence.matched
    assert evidence.as_dict() == {
        "variant": "original",
        "basis": "pdq+phash",
        "pdq_distance": 58,
        "pdq_threshold": 60,
        "phash_distance": 4,
        "phash_threshold": 4,
        "quality": "ok",
        "colour_distance": None,
        "colour_threshold": None,
        "layout_distance": None,
        "layout_threshold": None,
        "keypoint_inliers": None,
        "keypoint_threshold": None,
        "strictness": 0,
    }


def test_low_quality_registered_photo_matches_only_nearly_exactly() -> None:
    low = DEFAULT_RULE.min_quality - 1

    assert DEFAULT_RULE.evaluate(query(24, 4), variant("original", quality=low)).matched
    assert not DEFAULT_RULE.evaluate(query(25, 4), variant("original", quality=low)).matched
    assert not DEFAULT_RULE.evaluate(query(24, 5), variant("original", quality=low)).matched
    evidence = DEFAULT_RULE.evaluate(query(10, 2), variant("mirror", quality=low))
    assert evidence.matched
    assert evidence.quality == "low_registered"
    # A low-quality crop or rotation: an equal pHash and PDQ within 4 only.
    for kind in ("crop", "rotation", "dihedral"):
        evidence = DEFAULT_RULE.evaluate(query(4, 0), variant(kind, quality=low))
        assert evidence.matched
        assert evidence.quality == "low_registered"
        assert not DEFAULT_RULE.evaluate(query(5, 0), variant(kind, quality=low)).matched
        assert not DEFAULT_RULE.evaluate(query(0, 1), variant(kind, quality=low)).matched
    # Exactly at the gate the photo is trusted.
    assert DEFAULT_RULE.evaluate(query(48, 10), variant("original", quality=50)).matched
    assert DEFAULT_RULE.evaluate(query(44, 2), variant("crop", quality=50)).matched


def test_a_record_of_known_low_quality_is_gated_too() -> None:
    unknown = DEFAULT_RULE.evaluate(query(40, 10), variant("original"))
    low = DEFAULT_RULE.evaluate(query(40, 10, quality=20), variant("original"))
    fine = DEFAULT_RULE.evaluate(query(40, 10, quality=80), variant("original"))

    assert unknown.matched and fine.matched
    assert not low.matched
    assert low.quality == "low_query"


def uniform_colour(a: int, b: int, colourful: int = 100) -> str:
    """A colour signature whose 16 cells all have Lab a*, b* = (a, b)."""
    return (bytes((colourful,)) + struct.pack("32b", *([a, b] * 16))).hex()


def test_a_featureless_pair_needs_colours_that_agree_closely() -> None:
    # Two distinct blue skies: inside the low-quality boxes, and their colours
    # 15 a*b* apart pass the veto (what brightness can do) but do not agree.
    sky, other_sky, same_sky = (uniform_colour(-5, b) for b in (-30, -15, -25))
    assert COLOUR_CONFIRM_THRESHOLD < colour_distance(sky, other_sky) <= COLOUR_THRESHOLD
    assert colour_distance(sky, same_sky) <= COLOUR_CONFIRM_THRESHOLD
    low = DEFAULT_RULE.min_quality - 1

    # Photos of good quality on both sides: the veto is all the colours must pass.
    fine = DEFAULT_RULE.evaluate(query(10, 2, 80, other_sky), variant("original", colour=sky))
    assert fine.matched and fine.colour_threshold == COLOUR_THRESHOLD
    # Featureless on either side: the colours must agree closely.
    for record_quality, registered_quality in ((80, low), (low, 100), (low, low)):
        for kind, bits in (("original", (10, 2)), ("mirror", (10, 2)), ("crop", (4, 0))):
            registered = variant(kind, quality=registered_quality, colour=sky)
            apart = DEFAULT_RULE.evaluate(query(*bits, record_quality, other_sky), registered)
            assert not apart.matched, (record_quality, registered_quality, kind)
            assert apart.colour_distance == 15.0
            assert apart.colour_threshold == COLOUR_CONFIRM_THRESHOLD
            close = DEFAULT_RULE.evaluate(query(*bits, record_quality, same_sky), registered)
            assert close.matched and close.basis == "pdq+phash"
            assert close.colour_threshold == COLOUR_CONFIRM_THRESHOLD
    # A grey record carries no colour evidence: the low-quality boxes as before.
    grey = uniform_colour(0, 0, colourful=0)
    grey_pair = DEFAULT_RULE.evaluate(
        query(10, 2, low, grey), variant("original", quality=low, colour=grey)
    )
    assert grey_pair.matched and grey_pair.colour_distance is None
    # A pipeline's stricter rule keeps the closer agreement.
    stricter = DEFAULT_RULE.shifted(-1)
    registered = variant("original", quality=low, colour=sky)
    assert not stricter.evaluate(query(4, 0, 80, other_sky), registered).matched
    assert stricter.evaluate(query(4, 0, 80, same_sky), registered).matched


def test_a_featureless_pair_with_faint_colours_never_matches() -> None:
    """Two flat, near-grey patches (a street's shadow and a bird's blurred
    background on 45 outside photographs) agree in every signal: their
    colours are too faint (colourfulness 0.010-0.020) to confirm anything."""
    low = DEFAULT_RULE.min_quality - 1
    faint, other_faint = uniform_colour(1, 2, colourful=18), uniform_colour(2, 3, colourful=12)
    clear = uniform_colour(1, 2, colourful=20)
    grey = uniform_colour(0, 0, colourful=0)
    assert faint_colour(faint) and faint_colour(other_faint)
    assert not faint_colour(clear) and not faint_colour(uniform_colour(0, 0, colourful=9))
    assert colour_distance(faint, other_faint) <= COLOUR_CONFIRM_THRESHOLD

    def judged(record: str, registered: str, case: tuple[int, int, str, int, int]) -> bool:
        record_quality, registered_quality, kind, pdq_bits, phash_bits = case
        return DEFAULT_RULE.evaluate(
            query(pdq_bits, phash_bits, record_quality, record),
            variant(kind, quality=registered_quality, colour=registered),
        ).matched

    for qualities in ((80, low), (low, 100), (low, low)):
        for kind, bits in (("original", (10, 2)), ("mirror", (10, 2)), ("crop", (4, 0))):
            case = (*qualities, kind, *bits)
            # Faint on either side, or a grey record against a faint variant: no match.
            assert not judged(other_faint, faint, case), case
            assert not judged(clear, faint, case), case
            assert not judged(faint, clear, case), case
            assert not judged(grey, faint, case), case
            # Clearly colourful and agreeing, or grey on both sides: as before.
            assert judged(clear, clear, case), case
            assert judged(grey, grey, case), case
    # Photos of good quality on both sides: faint colours are judged as any.
    assert DEFAULT_RULE.evaluate(
        query(10, 2, 80, other_faint), variant("original", colour=faint)
    ).matched


def test_single_hash_records_are_held_to_stricter_thresholds() -> None:
    pdq_only = DEFAULT_RULE.evaluate(query(31, None), variant("original"))
    assert pdq_only.matched
    assert pdq_only.basis == "pdq"
    assert (pdq_only.phash_distance, pdq_only.phash_threshold) == (None, None)
    assert not DEFAULT_RULE.evaluate(query(32, None), variant("original")).matched
    assert DEFAULT_RULE.evaluate(query(24, None), variant("mirror")).matched
    assert not DEFAULT_RULE.evaluate(query(25, None), variant("mirror")).matched
    # Derived variants are indexed by pHash only: no single-hash match.
    assert not DEFAULT_RULE.evaluate(query(0, None), variant("crop")).matched
    # Nor a low-quality photo.
    assert not DEFAULT_RULE.evaluate(query(0, None), variant("original", quality=10)).matched

    phash_only = DEFAULT_RULE.evaluate(query(None, 0), variant("original"))
    assert phash_only.matched
    assert phash_only.basis == "phash"
    assert not DEFAULT_RULE.evaluate(query(None, 1), variant("original")).matched
    # pHash alone is too imprecise to match the mirror image or a derived variant.
    assert not DEFAULT_RULE.evaluate(query(None, 0), variant("mirror")).matched
    assert not DEFAULT_RULE.evaluate(query(None, 0), variant("crop")).matched
    assert not DEFAULT_RULE.evaluate(query(None, None), variant("original")).matched


def test_sha256_equality_always_matches() -> None:
    evidence = sha256_evidence()

    assert evidence.matched
    assert evidence.basis == "sha256"
    assert evidence.variant == "original"


def test_shifted_moves_every_threshold_by_whole_steps() -> None:
    stricter = DEFAULT_RULE.shifted(-1)
    looser = DEFAULT_RULE.shifted(2)

    assert DEFAULT_RULE.shifted(0) == DEFAULT_RULE
    assert not stricter.evaluate(query(44, 2), variant("crop")).matched
    assert stricter.evaluate(query(44 - PDQ_STEP, 2 - PHASH_STEP), variant("crop")).matched
    assert looser.evaluate(query(44 + 2 * PDQ_STEP, 2 + 2 * PHASH_STEP), variant("crop")).matched
    assert stricter.kinds["original"].pdq_only == 31 - PDQ_STEP
    assert looser.low_quality_derived.both == (Box(4 + 2 * PDQ_STEP, 2 * PHASH_STEP),)
    assert DEFAULT_RULE.shifted(-100).evaluate(query(0, 0), variant("original")).matched is False


def test_unknown_variant_kind_never_matches() -> None:
    rule = MatchRule(kinds={"original": KindRule(both=(Box(10, 2),))}, low_quality=KindRule(()))

    assert not rule.evaluate(query(0, 0), variant("crop")).matched
    assert rule.evaluate(query(0, 0), variant("original")).matched


def test_hamming_refuses_hashes_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="lengths"):
        hamming_hex(PDQ, PHASH)


@pytest.mark.parametrize("rule", [DEFAULT_RULE, UNKNOWN_QUALITY_RULE], ids=["default", "bare"])
@given(
    kind=st.sampled_from(KINDS),
    pdq_bits=st.integers(0, 256),
    phash_bits=st.integers(0, 64),
    mode=st.sampled_from(["both", "pdq", "phash"]),
    registered_quality=st.sampled_from([0, 49, 50, 100]),
    query_quality=st.sampled_from([None, 10, 90]),
    colours=st.sampled_from(
        [("", ""), (COFFEE_JPEG, COFFEE), (CAT, COFFEE), (COFFEE_GREY, COFFEE), (COFFEE, CAMERA)]
    ),
)
def test_the_search_plan_finds_every_variant_the_rule_accepts(
    rule: MatchRule,
    kind: str,
    pdq_bits: int,
    phash_bits: int,
    mode: str,
    registered_quality: int,
    query_quality: int | None,
    colours: tuple[str, str],
) -> None:
    """The indexes searched as ``search_plan`` says never miss an accepted
    variant; colours take matches away, and add them only inside the
    colour-confirmed boxes when they agree."""
    plan = rule.search_plan()
    q = query(
        pdq_bits if mode in ("both", "pdq") else None,
        phash_bits if mode in ("both", "phash") else None,
        quality=query_quality,
        colour=colours[0],
    )

    evidence = rule.evaluate(q, variant(kind, quality=registered_quality, colour=colours[1]))
    colourless = rule.evaluate(replace(q, colour=""), variant(kind, quality=registered_quality))

    if not evidence.matched:
        return
    if colours == (COFFEE_GREY, COFFEE):
        # A grey record against a colourful variant: the stricter rule's verdict.
        stricter = rule.grey_record_rule.evaluate(
            replace(q, colour=""), variant(kind, quality=registered_quality)
        )
        assert replace(evidence, colour_distance=None, colour_threshold=None) == stricter
    elif colourless.matched:
        assert replace(evidence, colour_distance=None, colour_threshold=None) == colourless
    else:
        # Added by the colours: a confirmed box, colours compared and agreeing.
        assert mode == "both" and evidence.colour_distance is not None
        assert evidence.basis == "pdq+phash+colour"
        assert evidence.colour_distance <= rule.colour_threshold
        assert evidence.pdq_threshold is not None and evidence.phash_threshold is not None
        box = Box(evidence.pdq_threshold, evidence.phash_threshold)
        assert box in rule.confirmed_boxes(kind, low_quality=False)
        assert box.contains(pdq_bits, phash_bits)
        low = registered_quality < rule.min_quality or (
            query_quality is not None and query_quality < rule.min_quality
        )
        assert not low
    primary = kind in PRIMARY_KINDS
    if mode == "both" and primary:
        assert phash_bits <= plan.primary_phash or (
            plan.primary_pdq is not None and pdq_bits <= plan.primary_pdq
        )
    elif mode == "both":
        assert plan.derived_phash is not None and phash_bits <= plan.derived_phash
    elif mode == "pdq":
        assert kind in PDQ_INDEXED_KINDS
        assert plan.pdq_only is not None and pdq_bits <= plan.pdq_only
    else:
        assert primary and plan.phash_only is not None and phash_bits <= plan.phash_only


def test_the_search_plan_of_the_default_rule_keeps_the_searches_cheap() -> None:
    plan = DEFAULT_RULE.search_plan()

    assert plan.primary_phash <= PRIMARY_PHASH_RADIUS
    assert plan.primary_pdq is not None and plan.primary_pdq <= 32
    assert plan.derived_phash is not None and plan.derived_phash <= 8
    assert (plan.pdq_only, plan.phash_only) == (31, 0)


def test_a_rule_the_indexes_cannot_serve_is_refused() -> None:
    kinds = dict(DEFAULT_RULE.kinds)
    kinds["crop"] = KindRule(both=(Box(pdq=40, phash=8),), pdq_only=24)
    mirror_by_phash = dict(DEFAULT_RULE.kinds)
    mirror_by_phash["mirror"] = KindRule(both=(Box(pdq=24, phash=4),), phash_only=2)

    with pytest.raises(ValueError, match="indexed by PDQ"):
        MatchRule(kinds=kinds, low_quality=DEFAULT_RULE.low_quality).search_plan()
    with pytest.raises(ValueError, match="indexed by PDQ"):
        MatchRule(
            kinds=DEFAULT_RULE.kinds,
            low_quality=DEFAULT_RULE.low_quality,
            low_quality_derived=KindRule(both=(), pdq_only=8),
        ).search_plan()
    with pytest.raises(ValueError, match="pHash only"):
        MatchRule(kinds=mirror_by_phash, low_quality=DEFAULT_RULE.low_quality).search_plan()


def test_the_search_plan_covers_low_quality_derived_boxes() -> None:
    wide = MatchRule(
        kinds={"crop": KindRule(both=(Box(pdq=40, phash=2),))},
        low_quality=KindRule(both=(Box(pdq=24, phash=4),)),
        low_quality_derived=KindRule(both=(Box(pdq=4, phash=6),)),
    )

    assert wide.search_plan().derived_phash == 6


def test_bare_hashes_without_quality_get_the_stricter_rule() -> None:
    known = QueryHashes(pdq=PDQ, phash=PHASH, pdq_quality=90)
    bare = QueryHashes(pdq=PDQ, phash=PHASH)

    assert rule_for(known) is DEFAULT_RULE
    assert rule_for(bare) is UNKNOWN_QUALITY_RULE
    assert DEFAULT_RULE.shifted(-2) == UNKNOWN_QUALITY_RULE
    # Two steps (16 PDQ bits, 4 pHash bits) tighter than every default box.
    assert DEFAULT_RULE.evaluate(query(32, 4), variant("crop")).matched
    assert not UNKNOWN_QUALITY_RULE.evaluate(query(32, 4), variant("crop")).matched
    assert UNKNOWN_QUALITY_RULE.evaluate(query(16, 0), variant("crop")).matched
    assert not UNKNOWN_QUALITY_RULE.evaluate(query(17, 0), variant("crop")).matched
    assert UNKNOWN_QUALITY_RULE.evaluate(query(44, 0), variant("original")).matched
    assert not UNKNOWN_QUALITY_RULE.evaluate(query(45, 0), variant("original")).matched
    assert UNKNOWN_QUALITY_RULE.evaluate(query(15, None), variant("original")).matched
    assert not UNKNOWN_QUALITY_RULE.evaluate(query(16, None), variant("original")).matched


@pytest.mark.parametrize("steps", range(MAX_STRICTNESS + 1))
def test_a_pipelines_strictness_shifts_the_rule_for_every_record(steps: int) -> None:
    known = QueryHashes(pdq=PDQ, phash=PHASH, pdq_quality=90)
    bare = QueryHashes(pdq=PDQ, phash=PHASH)

    assert rule_for(known, steps) == DEFAULT_RULE.shifted(-steps)
    assert rule_for(bare, steps) == DEFAULT_RULE.shifted(-2 - steps)
    # Each step narrows the photo's widest box by one step.
    widest = max(box.pdq for box in rule_for(known, steps).kinds["original"].both)
    assert widest == max(box.pdq for box in DEFAULT_RULE.kinds["original"].both) - steps * PDQ_STEP


def test_colours_that_agree_confirm_a_match_and_say_so() -> None:
    evidence = DEFAULT_RULE.evaluate(
        query(40, 6, quality=90, colour=COFFEE_JPEG), variant(colour=COFFEE)
    )

    assert evidence.matched
    assert evidence.colour_threshold == COLOUR_THRESHOLD
    assert evidence.colour_distance is not None and 0 < evidence.colour_distance <= 5
    assert evidence.as_dict()["colour_distance"] == evidence.colour_distance
    assert evidence.as_dict()["colour_threshold"] == COLOUR_THRESHOLD


def test_colours_that_disagree_refute_a_match_every_box_holds() -> None:
    """The cat's colours against the coffee cup's: PDQ and pHash equal, no match."""
    for kind in ("original", "mirror", "crop", "rotation"):
        refuted = DEFAULT_RULE.evaluate(
            query(0, 0, quality=90, colour=CAT), variant(kind, colour=COFFEE)
        )

        assert not refuted.matched, kind
        assert refuted.basis == ""
        assert refuted.colour_distance is not None and refuted.colour_distance > COLOUR_THRESHOLD
        assert refuted.colour_threshold == COLOUR_THRESHOLD
        # Without a colour on either side the same hashes match.
        assert DEFAULT_RULE.evaluate(query(0, 0, quality=90), variant(kind, colour=COFFEE)).matched
        assert DEFAULT_RULE.evaluate(query(0, 0, quality=90, colour=CAT), variant(kind)).matched


def test_colours_that_agree_widen_the_boxes_to_the_confirmed_ones() -> None:
    """(60, 10) on the photo is outside every box; with the coffee cup's
    colours on both sides it is inside the confirmed (64, 10)."""
    agreeing = DEFAULT_RULE.evaluate(query(60, 10, 90, COFFEE_JPEG), variant(colour=COFFEE))

    assert agreeing.matched
    assert agreeing.basis == "pdq+phash+colour"
    assert (agreeing.pdq_threshold, agreeing.phash_threshold) == (64, 10)
    assert agreeing.colour_distance is not None
    assert agreeing.colour_distance <= COLOUR_CONFIRM_THRESHOLD
    # A confirmed box needs the closer agreement, and says so.
    assert agreeing.colour_threshold == COLOUR_CONFIRM_THRESHOLD < COLOUR_THRESHOLD
    between = replace(DEFAULT_RULE, confirm_threshold=agreeing.colour_distance - 0.01)
    assert not between.evaluate(query(60, 10, 90, COFFEE_JPEG), variant(colour=COFFEE)).matched
    # …while the same colours pass the veto of an ordinary box.
    assert between.evaluate(query(40, 6, 90, COFFEE_JPEG), variant(colour=COFFEE)).matched
    # Not without colours, not when they disagree, not for a grey record or a
    # grey variant, not for low quality on either side.
    for q, v in (
        (query(60, 10, 90), variant(colour=COFFEE)),
        (query(60, 10, 90, COFFEE_JPEG), variant()),
        (query(60, 10, 90, CAT), variant(colour=COFFEE)),
        (query(60, 10, 90, COFFEE_GREY), variant(colour=COFFEE)),
        (query(60, 10, 90, COFFEE), variant(colour=CAMERA)),
        (query(60, 10, 10, COFFEE_JPEG), variant(colour=COFFEE)),
        (query(60, 10, 90, COFFEE_JPEG), variant(quality=40, colour=COFFEE)),
        (query(60, 12, 90, COFFEE_JPEG), variant(colour=COFFEE)),
        (query(65, 10, 90, COFFEE_JPEG), variant(colour=COFFEE)),
    ):
        assert not DEFAULT_RULE.evaluate(q, v).matched, (q, v)
    # A crop: (56, 6) only with the colours.
    crop = variant("crop", colour=COFFEE)
    assert DEFAULT_RULE.evaluate(query(56, 6, 90, COFFEE_JPEG), crop).matched
    assert not DEFAULT_RULE.evaluate(query(56, 6, 90), crop).matched
    # Bare records: the confirmed boxes two steps stricter too.
    assert not UNKNOWN_QUALITY_RULE.evaluate(
        query(60, 10, None, COFFEE_JPEG), variant(colour=COFFEE)
    ).matched
    assert UNKNOWN_QUALITY_RULE.evaluate(
        query(48, 6, None, COFFEE_JPEG), variant(colour=COFFEE)
    ).matched


def test_confirmed_boxes_are_the_rule_two_steps_looser_within_its_search_plan() -> None:
    """They cost no search: the plan with them is the plan without them."""
    shifted = DEFAULT_RULE.shifted(2)
    plan = DEFAULT_RULE.search_plan()
    for kind, kind_rule in DEFAULT_RULE.kinds.items():
        for box in kind_rule.confirmed:
            assert any(box.pdq <= b.pdq and box.phash <= b.phash for b in shifted.kinds[kind].both)
            if kind in PRIMARY_KINDS:
                assert box.phash <= plan.primary_phash or (
                    plan.primary_pdq is not None and box.pdq <= plan.primary_pdq
                )
            else:
                assert plan.derived_phash is not None and box.phash <= plan.derived_phash
    without = replace(
        DEFAULT_RULE,
        kinds={k: replace(r, confirmed=()) for k, r in DEFAULT_RULE.kinds.items()},
    )
    assert without.search_plan() == plan
    assert any(r.confirmed for r in DEFAULT_RULE.kinds.values())


def test_the_colour_threshold_is_inclusive_and_kept_by_shifted() -> None:
    distance = DEFAULT_RULE.evaluate(query(0, 0, 90, CAT), variant(colour=COFFEE)).colour_distance
    assert distance is not None
    at = replace(DEFAULT_RULE, colour_threshold=distance)
    below = replace(DEFAULT_RULE, colour_threshold=distance - 0.01)

    assert at.evaluate(query(0, 0, 90, CAT), variant(colour=COFFEE)).matched
    assert not below.evaluate(query(0, 0, 90, CAT), variant(colour=COFFEE)).matched
    assert at.shifted(-2).colour_threshold == distance
    assert UNKNOWN_QUALITY_RULE.colour_threshold == COLOUR_THRESHOLD


def test_a_grey_record_skips_the_colour_check() -> None:
    """A grayscale copy carries no colour evidence: matched on its hashes alone."""
    evidence = DEFAULT_RULE.evaluate(query(8, 2, 90, COFFEE_GREY), variant(colour=CAT))

    assert evidence.matched
    assert (evidence.colour_distance, evidence.colour_threshold) == (None, None)


def test_a_grey_record_against_a_grey_variant_compares_the_luminance_layouts() -> None:
    """Two grey images carry no colours to compare: their luminance layouts
    (registry.colour) confirm a copy and refuse another photo."""
    record = query(8, 2, 90, COFFEE_GREY)

    copy = DEFAULT_RULE.evaluate(record, variant(colour=COFFEE_GREY_JPEG))
    other = DEFAULT_RULE.evaluate(record, variant(colour=CAMERA))

    assert copy.matched and copy.basis == "pdq+phash"
    assert copy.layout_distance is not None and copy.layout_distance <= LAYOUT_THRESHOLD / 4
    assert copy.layout_threshold == LAYOUT_THRESHOLD
    assert (copy.colour_distance, copy.colour_threshold) == (None, None)
    assert copy.as_dict()["layout_distance"] == copy.layout_distance
    assert not other.matched
    assert other.layout_distance is not None and other.layout_distance > LAYOUT_THRESHOLD
    assert other.layout_threshold == LAYOUT_THRESHOLD
    # The threshold is inclusive and kept by shifted.
    at = replace(DEFAULT_RULE, layout_threshold=other.layout_distance)
    assert at.evaluate(record, variant(colour=CAMERA)).matched
    assert (
        not replace(at, layout_threshold=other.layout_distance - 0.01)
        .evaluate(record, variant(colour=CAMERA))
        .matched
    )
    assert DEFAULT_RULE.shifted(-1).layout_threshold == LAYOUT_THRESHOLD
    # A grey signature written before layouts (no marker) is not compared.
    unmarked = "00" * 33
    assert layout_parts(unmarked) is None
    before = DEFAULT_RULE.evaluate(record, variant(colour=unmarked))
    assert before.matched and (before.layout_distance, before.layout_threshold) == (None, None)
    # Nor is a colourful pair (its colours are).
    assert DEFAULT_RULE.evaluate(query(8, 2, 90, CAT), variant(colour=CAT)).layout_distance is None


def test_a_grey_record_against_a_colourful_variant_is_held_two_steps_stricter() -> None:
    """(32, 18) is inside the photo's boxes; a grey record meets it only
    against a grey variant or without colours, against a colourful one it
    needs (16, 14)."""
    assert DEFAULT_RULE.grey_record_shift == -2
    grey = query(32, 18, 90, COFFEE_GREY)

    assert not DEFAULT_RULE.evaluate(grey, variant(colour=COFFEE)).matched
    assert DEFAULT_RULE.evaluate(grey, variant(colour=COFFEE_GREY_JPEG)).matched
    assert DEFAULT_RULE.evaluate(grey, variant()).matched
    assert DEFAULT_RULE.evaluate(replace(grey, colour=""), variant(colour=COFFEE)).matched
    # A colourful record at the same distances is judged by the colours.
    assert DEFAULT_RULE.evaluate(query(32, 18, 90, COFFEE_JPEG), variant(colour=COFFEE)).matched
    closer = DEFAULT_RULE.evaluate(query(16, 14, 90, COFFEE_GREY), variant(colour=COFFEE))
    assert closer.matched
    assert (closer.pdq_threshold, closer.phash_threshold) == (16, 14)
    assert DEFAULT_RULE.grey_record_rule == replace(DEFAULT_RULE.shifted(-2), grey_record_shift=0)
    # Kept by shifted (benchmarks' tails, a pipeline's stricter policy).
    assert DEFAULT_RULE.shifted(1).grey_record_shift == -2
    assert DEFAULT_RULE.shifted(2).evaluate(grey, variant(colour=COFFEE)).matched
    assert not DEFAULT_RULE.shifted(1).evaluate(grey, variant(colour=COFFEE)).matched


def test_a_grey_registered_variant_never_matches_a_colourful_record() -> None:
    evidence = DEFAULT_RULE.evaluate(query(0, 0, 90, COFFEE), variant(colour=CAMERA))

    assert not evidence.matched
    assert evidence.colour_distance == math.inf
    # Not loosened by any threshold.
    assert (
        not replace(DEFAULT_RULE, colour_threshold=1e9)
        .evaluate(query(0, 0, 90, COFFEE), variant(colour=CAMERA))
        .matched
    )


def test_no_colour_is_compared_outside_the_boxes() -> None:
    evidence = DEFAULT_RULE.evaluate(query(100, 30, 90, CAT), variant(colour=COFFEE))

    assert not evidence.matched
    assert (evidence.colour_distance, evidence.colour_threshold) == (None, None)


def test_the_rule_fingerprint_changes_with_the_colour_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = rule_fingerprint()
    # The module (the package exports its ``decide`` function under that name).
    decide_module = importlib.import_module("optout.matching.decide")
    monkeypatch.setattr(
        decide_module, "DEFAULT_RULE", replace(DEFAULT_RULE, colour_threshold=COLOUR_THRESHOLD + 1)
    )

    assert rule_fingerprint() != before


# --- the middle band ------------------------------------------------------------------


def band_query(pdq_bits: int, phash_bits: int, quality: int = 90, **own: int) -> QueryHashes:
    """A record whose own hashes are ``own["pdq"]``/``own["phash"]`` bits from the
    photo (far by default) and whose band is the given bits from the band variant."""
    band = band_signature(flip(PDQ, pdq_bits, seed=2), flip(PHASH, phash_bits, seed=3), quality)
    return replace(query(own.get("pdq", 128), own.get("phash", 32), quality=90), band=band)


@pytest.mark.parametrize(
    ("pdq_bits", "phash_bits", "matched"),
    [(32, 4, True), (0, 0, True), (33, 4, False), (32, 5, False), (32, 6, False)],
)
def test_a_records_band_matches_the_band_variant_inside_the_band_box(
    pdq_bits: int, phash_bits: int, matched: bool
) -> None:
    evidence = DEFAULT_RULE.evaluate(band_query(pdq_bits, phash_bits), variant("band"))

    assert evidence.matched is matched
    assert (evidence.pdq_distance, evidence.phash_distance) == (pdq_bits, phash_bits)
    if matched:
        assert (evidence.variant, evidence.kind, evidence.basis) == ("band", "band", "pdq+phash")
        assert (evidence.pdq_threshold, evidence.phash_threshold) == (32, 4)


def test_the_band_never_decides_on_a_featureless_band_or_on_the_records_own_hashes() -> None:
    band = variant("band")

    # A band of low PDQ quality on either side: no match, even equal.
    assert not DEFAULT_RULE.evaluate(band_query(0, 0, quality=49), band).matched
    assert DEFAULT_RULE.evaluate(band_query(0, 0, quality=49), band).quality == "low_query"
    assert not DEFAULT_RULE.evaluate(band_query(0, 0), variant("band", quality=49)).matched
    # A record without band hashes, its own hashes equal to the band's: no match.
    assert not DEFAULT_RULE.evaluate(query(0, 0, quality=90), band).matched
    # The band is compared with the band variant only, never with the photo.
    assert not DEFAULT_RULE.evaluate(band_query(0, 0), variant("original")).matched
    assert DEFAULT_RULE.boxes("band", has_pdq=True, has_phash=True, low_quality=False) == ()


def test_the_band_is_searched_at_its_boxes_and_shifts_with_the_rule() -> None:
    plan = DEFAULT_RULE.search_plan()

    assert plan.band_phash == max(box.phash for box in DEFAULT_RULE.band) == 4
    # Derived variants are not searched wider because of the band.
    assert plan.derived_phash == 6
    stricter = DEFAULT_RULE.shifted(-1)
    assert stricter.band == (Box(pdq=24, phash=2),)
    assert not stricter.evaluate(band_query(32, 4), variant("band")).matched
    assert stricter.evaluate(band_query(24, 2), variant("band")).matched
