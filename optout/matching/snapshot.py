"""The registry as the decision engine sees it at one registry version, searched
by brute force: the reference the live index (live.py) is tested against."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from optout.matching.rule import (
    BAND_KINDS,
    DEFAULT_RULE,
    MatchRule,
    QueryHashes,
    SearchPlan,
    VariantHashes,
)
from optout.matching.urls import claim_hits
from optout.matching.variants import blob_size, blob_variant, photo_blob
from optout.uses import refused_closure


@dataclass(frozen=True)
class Bounds:
    """Distances no pair beyond can match under ``rule`` (or any stricter one),
    whatever the index layout: the brute-force prefilter."""

    pdq: int
    phash: int
    pdq_only: int
    phash_only: int

    @classmethod
    def of(cls, rule: MatchRule) -> Bounds:
        boxes = rule.all_boxes()
        return cls(
            pdq=max(box.pdq for box in boxes),
            phash=max(box.phash for box in boxes),
            pdq_only=max(rule.single_thresholds("pdq"), default=-1),
            phash_only=max(rule.single_thresholds("phash"), default=-1),
        )


@dataclass(frozen=True)
class SnapshotPhoto:
    key: int
    creator: int
    sha256: str
    pdq: str = ""
    pdq_quality: int | None = None
    phash: str = ""
    # The derived variants, packed as in Photo.variants (registry.variants).
    variants: bytes = b""
    # Colour signatures (registry.colour): the photo's (66 hex digits) and its
    # derived variants' (33 bytes each, as in Photo.variant_colours); empty
    # when not known.
    colour: str = ""
    variant_colours: bytes = b""
    # registry.keypoints of the photo and its mirror image; empty when not known.
    keypoints: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class SnapshotClaim:
    key: int
    creator: int
    kind: str  # "domain" | "url_prefix" | "handle"
    value: str  # normalised (registry.claims)


@dataclass(frozen=True)
class SnapshotOptOut:
    key: int
    public_id: str
    creator: int
    uses: tuple[str, ...]
    scope: str  # "all_photos" | "photos" | "claims"
    photos: frozenset[int] = frozenset()
    claims: frozenset[int] = frozenset()
    exceptions: frozenset[int] = frozenset()
    refused: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused", refused_closure(self.uses))


def hex_to_words(values: list[str], words: int) -> np.ndarray:
    """Hex hashes as an (n, words) array of uint64, most significant word first."""
    if not values:
        return np.zeros((0, words), dtype=np.uint64)
    raw = np.frombuffer(bytes.fromhex("".join(values)), dtype=">u8")
    return raw.astype(np.uint64).reshape(len(values), words)


class Snapshot:
    """Active opt-outs with the photos and claims they cover, indexed for lookup.

    Only photos and claims covered by at least one active opt-out are kept: the
    others cannot exclude anything.
    """

    def __init__(
        self,
        *,
        version: int,
        photos: Iterable[SnapshotPhoto],
        claims: Iterable[SnapshotClaim],
        opt_outs: Iterable[SnapshotOptOut],
    ) -> None:
        self.version = version
        self.opt_outs = list(opt_outs)
        all_photos_by_creator: dict[int, list[SnapshotOptOut]] = defaultdict(list)
        by_photo: dict[int, list[SnapshotOptOut]] = defaultdict(list)
        by_claim: dict[int, list[SnapshotOptOut]] = defaultdict(list)
        for opt_out in self.opt_outs:
            if opt_out.scope == "all_photos":
                all_photos_by_creator[opt_out.creator].append(opt_out)
            for photo_key in opt_out.photos:
                by_photo[photo_key].append(opt_out)
            for claim_key in opt_out.claims:
                by_claim[claim_key].append(opt_out)

        self.photos: list[SnapshotPhoto] = []
        self.photo_opt_outs: list[list[SnapshotOptOut]] = []
        for photo in photos:
            covering = all_photos_by_creator.get(photo.creator, []) + by_photo.get(photo.key, [])
            if covering:
                self.photos.append(photo)
                self.photo_opt_outs.append(covering)
        self.claims: list[SnapshotClaim] = []
        self.claim_opt_outs: list[list[SnapshotOptOut]] = []
        for claim in claims:
            covering = by_claim.get(claim.key, [])
            if covering:
                self.claims.append(claim)
                self.claim_opt_outs.append(covering)

        self.sha256: dict[str, list[int]] = defaultdict(list)
        # Every variant of every covered photo, flattened.
        rows: list[int] = []
        self.variants: list[VariantHashes] = []
        for index, photo in enumerate(self.photos):
            self.sha256[photo.sha256].append(index)
            blob = photo_blob(
                photo.pdq,
                photo.phash,
                photo.pdq_quality,
                photo.variants,
                photo.colour,
                photo.variant_colours,
            )
            for position in range(blob_size(blob)):
                rows.append(index)
                self.variants.append(blob_variant(blob, position))
        self.variant_rows = np.asarray(rows, dtype=np.int64)
        self.has_pdq = np.asarray([bool(v.pdq) for v in self.variants], dtype=bool)
        self.has_phash = np.asarray([bool(v.phash) for v in self.variants], dtype=bool)
        self.pdq_codes = hex_to_words([v.pdq or "0" * 64 for v in self.variants], 4)
        self.phash_codes = hex_to_words([v.phash or "0" * 16 for v in self.variants], 1)
        self.is_band = np.asarray([v.kind in BAND_KINDS for v in self.variants], dtype=bool)
        self.bounds = Bounds.of(DEFAULT_RULE)

        self.claims_by_kind: dict[str, list[int]] = defaultdict(list)
        for index, claim in enumerate(self.claims):
            self.claims_by_kind[claim.kind].append(index)
        self._claim_values: dict[str, list[tuple[int, str]]] = {
            kind: [(index, self.claims[index].value) for index in indexes]
            for kind, indexes in self.claims_by_kind.items()
        }

    @staticmethod
    def _distances(codes: np.ndarray, value: str) -> np.ndarray:
        """Hamming distance of the hex hash ``value`` to every row of ``codes``."""
        words = hex_to_words([value], codes.shape[1])[0]
        return np.bitwise_count(codes ^ words).sum(axis=1)

    def candidates(self, query: QueryHashes) -> list[tuple[int, VariantHashes]]:
        """(photo index, variant) of every variant within ``bounds`` of the
        record: brute force over every variant of every covered photo, exact by
        construction. The live index (live.py) finds a superset of the matches
        with multi-index hashing."""
        n = len(self.variants)
        if n == 0:
            return []
        pdq = np.full(n, 1 << 20, dtype=np.int64)
        phash = np.full(n, 1 << 20, dtype=np.int64)
        if query.pdq:
            pdq = np.where(self.has_pdq, self._distances(self.pdq_codes, query.pdq), pdq)
        if query.phash:
            phash = np.where(self.has_phash, self._distances(self.phash_codes, query.phash), phash)
        b = self.bounds
        both = (pdq <= b.pdq) & (phash <= b.phash)
        pdq_alone = (pdq <= b.pdq_only) & (phash >= 1 << 20)
        phash_alone = (phash <= b.phash_only) & (pdq >= 1 << 20)
        hit = both | pdq_alone | phash_alone
        if query.band:
            # The record's middle band against the band variants.
            band = query.band_hashes()
            band_pdq = self._distances(self.pdq_codes, band.pdq)
            band_phash = self._distances(self.phash_codes, band.phash)
            hit |= self.is_band & (band_pdq <= b.pdq) & (band_phash <= b.phash)
        hits = np.nonzero(hit)[0]
        return [(int(self.variant_rows[i]), self.variants[i]) for i in hits]

    # --- decide.MatchSource ------------------------------------------------------

    def sha256_photos(self, digests: Sequence[str]) -> list[list[int]]:
        return [list(self.sha256.get(digest, ())) for digest in digests]

    def variant_candidates(
        self, queries: Sequence[QueryHashes], plan: SearchPlan
    ) -> list[list[tuple[int, VariantHashes]]]:
        return [self.candidates(query) for query in queries]

    def photo_keypoints(self, photos: Sequence[int]) -> dict[int, bytes]:
        # This source's photo ids are positions in self.photos.
        return {row: self.photos[row].keypoints for row in photos if self.photos[row].keypoints}

    def opt_outs_of_photo(self, photo: int) -> list[SnapshotOptOut]:
        return self.photo_opt_outs[photo]

    def claim_hits(self, url: str) -> Iterator[tuple[int, str]]:
        return claim_hits(url, self._claim_values)

    def opt_outs_of_claim(self, claim: int) -> list[SnapshotOptOut]:
        return self.claim_opt_outs[claim]
