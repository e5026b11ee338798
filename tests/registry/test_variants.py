"""registry.variants: the variant hashes a photo is registered with, and a small
check that they make the decision rule robust (the full measurement is
benchmarks/bench_robust.py and bench_precision.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from optout.matching.rule import DEFAULT_RULE, QueryHashes, VariantHashes
from registry import hashing, variants
from registry.colour import COLOUR_BYTES, COLOUR_HEX_LENGTH
from tests.images import encode, skimage_photo


def decoded(image: Image.Image, quality: int = 95) -> Image.Image:
    return hashing.decode(encode(image, "JPEG", quality=quality))


def registered(image: Image.Image) -> list[VariantHashes]:
    return [
        VariantHashes(
            name=v.name,
            kind=variants.variant_kind(v.name),
            pdq=v.pdq,
            pdq_quality=v.pdq_quality,
            phash=v.phash,
        )
        for v in variants.variants_compute(decoded(image))
    ]


def query_of(image: Image.Image) -> QueryHashes:
    hashes = hashing.hash_bytes(encode(image, "JPEG", quality=75))
    return QueryHashes(pdq=hashes.pdq, phash=hashes.phash)


def matching_variants(query: QueryHashes, photo: list[VariantHashes]) -> list[str]:
    return [v.name for v in photo if DEFAULT_RULE.evaluate(query, v).matched]


def test_variants_are_deterministic_and_follow_the_default_names() -> None:
    rgb = decoded(skimage_photo("coffee"))

    first = variants.variants_compute(rgb)
    second = variants.variants_compute(rgb.copy())

    assert first == second
    assert [v.name for v in first] == list(variants.DEFAULT_VARIANTS)
    assert all(hashing.is_hex(v.pdq, 64) and hashing.is_hex(v.phash, 16) for v in first)
    assert len({v.pdq for v in first}) == len(first)


def test_default_variants_are_the_mirror_crops_small_rotations_and_middle_band() -> None:
    names = set(variants.DEFAULT_VARIANTS)

    assert variants.DEFAULT_VARIANTS[0] == "original" and len(names) == 17
    assert {"mirror", "crop_centre_90", "crop_top_left_95", "crop_bottom_right_90"} <= names
    assert {"crop_centre_90_mirror", "rotate_+2", "rotate_-2"} <= names
    # Turned or flipped-over photos are rare edits: not registered by default.
    assert not names & (set(variants.DIHEDRAL_NAMES) - {"original", "mirror"})
    kinds = {variants.variant_kind(name) for name in names}
    assert kinds == {"original", "mirror", "crop", "rotation", "band"}
    # The band variant is the photo's middle band, hashed as a record's band is.
    assert variants.variant_kind("band") == "band"


def test_band_variant_is_hashed_like_a_records_band() -> None:
    rgb = decoded(skimage_photo("coffee"))
    [band] = variants.variants_compute(rgb, ("band",))
    pdq, phash, quality = hashing.band_split(hashing.band_of(variants.working_copy(rgb)))

    # The same pixels (the working copy's middle band), the same hashes.
    assert (band.pdq, band.phash, band.pdq_quality) == (pdq, phash, quality)
    top, bottom = hashing.band_rows(rgb.height)
    assert (top, bottom) == (round(0.15 * rgb.height), rgb.height - round(0.15 * rgb.height))


def test_variants_pack_and_unpack_round_trip_with_stable_codes() -> None:
    computed = variants.variants_compute(decoded(skimage_photo("coffee")))

    packed = variants.variants_pack(computed)
    colours = variants.colours_pack(computed)

    assert len(packed) == variants.PACKED_SIZE * len(computed)
    assert len(colours) == COLOUR_BYTES * len(computed) == 33 * 17
    # The hashes alone, then the colours attached position by position.
    unpacked = variants.variants_unpack(packed)
    assert unpacked == [replace(v, colour="") for v in computed]
    assert variants.colours_unpack(colours, unpacked) == computed
    assert colours[:33].hex() == computed[0].colour
    # Codes are stored: they never move (new variants are appended).
    assert variants.VARIANT_CODES["original"] == 0 and variants.VARIANT_CODES["mirror"] == 1
    assert variants.VARIANT_CODES["rotate_-2"] == 31


def test_every_variant_carries_the_colour_of_its_derived_image() -> None:
    rgb = decoded(skimage_photo("chelsea"))

    computed = variants.variants_compute(rgb)

    assert all(hashing.is_hex(v.colour, COLOUR_HEX_LENGTH) for v in computed)
    for variant in computed:
        image = variants.variant_image(rgb, variant.name)
        assert variant.colour == hashing.colour_of(image), variant.name
    by_name = {v.name: v for v in computed}
    # The mirror image's cells are the original's, swapped left and right.
    original, mirror = (bytes.fromhex(by_name[n].colour) for n in ("original", "mirror"))
    assert original[0] == mirror[0]
    assert len({v.colour for v in computed}) > 1


def test_colours_pack_is_empty_when_any_variant_has_no_colour() -> None:
    computed = variants.variants_compute(
        decoded(skimage_photo("rocket")), variants.DERIVED_VARIANTS
    )
    unknown = [*computed[:3], replace(computed[3], colour=""), *computed[4:]]

    assert variants.colours_pack(unknown) == b""
    assert variants.colours_pack([]) == b""
    # Nothing stored: every colour stays unknown.
    assert variants.colours_unpack(b"", computed) == computed
    assert all(v.colour == "" for v in variants.colours_unpack(b"", unknown[3:4]))


def test_colours_pack_and_unpack_refuse_what_is_not_a_signature() -> None:
    computed = variants.variants_compute(decoded(skimage_photo("rocket")), ("mirror", "rotate_+2"))

    for bad in ("ab" * 32, computed[1].colour.upper(), "zz" + computed[1].colour[2:]):
        with pytest.raises(ValueError, match=r"variant 'rotate_\+2': colour must be 66 lowercase"):
            variants.colours_pack([computed[0], replace(computed[1], colour=bad)])
    with pytest.raises(ValueError, match="packed colours are 65 bytes; 2 variants need 66"):
        variants.colours_unpack(bytes(65), computed)
    with pytest.raises(ValueError, match="packed colours are 33 bytes; 2 variants need 66"):
        variants.colours_unpack(bytes(33), computed)


def test_original_variant_is_the_photos_own_hashes() -> None:
    data = encode(skimage_photo("astronaut"), "PNG")
    photo = hashing.hash_bytes(data)

    original = variants.variants_compute(hashing.decode(data), names=("original",))[0]

    assert (original.pdq, original.pdq_quality, original.phash, original.colour) == (
        photo.pdq,
        photo.pdq_quality,
        photo.phash,
        photo.colour,
    )


def test_dihedral_variants_are_the_hashes_of_the_turned_images() -> None:
    rgb = decoded(skimage_photo("chelsea"))
    work = variants.working_copy(rgb)

    names = ("original", "mirror", "rotate_90", "transverse")
    computed = {v.name: v for v in variants.variants_compute(rgb, names=names)}

    for name in ("mirror", "rotate_90", "transverse"):
        pdq, _ = hashing.pdq_of(variants.variant_image(rgb, name))
        assert computed[name].pdq == pdq
    turned = work.transpose(Image.Transpose.ROTATE_90)
    assert computed["rotate_90"].phash == hashing.phash_of(turned)


@pytest.mark.parametrize("name", ["astronaut", "camera", "rocket", "moon"])
def test_derived_variants_pdq_is_pdqhash_bit_for_bit(name: str) -> None:
    """Derived variants are hashed by the numpy PDQ (registry.fast_hashing),
    faster than pdqhash and equal to it: hash and quality."""
    rgb = decoded(skimage_photo(name))

    computed = variants.variants_compute(rgb, names=variants.DERIVED_VARIANTS)

    for variant in computed:
        image = variants.variant_image(rgb, variant.name)
        assert (variant.pdq, variant.pdq_quality) == hashing.pdq_of(image), variant.name


def test_working_copy_bounds_the_longest_side() -> None:
    big = Image.new("RGB", (2000, 1000))

    assert variants.working_copy(big).size == (512, 256)
    assert variants.working_copy(Image.new("RGB", (300, 200))).size == (300, 200)


def test_unknown_variant_names_are_refused() -> None:
    rgb = Image.new("RGB", (64, 64))

    with pytest.raises(ValueError, match="unknown"):
        variants.variants_compute(rgb, names=("original", "crop_centre_42"))
    with pytest.raises(ValueError, match="unknown"):
        variants.variant_kind("sideways")


@pytest.mark.parametrize(("name", "other"), [("chelsea", "coffee"), ("astronaut", "camera")])
def test_mirrored_and_corner_cropped_copies_match_while_another_photo_does_not(
    name: str, other: str
) -> None:
    image = skimage_photo(name)
    photo = registered(image)
    width, height = image.size
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # 10 % cut off the left and top edges: the bottom-right 90 % window.
    corner = image.crop((round(width * 0.1), round(height * 0.1), width, height))

    assert "mirror" in matching_variants(query_of(mirrored), photo)
    assert "crop_bottom_right_90" in matching_variants(query_of(corner), photo)
    assert matching_variants(query_of(skimage_photo(other)), photo) == []
    # Without the variants the photo's own hashes miss both copies.
    original = [v for v in photo if v.name == "original"]
    assert matching_variants(query_of(mirrored), original) == []
    assert matching_variants(query_of(corner), original) == []
