"""Deciding records: exclude when an active opt-out refusing the use covers a
matching photo or claim and the organization holds no exception from it.

``decide`` reads the registry through ``MatchSource``: the brute-force
``Snapshot`` (snapshot.py, the reference) and the live index's view at one
registry version (live.py) both provide it and give the same decisions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optout.matching.records import Invalid, Record
from optout.matching.snapshot import SnapshotOptOut
from optout.matching.thresholds import Thresholds


class MatchSource(Protocol):
    """The registry at one registry version, as decide() reads it. Photo and
    claim ids are the source's own; decide() only hands them back."""

    version: int

    def sha256_photos(self, digests: Sequence[str]) -> list[list[int]]:
        """Per digest, the photos registered with exactly that SHA-256."""
        ...

    def within_many(
        self, kind: str, values: Sequence[str], threshold: int
    ) -> list[list[tuple[int, int]]]:
        """Per hex hash, (photo, distance) of every ``kind`` hash within ``threshold`` bits."""
        ...

    def opt_outs_of_photo(self, photo: int) -> Sequence[SnapshotOptOut]:
        """The opt-outs covering the photo that are active at this version."""
        ...

    def claim_hits(self, url: str) -> Iterable[tuple[int, str]]:
        """(claim, claim kind) of every claim the normalised URL falls under."""
        ...

    def opt_outs_of_claim(self, claim: int) -> Sequence[SnapshotOptOut]:
        """The opt-outs covering the claim that are active at this version."""
        ...


@dataclass(frozen=True)
class Match:
    kind: str  # sha256 | pdq | phash | url_prefix | domain | handle
    distance: int
    threshold: int
    opt_out: str
    uses: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "distance": self.distance,
            "threshold": self.threshold,
            "opt_out": self.opt_out,
            "uses": list(self.uses),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        return cls(
            data["kind"], data["distance"], data["threshold"], data["opt_out"], tuple(data["uses"])
        )


@dataclass(frozen=True)
class Decision:
    id: str | None
    decision: str  # exclude | allow | invalid
    matches: tuple[Match, ...] = field(default_factory=tuple)
    reason: str = ""
    row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "decision": self.decision}
        if self.decision == "invalid":
            data["reason"] = self.reason
            if self.row is not None:
                data["row"] = self.row
        else:
            data["matches"] = [match.as_dict() for match in self.matches]
        return data


def matches_merge(matches: Iterable[Match]) -> tuple[Match, ...]:
    """One match per (kind, opt-out), the closest; ordered by kind, distance, opt-out.
    Also how partial answers of several index shards combine into one."""
    found: dict[tuple[str, str], Match] = {}
    for match in matches:
        key = (match.kind, match.opt_out)
        if key not in found or found[key].distance > match.distance:
            found[key] = match
    return tuple(sorted(found.values(), key=lambda m: (m.kind, m.distance, m.opt_out)))


def _applies(opt_out: SnapshotOptOut, use: str, organization: int | None) -> bool:
    return use in opt_out.refused and (
        organization is None or organization not in opt_out.exceptions
    )


# (kind, photo, distance, threshold) of one record against the photo indexes.
PhotoHit = tuple[str, int, int, int]


def _photo_hits(
    records: Sequence[Record], registry: MatchSource, thresholds: Thresholds
) -> list[list[PhotoHit]]:
    """Every record's photo hits, each hash kind looked up for all records at once."""
    hits: list[list[PhotoHit]] = [[] for _ in records]
    for kind, threshold in (("sha256", 0), ("pdq", thresholds.pdq), ("phash", thresholds.phash)):
        positions = [i for i, record in enumerate(records) if getattr(record, kind)]
        if not positions:
            continue
        values = [getattr(records[i], kind) for i in positions]
        if kind == "sha256":
            found = [[(photo, 0) for photo in photos] for photos in registry.sha256_photos(values)]
        else:
            found = registry.within_many(kind, values, threshold)
        for i, pairs in zip(positions, found, strict=True):
            hits[i].extend((kind, photo, distance, threshold) for photo, distance in pairs)
    return hits


def _decide_one(
    record: Record,
    hits: list[PhotoHit],
    registry: MatchSource,
    *,
    use: str,
    organization: int | None,
) -> Decision:
    candidates: list[Match] = []

    def add(kind: str, distance: int, threshold: int, opt_outs: Iterable[SnapshotOptOut]) -> None:
        candidates.extend(
            Match(kind, distance, threshold, opt_out.public_id, opt_out.uses)
            for opt_out in opt_outs
            if _applies(opt_out, use, organization)
        )

    for kind, photo, distance, threshold in hits:
        add(kind, distance, threshold, registry.opt_outs_of_photo(photo))
    if record.url:
        for claim, kind in registry.claim_hits(record.url):
            add(kind, 0, 0, registry.opt_outs_of_claim(claim))
    matches = matches_merge(candidates)
    return Decision(record.id, "exclude" if matches else "allow", matches, row=record.row)


def decide(
    records: Iterable[Record | Invalid],
    registry: MatchSource,
    *,
    use: str,
    organization: int | None,
    thresholds: Thresholds,
) -> list[Decision]:
    """One decision per record, in order."""
    records = list(records)
    valid = [record for record in records if isinstance(record, Record)]
    hits = iter(_photo_hits(valid, registry, thresholds))
    decisions = []
    for record in records:
        if isinstance(record, Invalid):
            decisions.append(Decision(record.id, "invalid", reason=record.reason, row=record.row))
        else:
            decisions.append(
                _decide_one(record, next(hits), registry, use=use, organization=organization)
            )
    return decisions
