"""The registry as the decision engine sees it at one registry version, searched
by brute force: the reference the live index (live.py) is tested against."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from optout.matching.urls import claim_hits
from optout.uses import refused_closure


@dataclass(frozen=True)
class SnapshotPhoto:
    key: int
    creator: int
    sha256: str
    pdq: str = ""
    pdq_quality: int | None = None
    phash: str = ""


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
        pdq_rows: list[int] = []
        phash_rows: list[int] = []
        for index, photo in enumerate(self.photos):
            self.sha256[photo.sha256].append(index)
            if photo.pdq:
                pdq_rows.append(index)
            if photo.phash:
                phash_rows.append(index)
        self.pdq_rows = np.asarray(pdq_rows, dtype=np.int64)
        self.pdq_codes = hex_to_words([self.photos[i].pdq for i in pdq_rows], 4)
        self.phash_rows = np.asarray(phash_rows, dtype=np.int64)
        self.phash_codes = hex_to_words([self.photos[i].phash for i in phash_rows], 1)

        self.claims_by_kind: dict[str, list[int]] = defaultdict(list)
        for index, claim in enumerate(self.claims):
            self.claims_by_kind[claim.kind].append(index)
        self._claim_values: dict[str, list[tuple[int, str]]] = {
            kind: [(index, self.claims[index].value) for index in indexes]
            for kind, indexes in self.claims_by_kind.items()
        }

    def within(self, kind: str, value: str, threshold: int) -> list[tuple[int, int]]:
        """Photos (index, distance) whose ``kind`` hash is within ``threshold`` bits.

        Brute force over every covered photo: exact by construction. The live
        index (live.py) answers the same with multi-index hashing."""
        codes, rows, words = (
            (self.pdq_codes, self.pdq_rows, 4)
            if kind == "pdq"
            else (self.phash_codes, self.phash_rows, 1)
        )
        if len(rows) == 0:
            return []
        query = hex_to_words([value], words)[0]
        distances = np.bitwise_count(codes ^ query).sum(axis=1)
        hits = np.nonzero(distances <= threshold)[0]
        return [(int(rows[i]), int(distances[i])) for i in hits]

    # --- decide.MatchSource ------------------------------------------------------

    def sha256_photos(self, digests: Sequence[str]) -> list[list[int]]:
        return [list(self.sha256.get(digest, ())) for digest in digests]

    def within_many(
        self, kind: str, values: Sequence[str], threshold: int
    ) -> list[list[tuple[int, int]]]:
        return [self.within(kind, value, threshold) for value in values]

    def opt_outs_of_photo(self, photo: int) -> list[SnapshotOptOut]:
        return self.photo_opt_outs[photo]

    def claim_hits(self, url: str) -> Iterator[tuple[int, str]]:
        return claim_hits(url, self._claim_values)

    def opt_outs_of_claim(self, claim: int) -> list[SnapshotOptOut]:
        return self.claim_opt_outs[claim]
