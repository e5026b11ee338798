"""The registry in memory, following registry versions without rebuilds.

``LiveIndex`` holds every photo and claim that is (or, for a version still
needed, was) covered by an opt-out, the opt-outs with the versions they were
filed and withdrawn at, and one exact index per hash kind (index.py). Changes
are applied as they come: photos and opt-outs are appended, withdrawals only
set a version, and ``retire(horizon)`` tombstones what no version from
``horizon`` on can match any more. ``view(version)`` answers decide()'s
questions (decide.MatchSource) exactly as the brute-force Snapshot of that
version would, for any version from the horizon up to the newest applied:

- a photo or claim counts at V when it was registered at or before V;
- an opt-out is active at V when filed at or before V and not withdrawn by V.

Ids are the registry's photo and claim keys. Pure (numpy), no Django; not safe
for concurrent writes and reads (the caller holds a lock, optout/engine.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from optout.matching.index import HammingIndex, SearchResult, Sha256Set, hex_words
from optout.matching.photo_table import PhotoTable
from optout.matching.rule import DEFAULT_RULE, QueryHashes, SearchPlan, VariantHashes
from optout.matching.snapshot import SnapshotOptOut
from optout.matching.urls import claim_hits, host_suffixes
from optout.matching.variants import (
    POSITION_BITS,
    blob_entries,
    blob_variant,
    photo_blob,
    variant_ids_of,
)

HASH_KINDS = ("sha256", "pdq", "phash")
# Compaction pays off once this share of the indexed entries are tombstones.
COMPACT_DEAD_SHARE = 0.25


@dataclass(frozen=True)
class LivePhoto:
    key: int
    creator: int
    registered_version: int
    sha256: str
    pdq: str = ""
    phash: str = ""
    pdq_quality: int | None = None
    # The derived variants, packed as in Photo.variants (registry.variants).
    variants: bytes = b""
    # Colour signatures (registry.colour): the photo's (66 hex digits) and its
    # derived variants' (33 bytes each, as in Photo.variant_colours); empty
    # when not known.
    colour: str = ""
    variant_colours: bytes = b""


@dataclass(frozen=True)
class LiveClaim:
    key: int
    creator: int
    kind: str  # "domain" | "url_prefix" | "handle"
    value: str  # normalised
    registered_version: int


@dataclass(frozen=True)
class LiveOptOut:
    opt_out: SnapshotOptOut
    filed_version: int
    withdrawn_version: int | None = None


@dataclass(frozen=True)
class Retired:
    opt_outs: int
    photos: int
    claims: int


class LiveIndex:
    def __init__(self) -> None:
        # photo key -> (creator, registered version), in numpy columns
        self.photos = PhotoTable()
        self.claims: dict[int, LiveClaim] = {}
        self.claims_of_creator: dict[int, set[int]] = defaultdict(set)
        self.claim_values: dict[str, dict[int, str]] = defaultdict(dict)
        # Domain claims by domain: a URL's host is looked up by its suffixes
        # instead of being compared with every claimed domain.
        self.claims_of_domain: dict[str, set[int]] = defaultdict(set)
        self.opt_outs: dict[int, SnapshotOptOut] = {}
        self.filed: dict[int, int] = {}
        self.withdrawn: dict[int, int] = {}
        self.all_photos_of_creator: dict[int, list[int]] = defaultdict(list)
        self.opt_outs_of_photo: dict[int, list[int]] = defaultdict(list)
        self.opt_outs_of_claim: dict[int, list[int]] = defaultdict(list)
        self.sha256 = Sha256Set()
        # The photo itself by PDQ and by pHash; every other variant by pHash,
        # and the mirror image by PDQ too, for PDQ-only records
        # (optout/matching/variants.py). Index ids pack the photo key and the
        # variant's position in its blob. Each index's layout is planned for
        # the radius the rule searches it at.
        plan = DEFAULT_RULE.search_plan()
        self.pdq = HammingIndex(256, radius=max(plan.primary_pdq or 0, plan.pdq_only or 0, 1))
        self.phash = HammingIndex(64, radius=max(plan.primary_phash, 1))
        self.phash_derived = HammingIndex(64, radius=max(plan.derived_phash or 0, 1))
        # The middle band of each photo, searched with a record's band pHash.
        self.phash_band = HammingIndex(64, radius=max(plan.band_phash or 0, 1))
        self.pdq_single = HammingIndex(256, radius=max(plan.pdq_only or 0, 1))
        self.blobs: dict[int, bytes] = {}
        # The registered keypoints of photos by key (decide.MatchSource.
        # photo_keypoints), read where they are kept (the engine: the
        # database) rather than held in memory; None: not known.
        self.keypoints_source: Callable[[Sequence[int]], Mapping[int, bytes]] | None = None

    # --- applying changes ---------------------------------------------------------

    def opt_outs_add(self, items: Iterable[LiveOptOut]) -> None:
        """Opt-outs new to the index (one already held is left as it is)."""
        for item in items:
            opt_out = item.opt_out
            if opt_out.key in self.opt_outs:
                continue
            self.opt_outs[opt_out.key] = opt_out
            self.filed[opt_out.key] = item.filed_version
            if item.withdrawn_version is not None:
                self.withdrawn[opt_out.key] = item.withdrawn_version
            if opt_out.scope == "all_photos":
                self.all_photos_of_creator[opt_out.creator].append(opt_out.key)
            for photo in opt_out.photos:
                self.opt_outs_of_photo[photo].append(opt_out.key)
            for claim in opt_out.claims:
                self.opt_outs_of_claim[claim].append(opt_out.key)

    def withdraw(self, opt_out: int, version: int) -> None:
        """Record a withdrawal; the opt-out stays for the versions before it."""
        if opt_out in self.opt_outs:
            self.withdrawn[opt_out] = version

    def photos_add(self, photos: Sequence[LivePhoto]) -> int:
        """Append photos not yet held, one segment per hash kind; how many were new."""
        if not photos:
            return 0
        columns = np.asarray(
            [(p.key, p.creator, p.registered_version) for p in photos], dtype=np.int64
        )
        fresh = self.photos.update(columns[:, 0], columns[:, 1], columns[:, 2])
        new = [photo for photo, keep in zip(photos, fresh.tolist(), strict=True) if keep]
        if not new:
            return 0
        self.sha256.add([p.sha256 for p in new], [p.key for p in new])
        blobs = [
            photo_blob(p.pdq, p.phash, p.pdq_quality, p.variants, p.colour, p.variant_colours)
            for p in new
        ]
        keys = [p.key for p in new]
        self.blobs.update(zip(keys, blobs, strict=True))
        entries = blob_entries(keys, blobs)
        for group, index in self._variant_indexes():
            codes, ids = entries[group].arrays(index.words)
            index.add(codes, ids)
        return len(new)

    def _variant_indexes(self) -> tuple[tuple[tuple[str, str], HammingIndex], ...]:
        return (
            (("primary", "pdq"), self.pdq),
            (("primary", "phash"), self.phash),
            (("derived", "phash"), self.phash_derived),
            (("band", "phash"), self.phash_band),
            (("single", "pdq"), self.pdq_single),
        )

    def photos_remove(self, keys: Iterable[int]) -> int:
        """Tombstone photos (in every index) and forget them; how many were held."""
        gone = [key for key in set(keys) if self.photos.remove(key) is not None]
        if gone:
            ids = np.asarray(gone, dtype=np.int64)
            self.sha256.remove(ids)
            variant_ids = variant_ids_of(ids)
            for _, index in self._variant_indexes():
                index.remove(variant_ids)
            for key in gone:
                del self.blobs[key]
        return len(gone)

    def claims_add(self, claims: Iterable[LiveClaim]) -> int:
        added = 0
        for claim in claims:
            if claim.key not in self.claims:
                self.claims[claim.key] = claim
                self.claims_of_creator[claim.creator].add(claim.key)
                self.claim_values[claim.kind][claim.key] = claim.value
                if claim.kind == "domain":
                    self.claims_of_domain[claim.value].add(claim.key)
                added += 1
        return added

    def claims_remove(self, keys: Iterable[int]) -> int:
        removed = 0
        for key in set(keys):
            claim = self.claims.pop(key, None)
            if claim is not None:
                self.claims_of_creator[claim.creator].discard(key)
                del self.claim_values[claim.kind][key]
                if claim.kind == "domain":
                    self.claims_of_domain[claim.value].discard(key)
                    if not self.claims_of_domain[claim.value]:
                        del self.claims_of_domain[claim.value]
                removed += 1
        return removed

    def _photo_covered(self, photo: int) -> bool:
        held = self.photos.get(photo)
        assert held is not None
        return bool(self.all_photos_of_creator.get(held[0]) or self.opt_outs_of_photo.get(photo))

    def retire(self, horizon: int) -> Retired:
        """Drop the opt-outs withdrawn at or before ``horizon`` (inactive at every
        version from ``horizon`` on) and tombstone the photos and claims nothing
        else covers. Views of versions before ``horizon`` are inexact afterwards."""
        ended = [key for key, version in self.withdrawn.items() if version <= horizon]
        photos: set[int] = set()
        claims: set[int] = set()
        for key in ended:
            opt_out = self.opt_outs.pop(key)
            del self.filed[key], self.withdrawn[key]
            if opt_out.scope == "all_photos":
                _discard(self.all_photos_of_creator, opt_out.creator, key)
                photos |= self.photos.of_creator(opt_out.creator)
            for photo in opt_out.photos:
                _discard(self.opt_outs_of_photo, photo, key)
                photos.add(photo)
            for claim in opt_out.claims:
                _discard(self.opt_outs_of_claim, claim, key)
                claims.add(claim)
        removed_photos = self.photos_remove(
            p for p in photos if p in self.photos and not self._photo_covered(p)
        )
        removed_claims = self.claims_remove(
            c for c in claims if c in self.claims and not self.opt_outs_of_claim.get(c)
        )
        return Retired(len(ended), removed_photos, removed_claims)

    def compact(self) -> None:
        """Rebuild every index from its live entries (the only full rebuild)."""
        for index in self._indexes():
            index.compact()
        self.photos.compact()

    def _indexes(self) -> tuple[Sha256Set | HammingIndex, ...]:
        return (
            self.sha256,
            self.pdq,
            self.phash,
            self.phash_derived,
            self.phash_band,
            self.pdq_single,
        )

    def dead_share(self) -> float:
        """Share of indexed entries that are tombstones."""
        total = sum(sum(i.segment_sizes) for i in self._indexes())
        live = sum(len(i) for i in self._indexes())
        return (total - live) / total if total else 0.0

    # --- reading ---------------------------------------------------------------------

    def creators_with_all_photos(self) -> set[int]:
        return {creator for creator, keys in self.all_photos_of_creator.items() if keys}

    def sizes(self) -> dict[str, int]:
        """Live entries per hash kind (pHash: every variant's; PDQ: the photo's
        and its mirror image's)."""
        return {
            "sha256": len(self.sha256),
            "pdq": len(self.pdq) + len(self.pdq_single),
            "phash": len(self.phash) + len(self.phash_derived) + len(self.phash_band),
        }

    def view(self, version: int) -> LiveView:
        return LiveView(self, version)


def _discard(mapping: dict[int, list[int]], key: int, value: int) -> None:
    values = mapping.get(key)
    if values is not None and value in values:
        values.remove(value)
        if not values:
            del mapping[key]


class LiveView:
    """The live index as of one registry version (decide.MatchSource)."""

    def __init__(self, index: LiveIndex, version: int) -> None:
        self.index = index
        self.version = version

    def _active(self, key: int) -> bool:
        withdrawn = self.index.withdrawn.get(key)
        return self.index.filed[key] <= self.version and (
            withdrawn is None or withdrawn > self.version
        )

    def sha256_photos(self, digests: Sequence[str]) -> list[list[int]]:
        if len(self.index.sha256) == 0:
            return [[] for _ in digests]
        return [ids.tolist() for ids in self.index.sha256.lookup_many(digests)]

    def variant_candidates(
        self, queries: Sequence[QueryHashes], plan: SearchPlan
    ) -> list[list[tuple[int, VariantHashes]]]:
        found: list[set[int]] = [set() for _ in queries]
        both = [i for i, q in enumerate(queries) if q.pdq and q.phash]
        pdq_only = [i for i, q in enumerate(queries) if q.pdq and not q.phash]
        phash_only = [i for i, q in enumerate(queries) if q.phash and not q.pdq]
        band = [i for i, q in enumerate(queries) if q.band]
        searches = (
            (self.index.phash, "phash", both, plan.primary_phash),
            (self.index.pdq, "pdq", both, plan.primary_pdq),
            (self.index.phash_derived, "phash", both, plan.derived_phash),
            (self.index.pdq, "pdq", pdq_only, plan.pdq_only),
            (self.index.pdq_single, "pdq", pdq_only, plan.pdq_only),
            (self.index.phash, "phash", phash_only, plan.phash_only),
            (self.index.phash_band, "band_phash", band, plan.band_phash),
        )
        for index, kind, rows, radius in searches:
            if not rows or radius is None or radius < 0 or len(index) == 0:
                continue
            values = [getattr(queries[i], kind) for i in rows]
            result: SearchResult = index.search(hex_words(values, index.words), radius)
            for row, (lo, hi) in zip(
                rows,
                zip(result.offsets[:-1].tolist(), result.offsets[1:].tolist(), strict=True),
                strict=True,
            ):
                if hi > lo:
                    found[row].update(result.ids[lo:hi].tolist())
        mask = (1 << POSITION_BITS) - 1
        blobs = self.index.blobs
        return [
            [
                (ident >> POSITION_BITS, blob_variant(blobs[ident >> POSITION_BITS], ident & mask))
                for ident in sorted(ids)
            ]
            for ids in found
        ]

    def photo_keypoints(self, photos: Sequence[int]) -> Mapping[int, bytes]:
        source = self.index.keypoints_source
        return source(photos) if source is not None else {}

    def opt_outs_of_photo(self, photo: int) -> list[SnapshotOptOut]:
        held = self.index.photos.get(photo)
        if held is None or held[1] > self.version:
            return []
        creator = held[0]
        keys = self.index.all_photos_of_creator.get(creator, []) + self.index.opt_outs_of_photo.get(
            photo, []
        )
        return [self.index.opt_outs[key] for key in keys if self._active(key)]

    def claim_hits(self, url: str) -> Iterator[tuple[int, str]]:
        for domain in host_suffixes(url):
            for claim in self.index.claims_of_domain.get(domain, ()):
                yield claim, "domain"
        others = {
            kind: values.items()
            for kind, values in self.index.claim_values.items()
            if kind != "domain" and values
        }
        if others:
            yield from claim_hits(url, others)

    def opt_outs_of_claim(self, claim: int) -> list[SnapshotOptOut]:
        held = self.index.claims.get(claim)
        if held is None or held.registered_version > self.version:
            return []
        keys = self.index.opt_outs_of_claim.get(claim, [])
        return [self.index.opt_outs[key] for key in keys if self._active(key)]
