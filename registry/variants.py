"""Variant hashes: the extra hashes a photo is registered with so that edited
reposts of it still match. Pure: no Django, nothing written anywhere.

A repost is often mirrored or cropped, and PDQ and pHash both change a lot
under either edit (a 10 % crop or a mirror moves PDQ by 60-130 bits). Pipelines
usually send only hashes, so the robustness has to come from the registration
side: each photo is registered with the hashes of a few derived images — its
mirror image, its dihedral transforms, a grid of crops — and a record matches
the photo when it matches any of them under the decision rule
(``optout.matching.rule``), which knows each variant's kind.

Every variant multiplies the chance of a false match (docs/matching.md,
"Precision"), so the set is as small as the measurements allow
(``benchmarks/bench_robust.py``, ``benchmarks/bench_precision.py``).

Derived variants are computed on a working copy whose longest side is at most
``WORK_SIDE`` pixels (Lanczos): a crop of a 24-megapixel photo hashes in
milliseconds, and PDQ of a 512 px copy stays within about 20 bits of the
full-size hash (pHash within 2). The ``original`` variant is the photo's own
hashes, computed on the image as given, so it is exactly what
``registry.hashing.hash_bytes`` returns.

Each variant also carries the colour signature (``registry.colour``) of its
derived image, computed like the photo's (``registry.hashing.colour_of``). A
photo stores its variants' colours apart from their hashes
(``Photo.variant_colours``, ``colours_pack``), because variants registered
before colour signatures, or as hashes without them, have none.

The ``mirror`` variant also carries the keypoints (``registry.keypoints``) of
the mirror image, in their text form: with the photo's own
(``PhotoHashes.keypoints``) they make what ``Photo.keypoints`` stores
(``photo_keypoints``). No other variant has keypoints: one similarity
transform already covers a crop or a small rotation of the photo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from registry import fast_hashing, keypoints
from registry.colour import COLOUR_BYTES, COLOUR_HEX_LENGTH
from registry.hashing import (
    BAND_MARGIN,
    MAX_BYTES,
    PDQ_HEX_LENGTH,
    PHASH_HEX_LENGTH,
    PhotoHashes,
    band_of,
    colour_of,
    decode,
    hash_bytes_fast_deferred,
    is_hex,
    pdq_of,
    phash_of,
    sha256_hex,
)

# Longest side of the working copy the derived variants are computed on.
WORK_SIDE = 512

Transform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Variant:
    """The hashes of one derived image of a photo."""

    name: str
    pdq: str
    pdq_quality: int
    phash: str
    # registry.colour.colour_signature of the derived image; "" when unknown
    # (variants stored before colour signatures).
    colour: str = ""
    # registry.keypoints of the derived image, base64 (keypoints.to_text); the
    # mirror variant's only (KEYPOINTS_VARIANT), "" when unknown. Not stored
    # with the variants: Photo.keypoints holds it (photo_keypoints).
    keypoints: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`optout hash`); ``keypoints`` only when known, so
        that the variants without keypoints are written as before."""
        data = asdict(self)
        if not self.keypoints:
            del data["keypoints"]
        return data


def _transpose(method: Image.Transpose) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        return image.transpose(method)

    return apply


def _crop(left: float, top: float, right: float, bottom: float) -> Transform:
    """Cut the given fractions of the width/height off each edge."""

    def apply(image: Image.Image) -> Image.Image:
        width, height = image.size
        box = (
            round(width * left),
            round(height * top),
            width - round(width * right),
            height - round(height * bottom),
        )
        return image.crop(box)

    return apply


def _mirrored(transform: Transform) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        return transform(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    return apply


def _rotate(degrees: float) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        return image.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))

    return apply


# The eight symmetries of the square (PDQ's "dihedral" hashes): the identity,
# the mirror image (left-right), and six that turn or flip the picture over.
DIHEDRAL: dict[str, Transform] = {
    "mirror": _transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip_vertical": _transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "rotate_90": _transpose(Image.Transpose.ROTATE_90),
    "rotate_180": _transpose(Image.Transpose.ROTATE_180),
    "rotate_270": _transpose(Image.Transpose.ROTATE_270),
    "transpose": _transpose(Image.Transpose.TRANSPOSE),
    "transverse": _transpose(Image.Transpose.TRANSVERSE),
}

# Crop grid: (left, top, right, bottom) fractions cut off. ``crop_centre_90``
# keeps the centred 90 % of each side; ``crop_top_left_95`` keeps the 95 % of
# each side anchored at the top-left corner (5 % cut off the right and bottom).
_CROP_BOXES: dict[str, tuple[float, float, float, float]] = {
    "crop_centre_95": (0.025, 0.025, 0.025, 0.025),
    "crop_centre_90": (0.05, 0.05, 0.05, 0.05),
    "crop_centre_80": (0.10, 0.10, 0.10, 0.10),
}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
for _keep in (95, 90):
    _cut = (100 - _keep) / 100
    _CROP_BOXES[f"crop_top_left_{_keep}"] = (0.0, 0.0, _cut, _cut)
    _CROP_BOXES[f"crop_top_right_{_keep}"] = (_cut, 0.0, 0.0, _cut)
    _CROP_BOXES[f"crop_bottom_left_{_keep}"] = (0.0, _cut, _cut, 0.0)
    _CROP_BOXES[f"crop_bottom_right_{_keep}"] = (_cut, _cut, 0.0, 0.0)

CROPS: dict[str, Transform] = {name: _crop(*box) for name, box in _CROP_BOXES.items()}

# Every transform a variant can be made with. A crop's mirror image is
# ``<crop>_mirror``: a mirrored and cropped repost.
TRANSFORMS: dict[str, Transform] = {
    **DIHEDRAL,
    **CROPS,
    **{f"{name}_mirror": _mirrored(transform) for name, transform in CROPS.items()},
    "rotate_+2": _rotate(2),
    "rotate_-2": _rotate(-2),
    # The middle band (registry.hashing.band_of): a captioned repost's band
    # hashes (a record's ``band``) are matched against it.
    "band": _crop(0.0, BAND_MARGIN, 0.0, BAND_MARGIN),
}

ORIGINAL = "original"
DIHEDRAL_NAMES = (ORIGINAL, *DIHEDRAL)

# The variants every photo is registered with (chosen by measurement:
# docs/matching.md, "Robust matching"). The six turned or flipped-over dihedral
# variants are not registered: those edits are rare, and every variant costs
# precision and index size.
DEFAULT_VARIANTS: tuple[str, ...] = (
    ORIGINAL,
    "mirror",
    "crop_centre_95",
    "crop_centre_95_mirror",
    "crop_centre_90",
    "crop_centre_90_mirror",
    *(f"crop_{corner}_{keep}" for keep in (95, 90) for corner in CORNERS),
    "rotate_+2",
    "rotate_-2",
    "band",
)


# Stable one-byte codes for stored variants (``variants_pack``): never reorder,
# only append. 0 is the photo itself.
VARIANT_CODES: dict[str, int] = {name: code for code, name in enumerate((ORIGINAL, *TRANSFORMS))}
VARIANT_NAMES: dict[int, str] = {code: name for name, code in VARIANT_CODES.items()}
# One packed variant: code (1 byte), PDQ quality (1), pHash (8), PDQ (32).
PACKED_SIZE = 42


def variants_pack(items: list[Variant]) -> bytes:
    """Variants as bytes for storage (``Photo.variants``): 42 bytes each."""
    out = bytearray()
    for item in items:
        if item.name not in VARIANT_CODES:
            raise ValueError(f"unknown variant {item.name!r}")
        if not 0 <= item.pdq_quality <= 100:
            raise ValueError("pdq_quality must be between 0 and 100")
        out += bytes((VARIANT_CODES[item.name], item.pdq_quality))
        out += bytes.fromhex(item.phash) + bytes.fromhex(item.pdq)
    if len(out) != PACKED_SIZE * len(items):
        raise ValueError("a variant hash has the wrong length")
    return bytes(out)


def variants_unpack(data: bytes) -> list[Variant]:
    """The inverse of ``variants_pack``."""
    if len(data) % PACKED_SIZE:
        raise ValueError("packed variants must be a multiple of 42 bytes")
    items = []
    for offset in range(0, len(data), PACKED_SIZE):
        row = data[offset : offset + PACKED_SIZE]
        items.append(
            Variant(
                name=VARIANT_NAMES[row[0]],
                pdq=row[10:42].hex(),
                pdq_quality=row[1],
                phash=row[2:10].hex(),
            )
        )
    return items


def colours_pack(items: list[Variant]) -> bytes:
    """The variants' colour signatures as bytes for storage
    (``Photo.variant_colours``): 33 bytes each, in the order of ``items``
    (the order ``variants_pack`` stores them in). Empty when any variant has
    no colour: the colours of a photo's variants are stored all or none."""
    if any(not item.colour for item in items):
        return b""
    out = bytearray()
    for item in items:
        if not is_hex(item.colour, COLOUR_HEX_LENGTH):
            raise ValueError(
                f"variant {item.name!r}: colour must be {COLOUR_HEX_LENGTH} "
                "lowercase hexadecimal digits"
            )
        out += bytes.fromhex(item.colour)
    return bytes(out)


def colours_unpack(data: bytes, items: list[Variant]) -> list[Variant]:
    """``items`` (``variants_unpack`` of the same photo) with the colours of
    ``colours_pack`` attached, position by position. Empty ``data`` leaves
    every colour "" (unknown)."""
    if not data:
        return list(items)
    if len(data) != COLOUR_BYTES * len(items):
        raise ValueError(
            f"packed colours are {len(data)} bytes; {len(items)} variants need "
            f"{COLOUR_BYTES * len(items)} ({COLOUR_BYTES} each)"
        )
    return [
        replace(
            item,
            colour=data[COLOUR_BYTES * i : COLOUR_BYTES * (i + 1)].hex(),
        )
        for i, item in enumerate(items)
    ]


def variant_kind(name: str) -> str:
    """The kind of a variant, which the decision rule sets thresholds by:
    ``original``, ``mirror``, ``dihedral`` (turned or flipped over), ``crop``
    (cropped, possibly mirrored), ``rotation`` (a small rotation) or ``band``
    (the middle band, matched by a record's band hashes only)."""
    if name in (ORIGINAL, "mirror", "band"):
        return name
    if name in DIHEDRAL:
        return "dihedral"
    if name.startswith("crop_"):
        return "crop"
    if name.startswith("rotate_"):
        return "rotation"
    raise ValueError(f"unknown variant {name!r}")


def working_copy(rgb: Image.Image, side: int = WORK_SIDE) -> Image.Image:
    """The image with its longest side at most ``side`` pixels (Lanczos)."""
    scale = side / max(rgb.size)
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS)


def variant_image(rgb: Image.Image, name: str) -> Image.Image:
    """The derived image a variant hashes: the photo itself for ``original``,
    otherwise the transform applied to the working copy."""
    if name == ORIGINAL:
        return rgb
    if name not in TRANSFORMS:
        raise ValueError(f"unknown variant {name!r}")
    return TRANSFORMS[name](working_copy(rgb))


def _hashes(name: str, image: Image.Image) -> Variant:
    if name == ORIGINAL:
        pdq, quality = pdq_of(image)  # the photo's own: pdqhash, the reference
    else:
        # PDQ in numpy: bit for bit pdqhash's on every variant image of the
        # recall set (1 500 images) and 2.4 x faster on a 512 px working copy.
        pdq, quality = fast_hashing.pdq_of_reduced(np.asarray(image), (image.height, image.width))
    return Variant(
        name=name, pdq=pdq, pdq_quality=quality, phash=phash_of(image), colour=colour_of(image)
    )


def variants_compute(rgb: Image.Image, names: tuple[str, ...] = DEFAULT_VARIANTS) -> list[Variant]:
    """The variant hashes of an upright RGB photo (``registry.hashing.decode``),
    in the order of ``names``. Deterministic: the same pixels give the same list."""
    unknown = [name for name in names if name != ORIGINAL and name not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}")
    work = working_copy(rgb)
    return [_hashes(name, rgb if name == ORIGINAL else TRANSFORMS[name](work)) for name in names]


# --- registering photos with their variants ---------------------------------

# The variants stored with a photo (``Photo.variants``): every default variant
# but the original, whose hashes are the photo's own pdq, pdq_quality and phash.
DERIVED_VARIANTS: tuple[str, ...] = tuple(name for name in DEFAULT_VARIANTS if name != ORIGINAL)


def hash_bytes_with_variants(
    data: bytes, *, max_bytes: int = MAX_BYTES, fast: bool = False
) -> tuple[PhotoHashes, list[Variant]]:
    """A photo's hashes (``registry.hashing.hash_bytes``) and its derived
    variants (``DERIVED_VARIANTS``), from one full decode of the bytes.
    Raises ImageRejected like ``hash_bytes``.

    ``fast``: the photo's own hashes come from ``hash_bytes(fast=True)``; the
    variants and the keypoints still come from the full decode (they need the
    real pixels), so this is about twice as fast as the exact path, not five
    times.

    The mirror variant carries the mirror image's keypoints
    (``photo_keypoints`` joins them to the photo's own).
    """
    rgb = decode(data, max_bytes=max_bytes)
    # The luminance once, for the keypoints of the photo and of its mirror
    # image: together, what keypoints.photo_keypoints_of(rgb) gives, on every
    # path (a registered photo's keypoints are those of its full decode).
    grey = rgb.convert("L")
    own = keypoints.to_text(keypoints.keypoints_of(grey))
    mirror = keypoints.to_text(keypoints.keypoints_of(ImageOps.mirror(grey)))
    if fast:
        # A photo being registered keeps the keypoints of its full decode.
        fast_hashes, _ = hash_bytes_fast_deferred(data, max_bytes=max_bytes)
        hashes = replace(fast_hashes, keypoints=own)
        return hashes, _with_keypoints(variants_compute(rgb, DERIVED_VARIANTS), mirror)
    original, *derived = variants_compute(rgb, (ORIGINAL, *DERIVED_VARIANTS))
    hashes = PhotoHashes(
        sha256=sha256_hex(data),
        pdq=original.pdq,
        pdq_quality=original.pdq_quality,
        phash=original.phash,
        width=rgb.width,
        height=rgb.height,
        colour=original.colour,
        band=band_of(rgb),
        keypoints=own,
    )
    return hashes, _with_keypoints(derived, mirror)


# The one variant that carries keypoints: the descriptors are not
# mirror-symmetric, so a mirrored repost needs the mirror image's own.
KEYPOINTS_VARIANT = "mirror"


def _with_keypoints(derived: list[Variant], mirror: str) -> list[Variant]:
    return [
        replace(item, keypoints=mirror) if item.name == KEYPOINTS_VARIANT else item
        for item in derived
    ]


def keypoints_dropped(derived: Sequence[Variant]) -> tuple[Variant, ...]:
    """``derived`` without their keypoints: once ``photo_keypoints`` has joined
    them to the photo's own, a second copy (about 5.8 KB a photo) is not kept."""
    return tuple(replace(item, keypoints="") if item.keypoints else item for item in derived)


def photo_keypoints(own: str, derived: Sequence[Variant]) -> bytes:
    """What ``Photo.keypoints`` stores: the photo's own keypoints (base64, one
    set, ``PhotoHashes.keypoints``) and the mirror variant's, decoded — two
    sets, one when only the photo's own are known, b"" when they are not.
    Raises ValueError (``keypoints.KeypointsInvalid``) naming the problem: a
    set that is not what ``optout hash`` writes, or the mirror's without the
    photo's own (a registered photo's first set is always its own)."""
    mirror = next((item.keypoints for item in derived if item.name == KEYPOINTS_VARIANT), "")
    if not own:
        if mirror:
            raise ValueError(
                f"variants ({KEYPOINTS_VARIANT}): keypoints need the photo's own "
                "keypoints (the keypoints key) next to them"
            )
        return b""
    try:
        data = keypoints.from_text(own)
    except keypoints.KeypointsInvalid as error:
        raise keypoints.KeypointsInvalid(f"keypoints: {error}") from None
    if mirror:
        try:
            data += keypoints.from_text(mirror)
        except keypoints.KeypointsInvalid as error:
            raise keypoints.KeypointsInvalid(
                f"variants ({KEYPOINTS_VARIANT}): keypoints: {error}"
            ) from None
    return data


def variants_parse(value: object) -> list[Variant]:
    """Validate a JSON list of derived variants (``optout hash`` output, an API
    item's ``variants``): objects with ``name`` (one of ``DERIVED_VARIANTS``,
    each at most once), ``pdq`` (64 hex digits), ``pdq_quality`` (0-100),
    ``phash`` (16 hex digits) and optionally ``colour`` (66 hex digits, the
    ``registry.colour`` signature; missing, null or "" is unknown) and, on the
    mirror variant only, ``keypoints`` (one set of ``registry.keypoints``,
    base64; missing, null or "" is unknown). ``None`` is no variants.
    Returned in the order of ``DERIVED_VARIANTS``; raises ValueError naming
    the first problem."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("variants must be a list of objects")
    parsed: dict[str, Variant] = {}
    for position, item in enumerate(value):
        where = f"variants[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        name = item.get("name")
        if name == ORIGINAL:
            raise ValueError(
                f"{where}: the original's hashes go in pdq, pdq_quality and phash, not in variants"
            )
        if not isinstance(name, str) or name not in DERIVED_VARIANTS:
            raise ValueError(
                f"{where}: unknown variant name {name!r}; use one of {', '.join(DERIVED_VARIANTS)}"
            )
        if name in parsed:
            raise ValueError(f"{where}: variant {name!r} appears more than once")
        pdq, phash = item.get("pdq"), item.get("phash")
        if not isinstance(pdq, str) or not is_hex(pdq.lower(), PDQ_HEX_LENGTH):
            raise ValueError(f"{where} ({name}): pdq must be {PDQ_HEX_LENGTH} hexadecimal digits")
        if not isinstance(phash, str) or not is_hex(phash.lower(), PHASH_HEX_LENGTH):
            raise ValueError(
                f"{where} ({name}): phash must be {PHASH_HEX_LENGTH} hexadecimal digits"
            )
        quality = item.get("pdq_quality")
        if not isinstance(quality, int) or isinstance(quality, bool) or not 0 <= quality <= 100:
            raise ValueError(f"{where} ({name}): pdq_quality must be a whole number from 0 to 100")
        colour = item.get("colour")
        if colour is None:
            colour = ""
        if not isinstance(colour, str) or (
            colour and not is_hex(colour.lower(), COLOUR_HEX_LENGTH)
        ):
            raise ValueError(
                f"{where} ({name}): colour must be {COLOUR_HEX_LENGTH} hexadecimal digits"
            )
        parsed[name] = Variant(
            name=name,
            pdq=pdq.lower(),
            pdq_quality=quality,
            phash=phash.lower(),
            colour=colour.lower(),
            keypoints=_keypoints_parse(item.get("keypoints"), name, where),
        )
    return [parsed[name] for name in DERIVED_VARIANTS if name in parsed]


def _keypoints_parse(value: object, name: str, where: str) -> str:
    """A variant's ``keypoints``, checked (``keypoints.from_text``: one set)."""
    if value is None or value == "":
        return ""
    if name != KEYPOINTS_VARIANT:
        raise ValueError(
            f"{where} ({name}): keypoints are kept for the {KEYPOINTS_VARIANT} variant only"
        )
    if not isinstance(value, str):
        raise ValueError(f"{where} ({name}): {keypoints.NOT_TEXT}")
    text = value.strip()
    try:
        keypoints.from_text(text)
    except keypoints.KeypointsInvalid as error:
        raise ValueError(f"{where} ({name}): keypoints: {error}") from None
    return text
