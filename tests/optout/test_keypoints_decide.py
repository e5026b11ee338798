"""The geometric check: keypoints confirm a perceptual match (registry/
keypoints.py, decide._keypoints_confirm)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from optout.matching import DEFAULT_THRESHOLDS, Record, Snapshot, decide, record_parse
from optout.matching.decide import keypoints_wanted
from optout.matching.live import LiveIndex, LiveOptOut, LivePhoto
from optout.matching.rule import DEFAULT_RULE, GREY_KEYPOINT_INLIERS, KEYPOINT_INLIERS
from registry import keypoints
from registry.colour import colour_signature
from tests.images import meme_captions, skimage_photo
from tests.optout.test_matching import opt_out, photo


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return skimage_photo("astronaut")


def _edited(image: Image.Image) -> dict[str, Image.Image]:
    width, height = image.size
    return {
        "resized to a quarter": image.resize((width // 4, height // 4), Image.Resampling.LANCZOS),
        "rotated 2 degrees": image.rotate(2, resample=Image.Resampling.BICUBIC),
        "mirrored": ImageOps.mirror(image),
        "captioned": meme_captions(image),
        "cropped 10 %": image.crop(
            (width // 20, height // 20, width * 19 // 20, height * 19 // 20)
        ),
        "darker": Image.eval(image, lambda v: int(v * 0.8)),
    }


def test_keypoints_are_deterministic_and_hold_two_sets_for_a_registered_photo(astronaut) -> None:
    own = keypoints.keypoints_of(astronaut)
    registered = keypoints.photo_keypoints_of(astronaut)

    assert own == keypoints.keypoints_of(astronaut.copy())
    assert registered.startswith(own)
    sets = keypoints.decode_sets(registered)
    assert len(sets) == 2
    assert len(sets[0][0]) == keypoints.FEATURES
    assert len(own) == keypoints.MAX_SET_BYTES
    # The same inliers every time (RANSAC from a fixed seed).
    record = keypoints.keypoints_of(_edited(astronaut)["rotated 2 degrees"])
    assert len({keypoints.inliers(record, registered) for _ in range(3)}) == 1


@pytest.mark.parametrize(
    "edit",
    [
        "resized to a quarter",
        "rotated 2 degrees",
        "mirrored",
        "captioned",
        "cropped 10 %",
        "darker",
    ],
)
def test_an_edited_copy_keeps_many_keypoints_in_one_arrangement(astronaut, edit) -> None:
    registered = keypoints.photo_keypoints_of(astronaut)
    record = keypoints.keypoints_of(_edited(astronaut)[edit])

    assert keypoints.inliers(record, registered) >= 2 * KEYPOINT_INLIERS


@pytest.mark.parametrize("other", ["coffee", "chelsea", "rocket", "camera"])
def test_different_photographs_share_fewer_than_the_threshold(astronaut, other) -> None:
    registered = keypoints.photo_keypoints_of(astronaut)
    record = keypoints.keypoints_of(skimage_photo(other))

    assert keypoints.inliers(record, registered) < KEYPOINT_INLIERS


def test_a_mirrored_copy_agrees_only_through_the_mirror_set(astronaut) -> None:
    own_only = keypoints.keypoints_of(astronaut)
    record = keypoints.keypoints_of(ImageOps.mirror(astronaut))

    through_own = keypoints.inliers(record, own_only)
    assert keypoints.inliers(record, keypoints.photo_keypoints_of(astronaut)) >= max(
        4 * through_own, 2 * KEYPOINT_INLIERS
    )


def test_a_flat_image_has_no_keypoints_and_matches_nothing(astronaut) -> None:
    flat = keypoints.keypoints_of(Image.new("RGB", (300, 200), (90, 120, 200)))

    assert keypoints.count(flat) == 0
    assert keypoints.inliers(flat, keypoints.photo_keypoints_of(astronaut)) == 0


@pytest.mark.parametrize(
    ("text", "photo_form", "reason"),
    [
        ("not base64!", False, "not base64"),
        (base64.b64encode(b"K2\x00").decode(), False, "not keypoints"),
        (base64.b64encode(b"K1\x05" + b"\x00" * 34).decode(), False, "cut short"),
        (base64.b64encode(b"K1\xff").decode(), False, "too many"),
        ("", False, "no keypoints"),
        ("A" * 20_000, True, "too long"),
    ],
)
def test_malformed_keypoints_are_refused_saying_why(text, photo_form, reason) -> None:
    with pytest.raises(keypoints.KeypointsInvalid, match=reason):
        keypoints.from_text(text, photo=photo_form)


def test_a_record_takes_one_set_or_two_and_no_more(astronaut) -> None:
    own = keypoints.keypoints_of(astronaut)
    two = keypoints.photo_keypoints_of(astronaut)
    pdq = secrets.token_hex(32)

    assert (
        record_parse({"id": "a", "pdq": pdq, "keypoints": keypoints.to_text(own)}).keypoints == own
    )
    assert (
        record_parse({"id": "a", "pdq": pdq, "keypoints": keypoints.to_text(two)}).keypoints == two
    )
    three = record_parse({"id": "a", "pdq": pdq, "keypoints": keypoints.to_text(two + own)})
    assert three.reason.startswith("keypoints")
    assert record_parse({"id": "a", "keypoints": keypoints.to_text(own)}).reason == (
        "keypoints need a pdq or a phash"
    )
    assert record_parse({"id": "a", "pdq": pdq, "keypoints": 7}).reason.startswith("keypoints")


# --- decide ---------------------------------------------------------------------


def _snapshot(registered: bytes) -> tuple[Snapshot, object]:
    given = replace(photo(1), keypoints=registered)
    return Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)]), given


def _record(given, record_keypoints: bytes) -> Record:
    # The registered photo's own hashes: only the keypoints can tell.
    return Record(
        id="r", pdq=given.pdq, phash=given.phash, pdq_quality=90, keypoints=record_keypoints
    )


def _decide(source, record: Record):
    return decide(
        [record], source, use="ai_training", organization=None, thresholds=DEFAULT_THRESHOLDS
    )[0]


def test_equal_hashes_with_the_keypoints_of_another_photograph_are_allowed(astronaut) -> None:
    snapshot, given = _snapshot(keypoints.photo_keypoints_of(astronaut))

    result = _decide(snapshot, _record(given, keypoints.keypoints_of(skimage_photo("coffee"))))

    assert result.decision == "allow"


def test_an_edited_copy_is_excluded_with_the_check_in_its_evidence(astronaut) -> None:
    snapshot, given = _snapshot(keypoints.photo_keypoints_of(astronaut))
    record = _record(given, keypoints.keypoints_of(_edited(astronaut)["captioned"]))

    result = _decide(snapshot, record)

    assert result.decision == "exclude"
    evidence = result.matches[0].evidence
    assert evidence["keypoint_inliers"] >= GREY_KEYPOINT_INLIERS
    # A record without colours: the check is all that confirms it.
    assert evidence["keypoint_threshold"] == DEFAULT_RULE.grey_keypoint_inliers
    assert DEFAULT_RULE.grey_keypoint_inliers == GREY_KEYPOINT_INLIERS > KEYPOINT_INLIERS


def _first_keypoints(image: Image.Image, count: int) -> bytes:
    """A record set of the image's first ``count`` keypoints: each agrees
    with its twin in the registered photo's own set, in place."""
    data = keypoints.keypoints_of(image)
    item = (len(data) - 3) // data[2]
    return keypoints.KEYPOINTS_MAGIC + bytes([count]) + data[3 : 3 + count * item]


@pytest.mark.parametrize(
    ("record_colours", "agreeing", "decision"),
    [
        ("colour", KEYPOINT_INLIERS - 1, "allow"),
        ("colour", KEYPOINT_INLIERS, "exclude"),
        ("colour", GREY_KEYPOINT_INLIERS - 1, "exclude"),
        ("grey", GREY_KEYPOINT_INLIERS - 1, "allow"),
        ("grey", GREY_KEYPOINT_INLIERS, "exclude"),
        ("none", GREY_KEYPOINT_INLIERS - 1, "allow"),
        ("none", GREY_KEYPOINT_INLIERS, "exclude"),
    ],
)
def test_a_record_whose_colours_cannot_confirm_needs_more_agreeing_keypoints(
    astronaut, record_colours, agreeing, decision
) -> None:
    """A colour record's match is confirmed by its colours and its
    keypoints; a grey or colourless record's by its keypoints only, which
    must then agree in GREY_KEYPOINT_INLIERS places (bench_keypoints.py:
    black-and-white photographs of similar layout reach 8 more often than
    other false pairs)."""
    registered = keypoints.photo_keypoints_of(astronaut)
    record_keypoints = _first_keypoints(astronaut, agreeing)
    assert keypoints.inliers(record_keypoints, registered) == agreeing
    colour = colour_signature(astronaut)
    given = replace(photo(1), keypoints=registered, colour=colour)
    snapshot = Snapshot(version=1, photos=[given], claims=[], opt_outs=[opt_out(1)])
    colours = {
        "colour": colour,
        "grey": colour_signature(ImageOps.grayscale(astronaut).convert("RGB")),
        "none": "",
    }[record_colours]
    record = replace(_record(given, record_keypoints), colour=colours)

    result = _decide(snapshot, record)

    assert result.decision == decision
    if decision == "exclude":
        evidence = result.matches[0].evidence
        needed = KEYPOINT_INLIERS if record_colours == "colour" else GREY_KEYPOINT_INLIERS
        assert (evidence["keypoint_inliers"], evidence["keypoint_threshold"]) == (agreeing, needed)


@pytest.mark.parametrize("missing", ["record", "photo"])
def test_without_keypoints_on_either_side_the_hashes_decide_alone(astronaut, missing) -> None:
    other = keypoints.keypoints_of(skimage_photo("coffee"))
    snapshot, given = _snapshot(
        b"" if missing == "photo" else keypoints.photo_keypoints_of(astronaut)
    )

    result = _decide(snapshot, _record(given, b"" if missing == "record" else other))

    assert result.decision == "exclude"
    evidence = result.matches[0].evidence
    assert (evidence["keypoint_inliers"], evidence["keypoint_threshold"]) == (None, None)


def test_a_featureless_copy_cannot_confirm_a_match(astronaut) -> None:
    """Too few keypoints to agree: like the quality gate, content without
    detail does not decide a match (bench_keypoints.py: letting sparse pairs
    through kept 5 grey false pairs three steps looser than the rule)."""
    snapshot, given = _snapshot(keypoints.photo_keypoints_of(astronaut))
    sparse = keypoints.keypoints_of(Image.new("L", (200, 200), 128))

    assert _decide(snapshot, _record(given, sparse)).decision == "allow"


def test_a_sha256_match_needs_no_keypoints(astronaut) -> None:
    snapshot, given = _snapshot(keypoints.photo_keypoints_of(astronaut))
    record = Record(
        id="r", sha256=given.sha256, keypoints=keypoints.keypoints_of(skimage_photo("coffee"))
    )

    result = _decide(snapshot, record)

    assert result.decision == "exclude"
    assert [m.kind for m in result.matches] == ["sha256"]


def test_keypoints_are_wanted_for_records_whose_perceptual_match_they_would_check(
    astronaut,
) -> None:
    """decide.keypoints_wanted: the records a caller must give keypoints to
    for the check to apply — a perceptual match against a photo registered
    with keypoints; not a sha256 match, not a record that matches nothing,
    not a match against a photo without keypoints."""
    snapshot, given = _snapshot(keypoints.photo_keypoints_of(astronaut))
    bare, _ = _snapshot(b"")
    records = [
        _record(given, b""),
        Record(id="exact", sha256=given.sha256),
        Record(id="other", pdq=secrets.token_hex(32), phash=secrets.token_hex(8), pdq_quality=90),
    ]

    wanted = keypoints_wanted(records, snapshot, thresholds=DEFAULT_THRESHOLDS)

    assert wanted == {0}
    assert keypoints_wanted(records, bare, thresholds=DEFAULT_THRESHOLDS) == set()
    # A pipeline's stricter thresholds that the match does not meet: none.
    strict = DEFAULT_THRESHOLDS.stricter(pdq=0, phash=0)
    far = replace(records[0], pdq=_flipped(given.pdq), phash=_flipped(given.phash))
    assert keypoints_wanted([far], snapshot, thresholds=DEFAULT_THRESHOLDS) == {0}
    assert keypoints_wanted([far], snapshot, thresholds=strict) == set()


def _flipped(hex_value: str) -> str:
    """``hex_value`` with its lowest bit flipped."""
    return f"{int(hex_value, 16) ^ 1:0{len(hex_value)}x}"


def test_the_live_index_reads_keypoints_from_its_source_and_decides_like_the_snapshot(
    astronaut,
) -> None:
    registered = keypoints.photo_keypoints_of(astronaut)
    snapshot, given = _snapshot(registered)
    index = LiveIndex()
    index.photos_add(
        [
            LivePhoto(
                given.key,
                given.creator,
                1,
                given.sha256,
                given.pdq,
                given.phash,
                given.pdq_quality,
            )
        ]
    )
    index.opt_outs_add([LiveOptOut(opt_out(1), 1, None)])
    asked: list[list[int]] = []

    def source(photos):
        asked.append(list(photos))
        return {given.key: registered}

    records = [
        _record(given, keypoints.keypoints_of(skimage_photo("coffee"))),
        _record(given, keypoints.keypoints_of(_edited(astronaut)["rotated 2 degrees"])),
        _record(given, b""),
    ]
    index.keypoints_source = source
    live = [_decide(index.view(1), r) for r in records]
    expected = [_decide(snapshot, r) for r in records]

    assert [d.decision for d in live] == ["allow", "exclude", "exclude"]
    assert live == expected
    # Asked only for records that carry keypoints.
    assert asked == [[given.key], [given.key]]

    index.keypoints_source = None
    assert _decide(index.view(1), records[0]).decision == "exclude"


def test_random_noise_keypoints_never_confirm() -> None:
    """Keypoints of unrelated textures: a property of the check, not of one pair."""
    rng = np.random.default_rng(0)
    base = skimage_photo("astronaut")
    registered = keypoints.photo_keypoints_of(base)
    for _ in range(5):
        noise = Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8))
        assert keypoints.inliers(keypoints.keypoints_of(noise), registered) < KEYPOINT_INLIERS
