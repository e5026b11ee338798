"""registry.hashing: safe decoding and the three hash kinds.

Pure functions: no database. Images come from scikit-image's bundled files, from
Meta's PDQ reference set (tests/fixtures/pdq-reference) or are generated here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import imagehash
import numpy as np
import pytest
import skimage.color
import skimage.data
from PIL import Image, ImageEnhance

from benchmarks.edits import text_overlay
from optout.matching.rule import KEYPOINT_INLIERS
from registry import colour, fast_hashing, hashing, keypoints
from registry.colour import (
    COLOUR_CONFIRM_THRESHOLD,
    COLOUR_HEX_LENGTH,
    COLOUR_THRESHOLD,
    COLOURFUL_RECORD,
    LAYOUT_THRESHOLD,
    colour_compare,
    colour_distance,
    colour_parts,
    colour_signature,
    layout_compare,
    layout_parts,
)
from tests.fresh_python import LOADED_FRAMEWORKS, run_python
from tests.images import SKIMAGE_PHOTOS, encode, generated_photo, jpeg_bytes, skimage_photo

SKIMAGE_DATA = Path(skimage.data.__file__).parent
PDQ_REFERENCE = Path(__file__).parent.parent / "fixtures" / "pdq-reference"
PDQ_EXPECTED = [
    tuple(line.split("\t"))
    for line in (PDQ_REFERENCE / "expected.tsv").read_text().splitlines()
    if line.strip()
]
# The reference images whose PDQ quality is below 50 (README.md).
PDQ_LOW_QUALITY = {
    "misc-images_small.jpg",
    "reg-test-input_labelme-subset_q0003.jpg",
    "reg-test-input_labelme-subset_q0004.jpg",
}
# Orientation tag of EXIF: 6 means "rotate 90° clockwise to display".
EXIF_ORIENTATION = 0x0112


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose header (with a valid CRC) claims width x height."""
    small = encode(Image.new("L", (8, 8)), "PNG")
    # Signature (8) + chunk length (4) + b"IHDR" (4), then 13 bytes of IHDR data.
    ihdr = struct.pack(">II", width, height) + small[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return small[:16] + ihdr + crc + small[33:]


# Golden values: a library upgrade that changes any hash fails here, loudly.


def _digest(keypoints_text: str) -> str:
    return hashlib.sha256(base64.b64decode(keypoints_text)).hexdigest()[:32]


def test_golden_hashes_of_the_astronaut_png_bundled_with_scikit_image() -> None:
    data = (SKIMAGE_DATA / "astronaut.png").read_bytes()

    hashes = hashing.hash_bytes(data)

    # The keypoints (about 5.8 KB of base64) by a digest: an OpenCV upgrade
    # that moves a corner fails here.
    assert _digest(hashes.keypoints) == "eea4341f0167be40f9eb8fe7c93af34c"
    assert replace(hashes, keypoints="") == hashing.PhotoHashes(
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        pdq="2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724",
        pdq_quality=100,
        phash="c2924c5532bddfc8",
        width=512,
        height=512,
        colour="5705fd030e020802081409040703030103261f1f171715000229231f1406050101",
        band="4739929c0d634a452d4250e3aa565529ef9cb7da6be793564922f911f499b7a4d2b2cc4422b7733d64",
    )


def test_golden_hashes_of_the_rocket_jpeg_bundled_with_scikit_image() -> None:
    # A JPEG too: its pixels depend on the JPEG decoder (libjpeg-turbo in Pillow),
    # and on any decoding shortcut (draft mode) added for speed.
    data = (SKIMAGE_DATA / "rocket.jpg").read_bytes()

    hashes = hashing.hash_bytes(data)

    assert _digest(hashes.keypoints) == "f88faa7f63494b8ff7ac4ea8aa4e76dd"
    assert replace(hashes, keypoints="") == hashing.PhotoHashes(
        sha256="c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        pdq="8792786c87937064bf1bc0e43f1fc0e03f1cc2e33da4c2537cec821b2ce4f376",
        pdq_quality=100,
        phash="c0371bec1be51267",
        width=640,
        height=427,
        colour="5104ed04eb04ec02f203eb04eb03ed03ef02ed02ee02f102f201fc0301030602f9",
        band="00fffd15ffa20077fa88055deaaa1576eaaa0554e8a01dd8cc8bd75e02217776c037423d781f2a5f62",
    )


@pytest.mark.parametrize(("filename", "expected"), PDQ_EXPECTED, ids=[f for f, _ in PDQ_EXPECTED])
def test_pdq_is_within_16_bits_of_meta_reference_implementation(
    filename: str, expected: str
) -> None:
    data = (PDQ_REFERENCE / filename).read_bytes()

    hashes = hashing.hash_bytes(data)

    # Meta's own test tolerates 16 bits (decoders and resamplers differ); 0-12
    # were measured with pdqhash 0.2.8 and Pillow 13.
    assert hashing.hamming(hashes.pdq, expected) <= 16
    if filename in PDQ_LOW_QUALITY:
        assert hashes.pdq_quality < hashing.PDQ_MIN_QUALITY
    else:
        assert hashes.pdq_quality >= hashing.PDQ_MIN_QUALITY


def test_pdq_reference_set_has_all_eighteen_vectors() -> None:
    # Guards the parametrized test above against silently testing nothing.
    assert len(PDQ_EXPECTED) == 18
    assert all(hashing.is_hex(expected, hashing.PDQ_HEX_LENGTH) for _, expected in PDQ_EXPECTED)


@pytest.mark.parametrize("name", SKIMAGE_PHOTOS)
def test_half_size_jpeg_quality_60_copy_stays_within_match_thresholds(name: str) -> None:
    photo = skimage_photo(name)
    original = hashing.hash_bytes(encode(photo, "PNG"))
    half = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)

    copy = hashing.hash_bytes(encode(half, "JPEG", quality=60))

    # 31: the registry's PDQ threshold. 8: a loose pHash bound (measured 0-2).
    assert hashing.hamming(original.pdq, copy.pdq) <= 31
    assert hashing.hamming(original.phash, copy.phash) <= 8
    assert (copy.width, copy.height) == (photo.width // 2, photo.height // 2)


def test_exif_orientation_is_applied_before_hashing() -> None:
    upright = skimage_photo("chelsea")
    upright_hashes = hashing.hash_bytes(encode(upright, "JPEG", quality=95))
    # A camera held sideways stores the pixels turned 90° counter-clockwise and
    # tags them "rotate 90° clockwise to display" (orientation 6).
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    untagged = hashing.hash_bytes(encode(stored, "JPEG", quality=95))

    tagged = hashing.hash_bytes(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))

    assert (tagged.width, tagged.height) == (upright.width, upright.height) == (451, 300)
    assert hashing.hamming(tagged.pdq, upright_hashes.pdq) <= 8
    assert hashing.hamming(tagged.phash, upright_hashes.phash) <= 4
    assert (untagged.width, untagged.height) == (300, 451)
    assert hashing.hamming(untagged.pdq, upright_hashes.pdq) > 64
    assert hashing.hamming(untagged.phash, upright_hashes.phash) > 16


def test_phash_is_exactly_the_imagehash_phash_string_of_the_upright_image() -> None:
    data = (SKIMAGE_DATA / "coffee.png").read_bytes()

    hashes = hashing.hash_bytes(data)

    assert hashes.phash == str(imagehash.phash(Image.open(io.BytesIO(data))))
    assert len(hashes.phash) == hashing.PHASH_HEX_LENGTH


def test_sixteen_bit_greyscale_png_hashes_like_its_eight_bit_version() -> None:
    # Pillow's own conversion would clip every value above 255 to white.
    pixels = np.asarray(generated_photo(7).convert("L"), dtype=np.uint16) * 257
    sixteen_bit = Image.fromarray(pixels)
    assert sixteen_bit.mode == "I;16"
    eight_bit = Image.fromarray((pixels >> 8).astype(np.uint8))

    hashes = hashing.hash_bytes(encode(sixteen_bit, "PNG"))

    expected = hashing.hash_bytes(encode(eight_bit, "PNG"))
    assert (hashes.pdq, hashes.phash, hashes.pdq_quality) == (
        expected.pdq,
        expected.phash,
        expected.pdq_quality,
    )
    assert hashes.pdq_quality == 100


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_every_allowed_format_is_hashed(fmt: str) -> None:
    data = encode(generated_photo(3), fmt)

    hashes = hashing.hash_bytes(data)

    assert (hashes.width, hashes.height) == (320, 240)
    assert hashes.sha256 == hashing.sha256_hex(data)
    assert hashing.is_hex(hashes.pdq, hashing.PDQ_HEX_LENGTH)
    assert hashing.is_hex(hashes.phash, hashing.PHASH_HEX_LENGTH)


def test_as_dict_holds_the_nine_fields_of_the_jsonl_format() -> None:
    hashes = hashing.hash_bytes(jpeg_bytes(1))

    fields = hashes.as_dict()

    assert sorted(fields) == [
        "band",
        "colour",
        "height",
        "keypoints",
        "pdq",
        "pdq_quality",
        "phash",
        "sha256",
        "width",
    ]
    assert hashing.is_hex(fields["colour"], COLOUR_HEX_LENGTH)
    assert hashing.is_hex(fields["band"], hashing.BAND_HEX_LENGTH)
    assert (fields["width"], fields["height"]) == (320, 240)
    assert keypoints.count(keypoints.from_text(fields["keypoints"])) > 0


# Safe decoding: every bad input is an ImageRejected with an exact code.


def rejection(data: bytes, **kwargs: int) -> tuple[str, str]:
    with pytest.raises(hashing.ImageRejected) as raised:
        hashing.hash_bytes(data, **kwargs)
    return raised.value.code, raised.value.reason


def test_text_is_not_an_image() -> None:
    assert rejection(b"name,url\nkitten,https://example.org/kitten.jpg\n") == (
        "not_an_image",
        "not a JPEG, PNG, WEBP or GIF image",
    )


def test_text_starting_like_a_bmp_is_still_just_not_an_image() -> None:
    assert rejection(b"BMW photos from the 2020 rally\n") == (
        "not_an_image",
        "not a JPEG, PNG, WEBP or GIF image",
    )


def test_empty_file_is_not_an_image() -> None:
    assert rejection(b"") == ("not_an_image", "file is empty")


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_image_formats_outside_the_allow_list_are_refused_by_name(fmt: str) -> None:
    data = encode(generated_photo(3), fmt)

    assert rejection(data) == (
        "unsupported_format",
        f"{fmt} images are not accepted; convert to JPEG, PNG, WEBP or GIF",
    )


def test_heic_from_a_phone_is_refused_by_name() -> None:
    # The first box of an HEIC file: size, "ftyp", major brand "heic".
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)

    assert rejection(data) == (
        "unsupported_format",
        "HEIC images are not accepted; convert to JPEG, PNG, WEBP or GIF",
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("kept", [0.05, 0.5, 0.95])
def test_truncated_file_is_refused_as_truncated(fmt: str, kept: float) -> None:
    data = encode(generated_photo(4), fmt)

    cut = data[: int(len(data) * kept)]

    assert rejection(cut) == ("truncated", "image file is truncated")


def test_png_with_damaged_header_is_corrupt() -> None:
    data = encode(generated_photo(5), "PNG")

    damaged = data[:8] + bytes(20) + data[28:]

    assert rejection(damaged) == ("corrupt", "PNG header is damaged")


def test_jpeg_with_damaged_header_is_corrupt() -> None:
    data = jpeg_bytes(5)

    damaged = data[:3] + bytes(20) + data[23:]

    assert rejection(damaged) == (
        "corrupt",
        "cannot decode image: broken data stream when reading image file",
    )


def test_header_claiming_a_huge_canvas_is_a_decompression_bomb() -> None:
    data = png_claiming_size(20_000, 20_000)
    assert len(data) < 100

    assert rejection(data) == (
        "decompression_bomb",
        "Image size (400000000 pixels) exceeds limit of 178956970 pixels, "
        "could be decompression bomb DOS attack.",
    )


def test_image_above_max_pixels_but_below_pillows_limit_is_refused() -> None:
    # 64 MP: Pillow (89.5 MP) would decode it; the registry's cap (50 MP) refuses.
    data = png_claiming_size(8_000, 8_000)

    assert rejection(data) == (
        "decompression_bomb",
        "image is 8000x8000 pixels; the limit is 50000000 pixels",
    )


def test_decompression_bomb_warning_is_raised_as_an_error() -> None:
    # 100 MP: above Pillow's warning limit, below its error limit. Only the
    # warning-turned-error produces Pillow's message; our own pixel cap would
    # have worded it differently, and nothing is left to scroll by as a warning.
    data = png_claiming_size(10_000, 10_000)

    with warnings.catch_warnings(record=True) as emitted:
        warnings.simplefilter("always")
        result = rejection(data)

    assert result == (
        "decompression_bomb",
        "Image size (100000000 pixels) exceeds limit of 89478485 pixels, "
        "could be decompression bomb DOS attack.",
    )
    assert emitted == []


def test_file_larger_than_max_bytes_is_too_large() -> None:
    data = jpeg_bytes(6)

    assert rejection(data, max_bytes=1000) == (
        "too_large",
        f"file is {len(data)} bytes; the limit is 1000 bytes",
    )


def test_file_of_exactly_max_bytes_is_hashed() -> None:
    data = jpeg_bytes(6)

    hashes = hashing.hash_bytes(data, max_bytes=len(data))

    assert hashes.sha256 == hashing.sha256_hex(data)


# hamming(), is_hex(), bits_to_hex()


def test_hamming_counts_differing_bits() -> None:
    assert hashing.hamming("00", "ff") == 8
    assert hashing.hamming("0f", "0e") == 1
    assert hashing.hamming("c2924c5532bddfc8", "c2924c5532bddfc8") == 0
    assert hashing.hamming("0" * 64, "f" * 64) == 256
    assert hashing.hamming("ABCD", "abcd") == 0


def test_hamming_refuses_different_lengths() -> None:
    with pytest.raises(ValueError, match="hashes of different lengths"):
        hashing.hamming("00", "000")


@pytest.mark.parametrize("bad", ["0x12", "-123", "1_23", " 123", "12g4"])
def test_hamming_refuses_anything_but_hex_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="hexadecimal digits only"):
        hashing.hamming(bad, "0000")


def test_is_hex_wants_exact_length_and_lowercase_digits() -> None:
    assert hashing.is_hex("c2924c5532bddfc8", 16) is True
    assert hashing.is_hex("C2924C5532BDDFC8", 16) is False
    assert hashing.is_hex("c2924c5532bddfc", 16) is False
    assert hashing.is_hex("c2924c5532bddfc80", 16) is False
    assert hashing.is_hex("c2924c5532bddfcg", 16) is False
    assert hashing.is_hex(None, 16) is False
    assert hashing.is_hex(12, 2) is False


def test_bits_to_hex_puts_the_most_significant_bit_first() -> None:
    bits = np.zeros(256, dtype=np.uint8)
    bits[0] = 1
    bits[255] = 1

    assert hashing.bits_to_hex(bits) == "80" + "00" * 30 + "01"


# The fast path (hash_bytes(..., fast=True)): JPEG draft decoding. Its sha256 and
# size are the full decode's; PDQ and pHash stay within 12 and 2 bits of it.

FAST_PDQ_BOUND = 12
FAST_PHASH_BOUND = 2
LARGE = (1024, 768)


def large_jpeg(name: str, quality: int = 90, **params: object) -> bytes:
    photo = skimage_photo(name).resize(LARGE, Image.Resampling.BICUBIC)
    return encode(photo, "JPEG", quality=quality, **params)


@pytest.mark.parametrize("name", SKIMAGE_PHOTOS)
def test_fast_path_stays_within_bounds_of_the_full_decode_on_large_jpegs(name: str) -> None:
    data = large_jpeg(name)

    fast = hashing.hash_bytes(data, fast=True)

    full = hashing.hash_bytes(data)
    assert hashing.decode_reduced(data).scale == 2
    assert (fast.sha256, fast.width, fast.height) == (full.sha256, 1024, 768)
    assert hashing.hamming(fast.pdq, full.pdq) <= FAST_PDQ_BOUND
    assert hashing.hamming(fast.phash, full.phash) <= FAST_PHASH_BOUND
    assert abs(fast.pdq_quality - full.pdq_quality) <= 2
    assert_bands_close(fast.band, full.band)


def bands_far_apart(a: str, b: str) -> bool:
    """Two bands' PDQs more than 64 bits apart: different pictures."""
    return hashing.hamming(hashing.band_split(a)[0], hashing.band_split(b)[0]) > 64


def assert_bands_close(fast: str, full: str) -> None:
    """The middle band's hashes of the fast path within the bounds of the photo's."""
    (fast_pdq, fast_phash, fast_quality), (pdq, phash, quality) = map(
        hashing.band_split, (fast, full)
    )
    assert hashing.hamming(fast_pdq, pdq) <= FAST_PDQ_BOUND
    assert hashing.hamming(fast_phash, phash) <= FAST_PHASH_BOUND
    assert abs(fast_quality - quality) <= 2


def test_fast_path_of_a_progressive_jpeg_stays_within_bounds() -> None:
    data = large_jpeg("astronaut", progressive=True)

    fast = hashing.hash_bytes(data, fast=True)

    full = hashing.hash_bytes(data)
    assert hashing.decode_reduced(data).scale == 2
    assert hashing.hamming(fast.pdq, full.pdq) <= FAST_PDQ_BOUND
    assert hashing.hamming(fast.phash, full.phash) <= FAST_PHASH_BOUND


def test_draft_scale_keeps_both_sides_at_least_the_minimum() -> None:
    photo = generated_photo(8, size=(3200, 2000))

    reduced = hashing.decode_reduced(encode(photo, "JPEG", quality=80))

    # 1/8 would leave 250 rows, below FAST_MIN_SIDE (384): 1/4 it is.
    assert (reduced.scale, reduced.rgb.size) == (4, (800, 500))
    assert (reduced.width, reduced.height) == (3200, 2000)


def test_fast_path_without_a_draft_hashes_like_pdqhash_and_imagehash_exactly() -> None:
    # The golden JPEG is too small to be reduced (427 rows < 2 x 384): the fast
    # path decodes it in full, and its PDQ (written in numpy) and pHash are then
    # exactly the reference values.
    data = (SKIMAGE_DATA / "rocket.jpg").read_bytes()

    fast = hashing.hash_bytes(data, fast=True)

    assert hashing.decode_reduced(data).scale == 1
    # Keypoints included: every pixel decoded, the same luminance.
    assert fast == hashing.hash_bytes(data)
    assert fast.pdq == "8792786c87937064bf1bc0e43f1fc0e03f1cc2e33da4c2537cec821b2ce4f376"


@pytest.mark.parametrize(
    "size", [(1024, 768), (451, 300), (203, 141), (64, 64), (130, 97), (7, 5)], ids=str
)
def test_numpy_pdq_equals_pdqhash_bit_for_bit(size: tuple[int, int]) -> None:
    rgb = np.asarray(generated_photo(9, size=(max(size[0], 16), max(size[1], 16))))
    rgb = np.ascontiguousarray(rgb[: size[1], : size[0]])

    ours = fast_hashing.pdq_of_reduced(rgb, (size[1], size[0]))

    assert ours == hashing.pdq_of(Image.fromarray(rgb))


def test_numpy_pdq_of_an_image_too_small_for_pdq_is_all_zeros_like_pdqhash() -> None:
    rgb = np.asarray(generated_photo(9, size=(16, 16)))[:4, :16].copy()

    assert fast_hashing.pdq_of_reduced(rgb, (4, 16)) == ("0" * 64, 0)
    assert hashing.pdq_of(Image.fromarray(rgb)) == ("0" * 64, 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_folded_pdq_filter_aligns_blocks_to_the_stored_image_for_every_orientation(
    orientation: int,
) -> None:
    # A stored image made of 2 x 2 blocks, cut to odd sides so that the last
    # block of each axis is half a block: its decode at 1/2 is exactly one pixel
    # per block. Turned upright, the folded PDQ filter on the half-size image must
    # give the full-size 64 x 64 buffer exactly, which needs each displayed axis'
    # blocks aligned to the right end.
    half, full, reversed_ = blocky_decode(orientation, (71, 102), (141, 203))

    folded = fast_hashing.pdq_luma_64(half, full.shape[:2], 2, reversed_)

    expected = fast_hashing.pdq_luma_64(full, full.shape[:2])
    np.testing.assert_allclose(folded, expected, rtol=0, atol=1e-3)
    wrong = fast_hashing.pdq_luma_64(half, full.shape[:2], 2, (False, False))
    if reversed_ != (False, False):
        assert np.abs(wrong - expected).max() > 1


def blocky_decode(
    orientation: int, half_size: tuple[int, int], cut: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool]]:
    """A random image at ``half_size`` (rows, columns), stored as 2 x 2 blocks
    cut to ``cut`` (its exact decode at 1/2), and both turned upright for
    ``orientation``: (half upright, full upright, ORIENTATION_REVERSED)."""
    rng = np.random.default_rng(orientation)
    half = rng.integers(0, 256, size=(*half_size, 3), dtype=np.uint8)
    stored = half.repeat(2, axis=0).repeat(2, axis=1)[: cut[0], : cut[1]]
    method = ORIENTATION_METHODS.get(orientation)

    def upright(array: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(array))
        return np.asarray(image.transpose(method) if method is not None else image)

    return upright(half), upright(stored), fast_hashing.ORIENTATION_REVERSED[orientation]


ORIENTATION_METHODS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("name", ["coffee", "camera", "hubble_deep_field"])
def test_phash_with_margin_is_exactly_imagehash_phash(name: str) -> None:
    photo = skimage_photo(name)

    phash, margin = fast_hashing.phash_with_margin(photo)

    assert phash == str(imagehash.phash(photo))
    assert margin >= 0


@pytest.mark.parametrize("size", [(1024, 768), (451, 300), (32, 32), (97, 203)], ids=str)
def test_phash_of_luma_is_imagehash_resize_and_dct_in_floating_point(
    size: tuple[int, int],
) -> None:
    import scipy.fftpack

    rgb = np.asarray(generated_photo(5, size=size))
    luma = fast_hashing.luma_of(rgb)
    # Pillow's Lanczos on a 32-bit float image: the same filter as imagehash's
    # resize of the grey image, without its rounding to 8 bits.
    small = np.asarray(
        Image.fromarray(luma, mode="F").resize((32, 32), Image.Resampling.LANCZOS),
        dtype=np.float64,
    )
    low = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8].reshape(-1)
    expected_bits = np.packbits(low > np.median(low)).tobytes().hex()
    ordered = np.sort(low)

    phash, margin = fast_hashing.phash_of_luma(luma, (size[1], size[0]))

    assert phash == expected_bits
    assert margin == pytest.approx(float(ordered[33] - ordered[30]), rel=1e-3, abs=1e-2)
    # And imagehash itself (8-bit rounding) lands within a swapped pair at most.
    assert hashing.hamming(phash, str(imagehash.phash(Image.fromarray(rgb)))) <= 2


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_folded_phash_filter_on_a_half_size_decode_equals_the_full_size_one(
    orientation: int,
) -> None:
    # As for PDQ: blocks of 2 x 2 pixels, odd sides; the folded filter applied to
    # one pixel per block gives the full-size low frequencies.
    half, full, reversed_ = blocky_decode(orientation, (211, 302), (421, 603))

    folded = fast_hashing.phash_of_luma(fast_hashing.luma_of(half), full.shape[:2], 2, reversed_)

    expected = fast_hashing.phash_of_luma(fast_hashing.luma_of(full), full.shape[:2])
    assert folded[0] == expected[0]
    assert folded[1] == pytest.approx(expected[1], rel=1e-3)


def test_fast_path_reads_the_luma_from_the_y_plane_of_a_colour_jpeg() -> None:
    data = large_jpeg("coffee")

    ycbcr = hashing.decode_reduced(data, ycbcr=True)

    rgb = hashing.decode_reduced(data)
    assert (ycbcr.rgb.mode, rgb.rgb.mode, ycbcr.scale) == ("YCbCr", "RGB", 2)
    y_plane = hashing.reduced_luma(ycbcr)
    assert np.array_equal(y_plane, np.asarray(ycbcr.rgb.getchannel(0)).astype(np.float32))
    assert np.array_equal(hashing.reduced_luma(rgb), fast_hashing.luma_of(np.asarray(rgb.rgb)))
    difference = np.abs(y_plane - fast_hashing.luma_of(np.asarray(rgb.rgb)))
    # Equal up to the rounding and clipping of the RGB conversion.
    assert difference.mean() < 0.6
    assert difference.max() < 16
    assert colour_distance(hashing.colour_of(ycbcr.rgb), hashing.colour_of(rgb.rgb)) <= (
        COLOUR_ROUNDING
    )
    # Grey JPEGs and small ones are decoded as before.
    grey = encode(skimage_photo("coffee").convert("L").resize(LARGE), "JPEG", quality=90)
    assert hashing.decode_reduced(grey, ycbcr=True).rgb.mode == "RGB"
    small = (SKIMAGE_DATA / "rocket.jpg").read_bytes()
    assert hashing.decode_reduced(small, ycbcr=True).rgb.mode == "RGB"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_fast_path_applies_exif_orientation_like_the_full_decode(orientation: int) -> None:
    upright = skimage_photo("chelsea").resize(LARGE, Image.Resampling.BICUBIC)
    # Stored as the camera wrote it; the tag says how to turn it for display.
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}
    stored = upright.transpose(inverse.get(orientation, Image.Transpose.ROTATE_270))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    untagged = hashing.hash_bytes(encode(stored, "JPEG", quality=90), fast=True)
    data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())

    fast = hashing.hash_bytes(data, fast=True)

    full = hashing.hash_bytes(data)
    assert (fast.width, fast.height) == (full.width, full.height) == LARGE
    assert hashing.hamming(fast.pdq, full.pdq) <= FAST_PDQ_BOUND
    assert hashing.hamming(fast.phash, full.phash) <= FAST_PHASH_BOUND
    assert hashing.hamming(untagged.pdq, full.pdq) > 64
    # The middle band of the upright image, not of the stored one.
    assert_bands_close(fast.band, full.band)
    assert_bands_close(full.band, hashing.band_of(upright))
    assert bands_far_apart(untagged.band, full.band)
    # The colours of the upright image, cell by cell.
    assert colour_distance(fast.colour, full.colour) <= COLOUR_ROUNDING
    assert colour_distance(full.colour, colour_signature(upright)) <= COLOUR_ROUNDING
    assert hashing.decode_reduced(data).orientation == orientation


def test_phash_falls_back_to_the_full_decode_when_the_median_is_crowded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = large_jpeg("coffee")
    reduced = hashing.decode_reduced(data, ycbcr=True)
    raw, margin = fast_hashing.phash_of_luma(
        hashing.reduced_luma(reduced), (768, 1024), reduced.scale
    )
    full = hashing.hash_bytes(data)

    monkeypatch.setattr(hashing, "PHASH_FAST_MIN_MARGIN", margin + 1)
    crowded = hashing.hash_bytes(data, fast=True)
    monkeypatch.setattr(hashing, "PHASH_FAST_MIN_MARGIN", margin)
    clear = hashing.hash_bytes(data, fast=True)

    assert crowded.phash == full.phash
    assert clear.phash == raw


@pytest.mark.parametrize("name", SKIMAGE_PHOTOS)
def test_the_fallback_decodes_the_luma_alone_and_hashes_like_the_full_decode(name: str) -> None:
    data = large_jpeg(name)

    fallback = hashing.phash_of_full_decode(data)

    assert hashing.hamming(fallback, hashing.phash_of(hashing.decode(data))) <= FAST_PHASH_BOUND


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_the_fallback_of_a_grey_or_cmyk_jpeg_is_the_full_decode_hash(mode: str) -> None:
    data = encode(skimage_photo("coffee").resize(LARGE).convert(mode), "JPEG", quality=90)

    assert hashing.phash_of_full_decode(data) == hashing.phash_of(hashing.decode(data))


def test_the_fallback_applies_the_exif_orientation() -> None:
    photo = skimage_photo("astronaut").resize(LARGE)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown after a quarter turn clockwise
    data = encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)

    fallback = hashing.phash_of_full_decode(data)

    assert hashing.hamming(fallback, hashing.phash_of(photo)) <= FAST_PHASH_BOUND + 2
    assert hashing.hamming(fallback, hashing.phash_of(photo.rotate(90, expand=True))) > 16


def test_the_fallback_refuses_what_the_full_decode_refuses() -> None:
    data = large_jpeg("coffee")
    with pytest.raises(hashing.ImageRejected) as raised:
        hashing.phash_of_full_decode(data[: len(data) // 2])
    assert raised.value.code == "truncated"
    with pytest.raises(hashing.ImageRejected) as raised:
        hashing.phash_of_full_decode(data, max_bytes=len(data) - 1)
    assert raised.value.code == "too_large"


def fast_rejection(data: bytes, **kwargs: int) -> tuple[str, str]:
    with pytest.raises(hashing.ImageRejected) as raised:
        hashing.hash_bytes(data, fast=True, **kwargs)
    return raised.value.code, raised.value.reason


@pytest.mark.parametrize("kept", [0.05, 0.5, 0.95])
def test_fast_path_refuses_a_truncated_large_jpeg_like_the_full_decode(kept: float) -> None:
    data = large_jpeg("astronaut")

    cut = data[: int(len(data) * kept)]

    assert fast_rejection(cut) == rejection(cut) == ("truncated", "image file is truncated")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_claiming_size(20_000, 20_000), id="bomb-error"),
        pytest.param(png_claiming_size(10_000, 10_000), id="bomb-warning"),
        pytest.param(png_claiming_size(8_000, 8_000), id="above-pixel-cap"),
        pytest.param(encode(generated_photo(3), "TIFF"), id="tiff"),
        pytest.param(encode(generated_photo(3), "BMP"), id="bmp"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), id="heic"),
        pytest.param(b"name,url\n", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(jpeg_bytes(5)[:3] + bytes(20) + jpeg_bytes(5)[23:], id="damaged-jpeg"),
    ],
)
def test_fast_path_refuses_what_the_full_decode_refuses(data: bytes) -> None:
    with warnings.catch_warnings(record=True) as emitted:
        warnings.simplefilter("always")
        fast = fast_rejection(data)

    assert fast == rejection(data)
    assert emitted == []


def test_fast_path_refuses_a_file_above_max_bytes() -> None:
    data = large_jpeg("rocket")

    assert fast_rejection(data, max_bytes=1000) == rejection(data, max_bytes=1000)
    assert fast_rejection(data, max_bytes=1000)[0] == "too_large"


def test_fast_path_jpeg_claiming_a_huge_canvas_is_refused_before_decoding() -> None:
    # A real JPEG header rewritten to claim 9000 x 9000 (81 MP > the 50 MP cap).
    data = bytearray(large_jpeg("rocket"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9000, 9000)

    assert fast_rejection(bytes(data)) == (
        "decompression_bomb",
        "image is 9000x9000 pixels; the limit is 50000000 pixels",
    )


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_fast_path_of_other_formats_is_the_full_decode(fmt: str) -> None:
    data = encode(generated_photo(3, size=(1024, 768)), fmt)
    grey = encode(generated_photo(3, size=(1024, 768)).convert("L"), fmt)

    fast = hashing.hash_bytes(data, fast=True)

    assert hashing.decode_reduced(data).scale == 1
    assert fast == hashing.hash_bytes(data)
    assert hashing.hash_bytes(grey, fast=True) == hashing.hash_bytes(grey)


def test_the_fast_path_computes_keypoints_that_agree_with_the_full_decode_s() -> None:
    """Colour, grey or faint: a reduced decode's Y plane gives keypoints that
    agree with the full decode's (what a photo is registered with)."""
    photo = skimage_photo("chelsea").resize(LARGE, Image.Resampling.BICUBIC)
    coloured = encode(photo, "JPEG", quality=90)
    grey = encode(photo.convert("L"), "JPEG", quality=90)
    faint = encode(ImageEnhance.Color(photo).enhance(0.05), "JPEG", quality=90)

    for data in (coloured, grey, faint):
        assert hashing.decode_reduced(data).scale > 1
        fast = hashing.hash_bytes(data, fast=True)
        registered = keypoints.photo_keypoints_of(hashing.decode(data))
        agreeing = keypoints.inliers(keypoints.from_text(fast.keypoints), registered)
        assert agreeing >= 4 * KEYPOINT_INLIERS


def test_the_deferred_fast_path_leaves_the_keypoints_to_its_caller() -> None:
    """hash_bytes_fast_deferred: the fast hashes without keypoints, and the
    luminance that gives the fast path's keypoints, colour or grey."""
    photo = skimage_photo("chelsea").resize(LARGE, Image.Resampling.BICUBIC)
    for data in (encode(photo, "JPEG", quality=90), encode(photo.convert("L"), "JPEG")):
        hashes, luminance = hashing.hash_bytes_fast_deferred(data)
        fast = hashing.hash_bytes(data, fast=True)

        assert hashes == replace(fast, keypoints="")
        assert luminance.mode == "L" and luminance.size == hashing.decode_reduced(data).rgb.size
        assert fast.keypoints == keypoints.to_text(keypoints.keypoints_of(luminance))


def test_fast_path_ignores_an_orientation_tag_outside_one_to_eight_like_the_full_decode() -> None:
    stored = skimage_photo("chelsea").resize(LARGE, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 9
    data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())

    fast = hashing.hash_bytes(data, fast=True)

    full = hashing.hash_bytes(data)
    assert (fast.width, fast.height) == (full.width, full.height) == LARGE
    assert hashing.decode_reduced(data).orientation == 1
    assert hashing.hamming(fast.pdq, full.pdq) <= FAST_PDQ_BOUND


# Colour signatures (registry.colour): the third signal of a perceptual match.

COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# How far two signatures of the same pixels may be apart when one is computed on
# a reduced copy (hash_bytes' colour_of, the fast path's draft decode): each
# cell's a* and b* may round the other way (measured: at most 1.41).
COLOUR_ROUNDING = 2.0
COLOURFULNESS_TOLERANCE = 0.003


def cropped_to_the_grid(image: Image.Image) -> Image.Image:
    """The image cut to whole multiples of 16 pixels: every cell of the signature's
    16 x 16 grid is then whole pixels, whose plain mean a reference can take."""
    return image.crop((0, 0, image.width // 16 * 16, image.height // 16 * 16))


@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_colour_signature_is_the_lab_chroma_of_a_4_by_4_grid_as_skimage_computes_it(
    name: str,
) -> None:
    image = cropped_to_the_grid(skimage_photo(name))
    pixels = np.asarray(image, dtype=np.float64)
    height, width, _ = pixels.shape
    coarse = pixels.reshape(4, height // 4, 4, width // 4, 3).mean(axis=(1, 3))
    expected_ab = skimage.color.rgb2lab(coarse / 255)[..., 1:].reshape(16, 2)
    fine = pixels.reshape(16, height // 16, 16, width // 16, 3).mean(axis=(1, 3))
    # Chromaticity of each fine cell, pulled towards grey by 8 per channel.
    rg = (fine[..., :2] + 8) / (fine.sum(axis=-1, keepdims=True) + 24) - 1 / 3
    expected_colourfulness = np.hypot(rg[..., 0], rg[..., 1]).mean()

    signature = colour_signature(image)

    assert hashing.is_hex(signature, COLOUR_HEX_LENGTH)
    colourfulness, ab = colour_parts(signature)
    # Rounded to whole a*b* units (rows of cells from the top left).
    assert np.abs(ab - expected_ab).max() <= 0.5 + 1e-3
    # Stored in thousandths.
    assert colourfulness == pytest.approx(expected_colourfulness, abs=0.0005 + 1e-6)
    assert colourfulness >= COLOURFUL_RECORD


@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_whole_pixel_cells_are_averaged_as_the_box_filter_does(name: str) -> None:
    image = skimage_photo(name).resize((64, 48))  # cells of 4 x 3 whole pixels: numpy
    box = [
        np.asarray(channel.convert("F").resize((16, 16), Image.Resampling.BOX), np.float64)
        for channel in image.split()
    ]

    assert np.allclose(colour._cells(image, 16), np.stack(box, axis=-1), atol=1e-3)


@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_colour_of_a_fast_decode_reduces_whole_blocks_like_the_box_filter(name: str) -> None:
    image = skimage_photo(name).resize((512, 384))  # a 1024 x 768 JPEG decoded at 1/2
    boxed = image.resize((hashing.COLOUR_SIDE, hashing.COLOUR_SIDE), Image.Resampling.BOX)

    assert colour_distance(hashing.colour_of(image), colour_signature(boxed)) <= COLOUR_ROUNDING


def test_a_grayscale_photo_has_no_colour() -> None:
    signature = colour_signature(skimage_photo("camera"))

    colourfulness, ab = colour_parts(signature)

    assert colourfulness == 0
    assert not ab.any()
    # A grey record carries no colour evidence: the check is skipped.
    assert colour_compare(signature, colour_signature(skimage_photo("coffee"))) is None


GREY_PHOTOS = ("camera", "coins", "page", "moon", "text", "clock", "horse", "grass", "gravel")
CONTRASTY_GREY_PHOTOS = ("camera", "coins", "page", "moon", "text", "clock")


def test_a_grayscale_photo_carries_the_layout_of_its_luminance() -> None:
    image = cropped_to_the_grid(skimage_photo("camera"))
    luma = np.asarray(image.convert("L"), dtype=np.float64)
    height, width = luma.shape
    cells = luma.reshape(4, height // 4, 4, width // 4).mean(axis=(1, 3)).reshape(-1)
    expected = (cells - cells.mean()) / max(cells.std(), 16.0)

    layout = layout_parts(colour_signature(image))

    assert layout is not None
    # Rounded to 1/32 (Pillow's "L" rounds each pixel: half a level more).
    assert np.abs(layout - expected).max() <= 1 / 64 + 0.5 / 16 + 1e-6
    assert layout_parts(colour_signature(skimage_photo("coffee"))) is None


@pytest.mark.parametrize("name", GREY_PHOTOS)
def test_a_grey_photo_keeps_its_layout_under_captions_and_brightness(name: str) -> None:
    """The layout confirms a grey copy: captions (letters 1/20 and 1/16 of
    the height) and brightness +-20 % stay within LAYOUT_THRESHOLD, on
    contrasty photos and on low-contrast textures (grass, gravel) alike."""
    photo = skimage_photo(name)
    signature = colour_signature(photo)
    edited = [
        text_overlay(photo, seed, lines_per_height=lines) for seed in range(3) for lines in (20, 16)
    ]
    edited += [ImageEnhance.Brightness(photo).enhance(factor) for factor in (1.2, 0.8)]

    for copy in edited:
        distance = layout_compare(colour_signature(copy), signature)
        assert distance is not None and distance <= LAYOUT_THRESHOLD, distance


def test_distinct_grey_photos_have_distinct_layouts() -> None:
    signatures = {name: colour_signature(skimage_photo(name)) for name in CONTRASTY_GREY_PHOTOS}

    closest = min(
        layout_compare(signatures[a], signatures[b]) or 0.0
        for a in CONTRASTY_GREY_PHOTOS
        for b in CONTRASTY_GREY_PHOTOS
        if a < b
    )

    assert closest > LAYOUT_THRESHOLD  # the closest: camera and page, 0.54


@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_brightness_plus_20_percent_keeps_the_colours(name: str) -> None:
    photo = skimage_photo(name)
    brighter = ImageEnhance.Brightness(photo).enhance(1.2)

    distance = colour_distance(colour_signature(photo), colour_signature(brighter))

    assert distance <= COLOUR_THRESHOLD


def test_distinct_colour_photos_are_far_apart() -> None:
    signatures = {name: colour_signature(skimage_photo(name)) for name in COLOUR_PHOTOS}

    assert colour_distance(signatures["astronaut"], signatures["coffee"]) > 3 * (
        COLOUR_CONFIRM_THRESHOLD
    )
    # Even the veto, set for what brightness can do to a saturated colour,
    # separates every pair (the closest: astronaut and chelsea, 35.0).
    assert (
        min(
            colour_distance(signatures[a], signatures[b])
            for a in COLOUR_PHOTOS
            for b in COLOUR_PHOTOS
            if a < b
        )
        > COLOUR_THRESHOLD
    )


@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_a_caption_keeps_the_colours_within_the_confirming_agreement(name: str) -> None:
    """The confirmed boxes exist for captioned copies: a caption (the text
    edit of the benchmarks, letters 1/20 of the height, and 1/16) moves no
    cell beyond COLOUR_CONFIRM_THRESHOLD. (Letters 1/12 of the height move
    up to 12.7: those copies get the hashes' own boxes only.)"""
    photo = skimage_photo(name)
    for seed in range(3):
        for lines in (20, 16):
            captioned = text_overlay(photo, seed, lines_per_height=lines)

            distance = colour_distance(colour_signature(photo), colour_signature(captioned))

            assert distance <= COLOUR_CONFIRM_THRESHOLD, (seed, lines, distance)


@pytest.mark.parametrize("factor", [1.2, 0.8])
def test_brightness_of_a_saturated_photo_stays_within_the_veto(factor: float) -> None:
    """A bright sea and sky (saturated blues, the colours brightness moves the
    most in a*b*): +-20 % stays inside COLOUR_THRESHOLD, not inside the closer
    agreement the package photographs alone would have suggested."""
    rows = np.linspace(0, 1, 96)[:, None, None]
    sky = np.array([70, 170, 250]) * (1 - rows) + np.array([0, 120, 210]) * rows
    texture = np.random.default_rng(5).normal(0, 6, (96, 128, 3))
    photo = Image.fromarray(np.clip(sky + texture, 0, 255).astype(np.uint8))
    edited = ImageEnhance.Brightness(photo).enhance(factor)

    distance = colour_distance(colour_signature(photo), colour_signature(edited))

    assert distance <= COLOUR_THRESHOLD
    if factor > 1:
        assert distance > COLOUR_CONFIRM_THRESHOLD


@pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast"])
@pytest.mark.parametrize("size", [None, LARGE, (1000, 750), (777, 1333), (300, 20)])
@pytest.mark.parametrize("name", COLOUR_PHOTOS)
def test_hash_bytes_colour_is_the_signature_of_the_decoded_photo(
    name: str, size: tuple[int, int] | None, fast: bool
) -> None:
    photo = skimage_photo(name)
    if size is not None:
        photo = photo.resize(size, Image.Resampling.BICUBIC)
    data = encode(photo, "JPEG", quality=90)
    expected = colour_signature(hashing.decode(data))

    colour = hashing.hash_bytes(data, fast=fast).colour

    # Computed on a reduced copy (and on the fast path from the draft decode):
    # the same area means, up to rounding.
    assert colour_distance(colour, expected) <= COLOUR_ROUNDING
    assert colour_parts(colour)[0] == pytest.approx(
        colour_parts(expected)[0], abs=COLOURFULNESS_TOLERANCE
    )
    if fast and size == LARGE:
        assert hashing.decode_reduced(data).scale == 2


def test_colour_of_a_small_image_is_its_exact_signature() -> None:
    small = skimage_photo("coffee").resize((60, 40), Image.Resampling.BOX)

    assert hashing.colour_of(small) == colour_signature(small)


def test_hashing_imports_no_django() -> None:
    # Pure functions, shared with the `optout hash` tool that runs without Django.
    snippet = (
        "import sys\n"
        "from registry import colour, fast_hashing, hashing, variants\n"
        "hashing.hash_bytes(open(sys.argv[1], 'rb').read())\n"
        f"print({LOADED_FRAMEWORKS})\n"
    )

    result = run_python(snippet, str(SKIMAGE_DATA / "astronaut.png"))

    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr
