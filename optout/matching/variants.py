"""A registered photo's variants as the matching engine holds them.

Every photo is registered with its own hashes (the ``original`` variant) and,
when they are known, the hashes of derived images (``registry.variants``: the
mirror image, crops, small rotations), stored packed in ``Photo.variants``.
The engine keeps one compact byte string per photo (``photo_blob``) and gives
each variant an index id that packs the photo key and the variant's position
(``variant_id``), so a hit in any hash index leads straight back to the photo
and to the variant's other hash for confirmation (``blob_variant``). When the
photo's colour signatures are known (``Photo.colour``, ``Photo.variant_colours``)
the blob ends with them, raw (33 bytes a variant), for the rule's colour check.

Pure: no Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from optout.matching.rule import BAND_KINDS, PDQ_INDEXED_KINDS, PRIMARY_KINDS, VariantHashes
from registry.colour import COLOUR_BYTES, COLOUR_HEX_LENGTH
from registry.variants import (
    ORIGINAL,
    PACKED_SIZE,
    VARIANT_NAMES,
    Variant,
    variant_kind,
    variants_pack,
    variants_unpack,
)

# Index id of a variant: photo key << POSITION_BITS | position (0 = original).
POSITION_BITS = 6
MAX_POSITIONS = 1 << POSITION_BITS
# The blob's first byte says which of the original's hashes are known, and
# whose colour signatures (the original's, the derived variants') the blob holds.
_HAS_PDQ, _HAS_PHASH, _HAS_COLOUR, _HAS_DERIVED_COLOURS = 1, 2, 4, 8
_COLOURED = _HAS_COLOUR | _HAS_DERIVED_COLOURS
# A registered hash without a known PDQ quality is not held back by the quality
# gate (registrations made before qualities were recorded).
UNKNOWN_QUALITY = 100


def variant_id(key: int, position: int) -> int:
    return (key << POSITION_BITS) | position


def variant_ids_of(keys: np.ndarray) -> np.ndarray:
    """Every possible variant id of the photos ``keys`` (for tombstoning)."""
    keys = np.asarray(keys, dtype=np.int64).reshape(-1, 1)
    return ((keys << POSITION_BITS) | np.arange(MAX_POSITIONS, dtype=np.int64)).reshape(-1)


def photo_blob(
    pdq: str,
    phash: str,
    pdq_quality: int | None,
    derived: bytes,
    colour: str = "",
    derived_colours: bytes = b"",
) -> bytes:
    """The photo's variants in one byte string: a flags byte, the original
    packed by ``registry.variants.variants_pack`` (missing hashes as zeros),
    then the derived variants as stored in ``Photo.variants``; then, when any
    colour signature is known, one raw signature per variant in the same order
    (``colour`` of the original, ``derived_colours`` as stored in
    ``Photo.variant_colours``; an unknown one as zeros)."""
    if len(derived) % PACKED_SIZE or len(derived) // PACKED_SIZE >= MAX_POSITIONS:
        raise ValueError("malformed packed variants")
    count = len(derived) // PACKED_SIZE
    if derived_colours and len(derived_colours) != count * COLOUR_BYTES:
        raise ValueError("malformed packed variant colours")
    if colour and len(colour) != COLOUR_HEX_LENGTH:
        raise ValueError("malformed colour signature")
    flags = (
        (_HAS_PDQ if pdq else 0)
        | (_HAS_PHASH if phash else 0)
        | (_HAS_COLOUR if colour else 0)
        | (_HAS_DERIVED_COLOURS if derived_colours else 0)
    )
    original = Variant(
        name=ORIGINAL,
        pdq=pdq or "0" * 64,
        pdq_quality=UNKNOWN_QUALITY if pdq_quality is None else pdq_quality,
        phash=phash or "0" * 16,
    )
    blob = bytes((flags,)) + variants_pack([original]) + derived
    if flags & _COLOURED:
        blob += bytes.fromhex(colour) if colour else bytes(COLOUR_BYTES)
        blob += derived_colours or bytes(count * COLOUR_BYTES)
    return blob


def blob_size(blob: bytes) -> int:
    """How many variants (the original included) a blob holds."""
    return (len(blob) - 1) // (PACKED_SIZE + (COLOUR_BYTES if blob[0] & _COLOURED else 0))


def _blob_colour(blob: bytes, position: int) -> str:
    """The colour signature of the variant at ``position`` ("" when unknown)."""
    flags = blob[0]
    if not flags & (_HAS_COLOUR if position == 0 else _HAS_DERIVED_COLOURS):
        return ""
    offset = 1 + blob_size(blob) * PACKED_SIZE + position * COLOUR_BYTES
    return blob[offset : offset + COLOUR_BYTES].hex()


_kind = cache(variant_kind)


def blob_variant(blob: bytes, position: int) -> VariantHashes:
    """The variant at ``position`` (0: the original; a missing hash is "")."""
    offset = 1 + position * PACKED_SIZE
    [variant] = variants_unpack(blob[offset : offset + PACKED_SIZE])
    pdq, phash = variant.pdq, variant.phash
    if position == 0:
        flags = blob[0]
        pdq = pdq if flags & _HAS_PDQ else ""
        phash = phash if flags & _HAS_PHASH else ""
    return VariantHashes(
        name=variant.name,
        kind=_kind(variant.name),
        pdq=pdq,
        pdq_quality=variant.pdq_quality,
        phash=phash,
        colour=_blob_colour(blob, position),
    )


@cache
def _codes_of(kinds: frozenset[str]) -> np.ndarray:
    """The variant codes whose kind is one of ``kinds``."""
    return np.asarray(
        [code for code, name in VARIANT_NAMES.items() if _kind(name) in kinds], dtype=np.uint8
    )


@dataclass
class IndexEntries:
    """Hashes to index, as uint64 words (most significant first) with their ids."""

    codes: list[np.ndarray]
    ids: list[np.ndarray]

    def arrays(self, words: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.ids:
            return np.zeros((0, words), dtype=np.uint64), np.zeros(0, dtype=np.int64)
        return np.concatenate(self.codes), np.concatenate(self.ids)


def _words(columns: np.ndarray) -> np.ndarray:
    """(n, 8 * w) big-endian bytes as (n, w) uint64."""
    return np.ascontiguousarray(columns).view(">u8").astype(np.uint64)


def blob_entries(keys: list[int], blobs: list[bytes]) -> dict[tuple[str, str], IndexEntries]:
    """The index entries of many photos, by (group, hash kind): ("primary",
    "pdq") and ("primary", "phash") for the photo itself (``PRIMARY_KINDS``),
    ("derived", "phash") for every other variant but the middle band, ("band",
    "phash") for the middle band (``BAND_KINDS``: searched with a record's
    band hashes), ("single", "pdq") for the other variants a PDQ-only record
    may match (``PDQ_INDEXED_KINDS``: the mirror image). Vectorised over
    photos whose blobs have the same length."""
    out = {group: IndexEntries([], []) for group in _GROUPS}
    # Blobs of one length and with or without colours hold as many variants.
    by_length: dict[tuple[int, bool], list[int]] = {}
    for row, blob in enumerate(blobs):
        by_length.setdefault((len(blob), bool(blob[0] & _COLOURED)), []).append(row)
    primary_codes = _codes_of(PRIMARY_KINDS)
    single_codes = _codes_of(PDQ_INDEXED_KINDS - PRIMARY_KINDS)
    band_codes = _codes_of(BAND_KINDS)
    for (length, _), rows in by_length.items():
        table = np.frombuffer(b"".join(blobs[row] for row in rows), dtype=np.uint8)
        table = table.reshape(len(rows), length)
        photo_keys = np.asarray([keys[row] for row in rows], dtype=np.int64)
        flags = table[:, 0]
        for position in range(blob_size(blobs[rows[0]])):
            packed = table[:, 1 + position * PACKED_SIZE : 1 + (position + 1) * PACKED_SIZE]
            ids = (photo_keys << POSITION_BITS) | position
            primary = np.isin(packed[:, 0], primary_codes)
            band = np.isin(packed[:, 0], band_codes)
            has_pdq = np.ones(len(rows), dtype=bool)
            has_phash = np.ones(len(rows), dtype=bool)
            if position == 0:
                has_pdq = (flags & _HAS_PDQ) > 0
                has_phash = (flags & _HAS_PHASH) > 0
            phash = _words(packed[:, 2:10])
            pdq = _words(packed[:, 10:42])
            groups = (("primary", primary), ("derived", ~primary & ~band), ("band", band))
            for group, mask in groups:
                take = mask & has_phash
                if take.any():
                    out[(group, "phash")].codes.append(phash[take])
                    out[(group, "phash")].ids.append(ids[take])
            single = np.isin(packed[:, 0], single_codes)
            for group, mask in (("primary", primary), ("single", single)):
                take = mask & has_pdq
                if take.any():
                    out[(group, "pdq")].codes.append(pdq[take])
                    out[(group, "pdq")].ids.append(ids[take])
    return out


_GROUPS = (
    ("primary", "pdq"),
    ("primary", "phash"),
    ("derived", "phash"),
    ("band", "phash"),
    ("single", "pdq"),
)
