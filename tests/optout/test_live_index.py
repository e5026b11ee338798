"""The live index's pure parts: the photo table against a dict, and the live
index's views against the brute-force Snapshot after appends, withdrawals,
retirements and compaction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optout.matching import DEFAULT_THRESHOLDS, Record, Snapshot, SnapshotOptOut, decide
from optout.matching.live import LiveIndex, LiveOptOut, LivePhoto
from optout.matching.photo_table import PhotoTable
from optout.matching.snapshot import SnapshotPhoto
from optout.matching.variants import blob_entries, blob_size, blob_variant, photo_blob
from registry.colour import colour_signature
from registry.hashing import band_signature
from registry.variants import DEFAULT_VARIANTS, Variant, variants_pack, variants_unpack
from tests.images import skimage_photo

KEYS = st.integers(0, 60)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.tuples(KEYS, st.integers(0, 4)), max_size=30)),
        st.tuples(st.just("remove"), st.lists(KEYS, max_size=10)),
        st.tuples(st.just("compact"), st.just([])),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_photo_table_holds_what_a_dict_holds(operations: list[tuple[str, list]]) -> None:  # type: ignore[type-arg]
    table, model = PhotoTable(), {}
    for version, (action, items) in enumerate(operations):
        if action == "add":
            keys = np.asarray([k for k, _ in items], dtype=np.int64)
            creators = np.asarray([c for _, c in items], dtype=np.int64)
            fresh = table.update(keys, creators, np.full(len(items), version, dtype=np.int64))
            expected = []
            for key, creator in items:
                expected.append(key not in model)
                model.setdefault(key, (creator, version))
            assert fresh.tolist() == expected
        elif action == "remove":
            for key in items:
                assert table.remove(key) == model.pop(key, None)
        else:
            table.compact()
        assert len(table) == len(model) and sorted(table) == sorted(model)
        assert all(table.get(key) == held for key, held in model.items())
        for creator in range(5):
            assert table.of_creator(creator) == {k for k, (c, _) in model.items() if c == creator}


def test_photo_table_merges_many_small_additions_into_its_columns() -> None:
    table = PhotoTable()
    for key in range(10_000):
        assert table.add(key * 7, key % 3, key)
    assert not table.add(7, 0, 0)
    assert len(table) == 10_000 and table.get(7 * 9_999) == (9_999 % 3, 9_999)
    assert table.nbytes() >= 8_000 * 25  # merged into the columns, not all in the dict


DERIVED = [name for name in DEFAULT_VARIANTS if name != "original"]
# Colour signatures of real photographs (colour ones, a grayscale copy, a
# black-and-white photograph).
COLOURS = [
    colour_signature(skimage_photo(name))
    for name in ("coffee", "chelsea", "astronaut", "rocket", "camera")
] + [colour_signature(skimage_photo("coffee").convert("L"))]


def _colour(rng: np.random.Generator) -> str:
    return COLOURS[int(rng.integers(0, len(COLOURS)))]


def _photo(key: int, creator: int, version: int, rng: np.random.Generator) -> LivePhoto:
    """A photo with 0-4 derived variants (random hashes and qualities); its
    colour and its variants' colours each known or not."""
    variants = [
        Variant(
            str(rng.choice(DERIVED)),
            rng.bytes(32).hex(),
            int(rng.integers(0, 101)),
            rng.bytes(8).hex(),
        )
        for _ in range(int(rng.integers(0, 5)))
    ]
    colours = b"".join(bytes.fromhex(_colour(rng)) for _ in variants)
    return LivePhoto(
        key,
        creator,
        version,
        rng.bytes(32).hex(),
        rng.bytes(32).hex(),
        rng.bytes(8).hex(),
        int(rng.integers(0, 101)),
        variants_pack(variants),
        _colour(rng) if rng.random() < 0.7 else "",
        colours if rng.random() < 0.7 else b"",
    )


def _snapshot_photo(photo: LivePhoto) -> SnapshotPhoto:
    return SnapshotPhoto(
        photo.key,
        photo.creator,
        photo.sha256,
        photo.pdq,
        photo.pdq_quality,
        photo.phash,
        photo.variants,
        photo.colour,
        photo.variant_colours,
    )


def _flip(value: str, bits: int, rng: np.random.Generator) -> str:
    code = int(value, 16)
    for position in rng.choice(len(value) * 4, size=bits, replace=False).tolist():
        code ^= 1 << position
    return f"{code:0{len(value)}x}"


def _record_near(photo: LivePhoto, rng: np.random.Generator) -> Record:
    """A record near one of the photo's variants: exact, edited, or only one hash."""
    variants = variants_unpack(photo.variants)
    if variants and rng.random() < 0.6:
        target = variants[int(rng.integers(0, len(variants)))]
        pdq, phash = target.pdq, target.phash
    else:
        pdq, phash = photo.pdq, photo.phash
    pdq = _flip(pdq, int(rng.integers(0, 60)), rng)
    phash = _flip(phash, int(rng.integers(0, 20)), rng)
    # The middle band's hashes near the photo's band variant, when it has one.
    bands = [v for v in variants if v.name == "band"]
    band = ""
    if bands and rng.random() < 0.8:
        band = band_signature(
            _flip(bands[0].pdq, int(rng.integers(0, 40)), rng),
            _flip(bands[0].phash, int(rng.integers(0, 8)), rng),
            int(rng.integers(30, 101)),
        )
    mode = rng.random()
    return Record(
        id=str(photo.key),
        sha256=photo.sha256 if mode < 0.2 else "",
        pdq=pdq if mode < 0.8 else "",
        phash=phash if mode > 0.5 or mode < 0.2 else "",
        pdq_quality=int(rng.integers(0, 101)) if mode < 0.8 and rng.random() < 0.7 else None,
        colour=_colour(rng) if rng.random() < 0.7 else "",
        band=band,
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.integers(0, 9), min_size=5, max_size=40))
def test_views_answer_like_the_snapshot_of_their_version(seed: int, script: list[int]) -> None:
    """Random appends, filings, withdrawals and retirements; every version from the
    horizon on is decided like brute force over the registry at that version."""
    rng = np.random.default_rng(seed)
    index = LiveIndex()
    photos: list[LivePhoto] = []
    opt_outs: dict[int, LiveOptOut] = {}
    horizon = 0
    for version, step in enumerate(script, start=1):
        creator = int(rng.integers(0, 3))
        if step <= 4:  # a photo; held when an all_photos opt-out of its creator is held
            photo = _photo(len(photos), creator, version, rng)
            photos.append(photo)
            if index.all_photos_of_creator.get(creator):
                index.photos_add([photo])
        elif step <= 7:  # an opt-out over all of the creator's photos or chosen ones
            chosen = frozenset(p.key for p in photos if p.creator == creator and rng.random() < 0.5)
            scope = "photos" if step == 7 and chosen else "all_photos"
            opt_out = SnapshotOptOut(
                key=version, public_id=f"o{version}", creator=creator, uses=("ai_training",),
                scope=scope, photos=chosen if scope == "photos" else frozenset(),
            )  # fmt: skip
            opt_outs[version] = LiveOptOut(opt_out, version)
            index.opt_outs_add([opt_outs[version]])
            covered = [
                p
                for p in photos
                if (p.creator == creator if scope == "all_photos" else p.key in chosen)
            ]
            index.photos_add(covered)
        elif step == 8 and opt_outs:  # a withdrawal
            key = int(rng.choice(sorted(opt_outs)))
            if opt_outs[key].withdrawn_version is None:
                opt_outs[key] = LiveOptOut(opt_outs[key].opt_out, key, version)
                index.withdraw(key, version)
        else:  # the oldest needed version moves on
            horizon = int(rng.integers(horizon, version + 1))
            index.retire(horizon)
            if rng.random() < 0.5:
                index.compact()

        for at in {horizon, version, int(rng.integers(horizon, version + 1))}:
            active = [
                o.opt_out for o in opt_outs.values()
                if o.filed_version <= at and (o.withdrawn_version or at + 1) > at
            ]  # fmt: skip
            snapshot = Snapshot(
                version=at,
                photos=[_snapshot_photo(p) for p in photos if p.registered_version <= at],
                claims=[],
                opt_outs=active,
            )
            records = [
                Record(id=str(p.key), sha256=p.sha256, pdq=p.pdq, phash=p.phash) for p in photos
            ] + [_record_near(p, rng) for p in photos for _ in range(3)]
            how = {"use": "ai_training", "organization": None, "thresholds": DEFAULT_THRESHOLDS}
            live = [d.as_dict() for d in decide(records, index.view(at), **how)]
            assert live == [d.as_dict() for d in decide(records, snapshot, **how)]


def test_records_near_variants_are_decided_like_the_snapshot_both_ways() -> None:
    """The records of the property test above reach both outcomes, through
    derived variants too (so its equality is not vacuous)."""
    rng = np.random.default_rng(7)
    photos = [_photo(key, 0, 1, rng) for key in range(40)]
    index = LiveIndex()
    opt_out = SnapshotOptOut(
        key=1, public_id="o1", creator=0, uses=("ai_training",), scope="all_photos"
    )
    index.opt_outs_add([LiveOptOut(opt_out, 1)])
    index.photos_add(photos)
    snapshot = Snapshot(
        version=1,
        photos=[_snapshot_photo(p) for p in photos],
        claims=[],
        opt_outs=[opt_out],
    )
    records = [_record_near(p, rng) for p in photos for _ in range(25)]
    how = {"use": "ai_training", "organization": None, "thresholds": DEFAULT_THRESHOLDS}

    live = [d.as_dict() for d in decide(records, index.view(1), **how)]

    assert live == [d.as_dict() for d in decide(records, snapshot, **how)]
    outcomes = {d["decision"] for d in live}
    variants = {m["evidence"]["variant"] for d in live for m in d["matches"]}
    assert outcomes == {"exclude", "allow"}
    assert "original" in variants and len(variants - {"original"}) >= 3
    # Records matched through their middle band too.
    assert "band" in variants
    # The colour check both confirmed and refuted matches.
    checked = [m["evidence"]["colour_distance"] for d in live for m in d["matches"]]
    assert any(distance is not None for distance in checked)
    assert any(distance is None for distance in checked)


def test_a_blob_holds_the_colours_raw_and_gives_them_back_by_position() -> None:
    rng = np.random.default_rng(3)
    variants = [Variant(name, rng.bytes(32).hex(), 70, rng.bytes(8).hex()) for name in DERIVED]
    packed = variants_pack(variants)
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(variants))]
    derived = b"".join(bytes.fromhex(c) for c in colours)
    pdq, phash = rng.bytes(32).hex(), rng.bytes(8).hex()

    plain = photo_blob(pdq, phash, 90, packed)
    both = photo_blob(pdq, phash, 90, packed, COLOURS[0], derived)
    photo_only = photo_blob(pdq, phash, 90, packed, COLOURS[1])
    derived_only = photo_blob(pdq, phash, 90, packed, "", derived)

    assert len(both) == len(plain) + 33 * (1 + len(variants))  # raw, not hex
    for blob in (plain, both, photo_only, derived_only):
        assert blob_size(blob) == 1 + len(variants)
    size = 1 + len(variants)
    assert [blob_variant(plain, i).colour for i in range(size)] == [""] * size
    assert [blob_variant(both, i).colour for i in range(size)] == [COLOURS[0], *colours]
    assert [blob_variant(photo_only, i).colour for i in range(size)] == [COLOURS[1]] + [""] * (
        size - 1
    )
    assert [blob_variant(derived_only, i).colour for i in range(size)] == ["", *colours]
    assert blob_variant(both, 3) == replace(blob_variant(plain, 3), colour=colours[2])
    # The index entries do not depend on the colours.
    coloured = blob_entries([5], [both])
    for group, entries in blob_entries([5], [plain]).items():
        words = 4 if group[1] == "pdq" else 1
        for a, b in zip(entries.arrays(words), coloured[group].arrays(words), strict=True):
            assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="colours"):
        photo_blob(pdq, phash, 90, packed, "", derived[:-33])
