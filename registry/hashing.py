"""Photo hashing: image bytes in, hashes out. Pure: no Django, no I/O but reading
the bytes it is given, and nothing is ever written anywhere.

Three hash kinds (PRODUCT.md):
- ``sha256``: the exact bytes, 64 lowercase hex digits;
- ``pdq``: Meta's PDQ, 256 bits as 64 lowercase hex digits, most significant bit
  first (the layout of Meta's reference implementation, StopNCII and HMA), plus
  its quality score (0-100; below 50 the image carries too little information
  for the hash to be trusted);
- ``phash``: ``str(imagehash.phash(img))``, 64 bits as 16 hex digits.

and the photo's colour signature (``registry.colour``, 66 hex digits), which
confirms a perceptual match: computed by ``colour_of`` on a 64 x 64 copy; and
its local keypoints (``registry.keypoints``: corners and their descriptors,
which confirm a match geometrically); and
the hashes of its **middle band** (``band_of``, 82 hex digits: the image with
the top and bottom ``BAND_MARGIN`` of its height cut away, where captions,
credit lines and handles go), which find a captioned repost whose own hashes
the caption moved too far (docs/matching.md, "Captions: the middle band").

Perceptual hashes are computed on the image as it is displayed, i.e. after the
EXIF orientation is applied.

``hash_bytes(data)`` decodes every pixel: its hashes are the reference, the ones
photos are registered with. ``hash_bytes(data, fast=True)`` decodes large JPEGs
at 1/2, 1/4 or 1/8 scale and computes PDQ in numpy (registry/fast_hashing.py),
about 5 times faster; its PDQ and pHash stay within a few bits of the reference
(docs/performance.md, "Hashing (step 3)"), its sha256 and size are the same.
Its keypoints come from the reduced decode's luminance; they cost about 2 ms,
a third of the fast path. ``hash_bytes_fast_deferred`` leaves them to its
caller, with the luminance they come from: the workers compute them only for
images whose match they would check (optout.batches; docs/matching.md,
"Keypoints where a match needs them").
Pipelines' webdataset shards are hashed on the fast path; registered photos never.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import imagehash
import numpy as np
import numpy.typing as npt
import pdqhash
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from registry import fast_hashing, keypoints
from registry.colour import colour_signature

# Formats a photo may arrive in. Everything else is refused before decoding:
# each extra decoder is extra attack surface (TIFF, PSD, EPS…).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# 50 megapixels covers the sensors of current full-frame cameras (45.7 MP) and
# stays well below Pillow's own bomb limit (89.5 MP), so a crafted header that
# promises a huge canvas is refused before any pixel is decoded.
MAX_PIXELS = 50_000_000
# Default cap on the bytes of one photo file; callers may pass their own.
MAX_BYTES = 25 * 1024 * 1024
# PDQ's own guidance (and HMA's practice): quality below 50 means a hash of a
# near-featureless image that should not decide a match alone.
PDQ_MIN_QUALITY = 50

# fast=True decodes a JPEG at the smallest scale (1/2, 1/4, 1/8) that keeps both
# sides at least this long: 6 decoded pixels per cell of PDQ's 64 x 64 grid. At
# 3-4 pixels per cell (1/4 of 1024 x 768) PDQ moved up to 12 bits; at 6-8, 4-8.
FAST_MIN_SIDE = 384
# fast=True recomputes pHash from the full decode when the DCT coefficients around
# the median lie closer together than this (fast_hashing.phash_with_margin):
# there the reduced decode's noise could move more than 2 bits. Calibrated with
# benchmarks/bench_hashing.py: every 4-bit miss had a margin below 26; this
# falls back on about 5 % of photos.
PHASH_FAST_MIN_MARGIN = 60.0

# colour_of computes the colour signature on a copy box-filtered to this many
# pixels a side: each of the signature's 16 x 16 fine cells is then 4 x 4 of its
# pixels, the same area means up to 8-bit rounding. Measured on scikit-image's
# photographs at 333 x 517 to 4000 x 3000: at most 1 a*b* unit per cell and
# 0.001 colourfulness from the signature of every pixel; 0.4 ms on a 512 x 384
# image against 0.9 ms for all of its pixels (13 ms against 45 ms at 12 MP).
COLOUR_SIDE = 64

# EXIF orientations that swap width and height (rotations by 90°, transpositions).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)

PHASH_HEX_LENGTH = 16
PDQ_HEX_LENGTH = 64
# The middle band: the fraction of the height cut off the top and off the
# bottom. A caption in the bottom tenth (a credit line, meme text) or a handle
# in a top corner leaves the band's hashes within 4 pHash and 26 PDQ bits of
# the photo's band, letters up to 1/12 of the height included (docs/matching.md).
BAND_MARGIN = 0.15
# A band signature: PDQ (64 hex digits), pHash (16) and PDQ quality (2 hex digits).
BAND_HEX_LENGTH = PDQ_HEX_LENGTH + PHASH_HEX_LENGTH + 2
SHA256_HEX_LENGTH = 64

# Never decode a file whose end is missing; Pillow's default, asserted here so a
# setting elsewhere in a process cannot silently turn it on for us.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# Image formats people do send but that are refused; recognising them turns a
# puzzling "not an image" into "convert it first".
_REFUSED_SIGNATURES = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
# ISO base media "ftyp" brands of still-image formats (HEIC from phones, AVIF).
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}
# Pillow's 16-bit greyscale modes: converting them straight to RGB clips every
# value above 255 to white, so they are scaled down to 8 bits first.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_HEX = re.compile(r"[0-9a-fA-F]*")


class ImageRejected(ValueError):
    """The bytes cannot be hashed as a photo. ``code`` is machine-readable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class PhotoHashes:
    sha256: str
    pdq: str
    pdq_quality: int
    phash: str
    width: int
    height: int
    # registry.colour.colour_signature (66 hex digits); "" when not computed.
    colour: str = ""
    # band_of: the middle band's PDQ, pHash and PDQ quality (82 hex digits);
    # "" when not computed.
    band: str = ""
    # registry.keypoints.keypoints_of, in its text form (base64); "" when not
    # computed.
    keypoints: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sniff_format(data: bytes) -> str | None:
    """The allowed format the leading bytes claim to be, if any."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def refused_format(data: bytes) -> str | None:
    """The name of a known image format that is not accepted, if the bytes are one."""
    for signature, name in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12])
    # "BM" alone would also be the start of some text; the header's reserved
    # field is zero in every BMP writer.
    if data[:2] == b"BM" and data[6:10] == bytes(4):
        return "BMP"
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, *, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode image bytes safely into an upright RGB image, or raise ImageRejected.

    Codes: ``too_large``, ``not_an_image``, ``unsupported_format``, ``corrupt``,
    ``truncated``, ``decompression_bomb``.
    """
    _check_bytes(data, max_bytes)
    with warnings.catch_warnings():
        # A DecompressionBombWarning is Pillow's "this is suspiciously large";
        # here it is an error, never a warning that scrolls by.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data)
        _check_size(image)
        return _load_upright_rgb(image)


def _check_bytes(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ImageRejected(
            "too_large", f"file is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    if not data:
        raise ImageRejected("not_an_image", "file is empty")


def _open(data: bytes) -> Image.Image:
    """Read the header only (no pixels yet), refusing formats outside the allow-list."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        claimed = sniff_format(data)
        if claimed is not None:
            raise ImageRejected("corrupt", f"{claimed} header is damaged") from None
        refused = refused_format(data)
        if refused is not None:
            raise ImageRejected(
                "unsupported_format",
                f"{refused} images are not accepted; convert to JPEG, PNG, WEBP or GIF",
            ) from None
        raise ImageRejected("not_an_image", "not a JPEG, PNG, WEBP or GIF image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected("decompression_bomb", str(error)) from None
    except Exception as error:
        # A crafted header can make a decoder plugin raise nearly anything
        # (struct.error, IndexError…); to us every one of them means "corrupt".
        raise _decoding_failed(error) from None


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", "image has no pixels")
    if width * height > MAX_PIXELS:
        raise ImageRejected(
            "decompression_bomb",
            f"image is {width}x{height} pixels; the limit is {MAX_PIXELS} pixels",
        )


def _load_upright_rgb(image: Image.Image) -> Image.Image:
    _load(image)
    upright, _orientation = _upright(image)
    return _to_rgb(upright)


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected("decompression_bomb", str(error)) from None
    except Exception as error:
        raise _decoding_failed(error) from None


def _upright(image: Image.Image) -> tuple[Image.Image, int]:
    """The image as displayed, and the EXIF orientation that was applied (1: none)."""
    try:
        upright = ImageOps.exif_transpose(image)
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # Browsers ignore an orientation tag they cannot parse and show the
        # pixels as stored; so does the registry, rather than refuse the photo.
        return image, 1
    if not isinstance(orientation, int) or orientation not in fast_hashing.ORIENTATION_REVERSED:
        return upright, 1  # a value exif_transpose does not act on
    return upright, orientation


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        high_bytes = np.asarray(image, dtype=np.uint32) >> 8
        image = Image.fromarray(np.clip(high_bytes, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _decoding_failed(error: Exception) -> ImageRejected:
    message = str(error)
    if "truncated" in message.lower():
        return ImageRejected("truncated", "image file is truncated")
    return ImageRejected("corrupt", f"cannot decode image: {message or type(error).__name__}")


def pdq_of(rgb: Image.Image) -> tuple[str, int]:
    """PDQ hash (64 hex, MSB first) and quality of an RGB image."""
    bits, quality = pdqhash.compute(np.asarray(rgb))
    return bits_to_hex(bits), int(quality)


def phash_of(rgb: Image.Image) -> str:
    return str(imagehash.phash(rgb))


def bits_to_hex(bits: np.ndarray) -> str:
    """A 0/1 vector, most significant bit first, as lowercase hex."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return packed.tobytes().hex()


def hash_bytes(data: bytes, *, max_bytes: int = MAX_BYTES, fast: bool = False) -> PhotoHashes:
    """All hashes of one photo file. Raises ImageRejected with a reason.

    ``fast``: decode large JPEGs at a reduced scale; PDQ and pHash then come
    within a few bits of the full decode's (see the module docstring). The same
    files are refused, for the same reasons.
    """
    if fast:
        return _hash_bytes_fast(data, max_bytes=max_bytes)
    rgb = decode(data, max_bytes=max_bytes)
    pdq, quality = pdq_of(rgb)
    return PhotoHashes(
        sha256=sha256_hex(data),
        pdq=pdq,
        pdq_quality=quality,
        phash=phash_of(rgb),
        width=rgb.width,
        height=rgb.height,
        colour=colour_of(rgb),
        band=band_of(rgb),
        keypoints=keypoints.to_text(keypoints.keypoints_of(rgb)),
    )


def band_rows(height: int) -> tuple[int, int]:
    """The first row of the middle band and the row after its last."""
    margin = round(height * BAND_MARGIN)
    return margin, height - margin


def band_signature(pdq: str, phash: str, pdq_quality: int) -> str:
    """A band's hashes as one string: PDQ, pHash, PDQ quality (two hex digits)."""
    return f"{pdq}{phash}{pdq_quality:02x}"


def band_split(band: str) -> tuple[str, str, int]:
    """The inverse of ``band_signature``: (pdq, phash, pdq_quality)."""
    return band[:PDQ_HEX_LENGTH], band[PDQ_HEX_LENGTH:-2], int(band[-2:], 16)


def band_of(rgb: Image.Image) -> str:
    """``band_signature`` of the middle band of an upright RGB image: PDQ in
    numpy (``fast_hashing.pdq_of_reduced``, bit for bit pdqhash's) and pHash,
    as the registered ``band`` variant is hashed (registry/variants.py)."""
    top, bottom = band_rows(rgb.height)
    band = rgb.crop((0, top, rgb.width, bottom))
    pdq, quality = fast_hashing.pdq_of_reduced(np.asarray(band), (band.height, band.width))
    return band_signature(pdq, phash_of(band), quality)


def colour_of(rgb: Image.Image) -> str:
    """``registry.colour.colour_signature`` of an upright RGB image, computed on
    a copy box-filtered down to at most ``COLOUR_SIDE`` pixels a side. The
    signature only needs area means, and its cells are fractions of each side,
    so the aspect ratio may change; a side is only ever shrunk (a box filter
    that enlarges samples instead of averaging).

    A YCbCr image (``decode_reduced(..., ycbcr=True)``) is averaged before its
    conversion to RGB: the same means but where the conversion clips (within
    the stored rounding on photographs, docs/performance.md)."""
    size = (min(rgb.width, COLOUR_SIDE), min(rgb.height, COLOUR_SIDE))
    if size == rgb.size:
        pass
    elif rgb.width % size[0] == 0 and rgb.height % size[1] == 0:
        # Whole blocks (a 512 x 384 decode: 8 x 6): the same area means, in
        # half the time of the general box filter.
        rgb = rgb.reduce((rgb.width // size[0], rgb.height // size[1]))
    else:
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return colour_signature(rgb if rgb.mode == "RGB" else rgb.convert("RGB"))


@dataclass(frozen=True)
class ReducedImage:
    """A photo decoded for hashing, possibly at a reduced scale."""

    # Upright (EXIF orientation applied), 1/scale of the full size; RGB, or
    # YCbCr when decode_reduced was asked for it (``ycbcr``) and the JPEG holds it.
    rgb: Image.Image
    scale: int  # 1, 2, 4 or 8
    width: int  # full size, upright
    height: int
    orientation: int  # the EXIF orientation applied, 1-8


def decode_reduced(
    data: bytes, *, max_bytes: int = MAX_BYTES, min_side: int = FAST_MIN_SIDE, ycbcr: bool = False
) -> ReducedImage:
    """Like decode(), but a JPEG with both sides at least 2 x ``min_side`` is
    decoded at 1/2, 1/4 or 1/8 scale (the smallest that keeps both sides at least
    ``min_side``) straight from its DCT coefficients. Same checks, same
    ImageRejected codes: the pixel cap applies to the full size in the header.

    ``ycbcr``: a reduced colour JPEG stays in its own YCbCr (no conversion to
    RGB): its Y plane is the BT.601 luma PDQ and pHash start from.
    """
    _check_bytes(data, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data)
        _check_size(image)
        width, height = image.size
        scale = 1
        if image.format == "JPEG" and min(width, height) >= 2 * min_side:
            # Pillow picks the largest of 8, 4, 2, 1 that keeps both sides >= min_side.
            mode = "YCbCr" if ycbcr and image.mode == "RGB" else image.mode
            drafted = image.draft(mode, (min_side, min_side))
            if drafted is not None:
                scale = round(width / drafted[1][2])
                if mode == "YCbCr":
                    # libjpeg's draft mode: the chroma planes upsampled by
                    # replication instead of interpolation (the Y plane is the
                    # same; chroma only feeds the colour signature's area means).
                    assert isinstance(image, ImageFile.ImageFile)
                    image.decoderconfig = (image.decoderconfig[0], 1)
        _load(image)
        upright, orientation = _upright(image)
        rgb = upright if upright.mode == "YCbCr" else _to_rgb(upright)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ReducedImage(rgb, scale, width, height, orientation)


def reduced_luma(reduced: ReducedImage) -> npt.NDArray[np.float32]:
    """The BT.601 luma of a reduced decode, as floats: a YCbCr decode's Y plane
    (that luma, up to the rounding and clipping of the RGB the full decode
    would give), else computed from the RGB pixels."""
    if reduced.rgb.mode == "YCbCr":
        return np.asarray(reduced.rgb.getchannel(0)).astype(np.float32)
    return fast_hashing.luma_of(np.asarray(reduced.rgb))


def phash_of_full_decode(data: bytes, *, max_bytes: int = MAX_BYTES) -> str:
    """``phash_of(decode(data))`` for the fast path's fallback, without the
    chroma: an RGB JPEG is decoded at full scale straight to its Y plane
    (libjpeg's grayscale output), the luma pHash starts from anyway, up to the
    rounding of the RGB round trip. 8.3 against 19 ms per 1024 x 768 photo;
    on the 21 fallback photos of 400 (benchmarks/bench_hashing.py --seed 1)
    the same hash on 20 and 2 bits apart on one. Other images as decode()
    gives them."""
    _check_bytes(data, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data)
        _check_size(image)
        if image.format == "JPEG":
            image.draft("L", image.size)  # an RGB JPEG only; others keep their mode
        _load(image)
        upright, _orientation = _upright(image)
    return phash_of(upright if upright.mode == "L" else _to_rgb(upright))


def _hash_bytes_fast(data: bytes, *, max_bytes: int) -> PhotoHashes:
    hashes, grey = hash_bytes_fast_deferred(data, max_bytes=max_bytes)
    return replace(hashes, keypoints=keypoints.to_text(keypoints.keypoints_of(grey)))


def hash_bytes_fast_deferred(
    data: bytes, *, max_bytes: int = MAX_BYTES
) -> tuple[PhotoHashes, Image.Image]:
    """``hash_bytes(data, fast=True)`` without the keypoints, and the luminance
    they come from (``keypoints.keypoints_of(luminance)``), for a caller that
    computes them only where a match needs them (the workers' shard hashing:
    optout.batches). The luminance is the reduced decode's: never stored."""
    reduced = decode_reduced(data, max_bytes=max_bytes, ycbcr=True)
    full_size = (reduced.height, reduced.width)
    if reduced.scale == 1:
        # Every pixel decoded: imagehash's own pHash.
        pdq, quality = fast_hashing.pdq_of_reduced(np.asarray(reduced.rgb), full_size)
        phash = phash_of(reduced.rgb)
        band = band_of(reduced.rgb)
    else:
        # One luma for both hashes; pHash folded like PDQ (fast_hashing.phash_of_luma).
        reversed_ = fast_hashing.ORIENTATION_REVERSED[reduced.orientation]
        luma = reduced_luma(reduced)
        pdq, quality = fast_hashing.pdq_from_64(
            fast_hashing.pdq_64_of_luma(luma, full_size, reduced.scale, reversed_)
        )
        phash, margin = fast_hashing.phash_of_luma(luma, full_size, reduced.scale, reversed_)
        if margin < PHASH_FAST_MIN_MARGIN:
            phash = phash_of_full_decode(data, max_bytes=max_bytes)
        band = band_of_luma(luma, full_size[1], reduced.scale, reversed_[1])
    colour = colour_of(reduced.rgb)
    hashes = PhotoHashes(
        sha256=sha256_hex(data),
        pdq=pdq,
        pdq_quality=quality,
        phash=phash,
        width=reduced.width,
        height=reduced.height,
        # From the reduced decode: its area means are the full image's.
        colour=colour,
        band=band,
    )
    # The luminance: a YCbCr decode's Y plane.
    return hashes, luminance(reduced.rgb)


def luminance(image: Image.Image) -> Image.Image:
    """The luminance of a decode: a YCbCr decode's Y plane, else converted."""
    return image.getchannel(0) if image.mode == "YCbCr" else image.convert("L")


def band_of_luma(luma: npt.NDArray[np.float32], width: int, scale: int, reversed_: bool) -> str:
    """``band_of`` from the luma of a reduced decode: its middle rows, hashed
    with the filters of the full-size band (``fast_hashing``). No full-decode
    fallback for pHash: the band is matched with a margin of its own."""
    top, bottom = band_rows(luma.shape[0])
    rows = luma[top:bottom]
    size = (rows.shape[0] * scale, width)
    pdq, quality = fast_hashing.pdq_from_64(
        fast_hashing.pdq_64_of_luma(rows, size, scale, (False, reversed_))
    )
    phash, _margin = fast_hashing.phash_of_luma(rows, size, scale, (False, reversed_))
    return band_signature(pdq, phash, quality)


def hamming(a_hex: str, b_hex: str) -> int:
    """Number of differing bits between two equal-length hex hashes (either case)."""
    if len(a_hex) != len(b_hex):
        raise ValueError("hashes of different lengths")
    # int(…, 16) alone would also take "0x", "_", signs and spaces.
    if not (_HEX.fullmatch(a_hex) and _HEX.fullmatch(b_hex)):
        raise ValueError("hashes must be hexadecimal digits only")
    if not a_hex:
        return 0
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def is_hex(value: object, length: int) -> bool:
    """True for a string of exactly ``length`` lowercase hexadecimal digits."""
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdef" for c in value)
    )
