"""Deciding records: exclude when an active opt-out refusing the use covers a
matching photo or claim and the organization holds no exception from it.

``decide`` reads the registry through ``MatchSource``: the brute-force
``Snapshot`` (snapshot.py, the reference) and the live index's view at one
registry version (live.py) both provide it and give the same decisions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from optout.matching.records import Invalid, Record
from optout.matching.rule import (
    DEFAULT_RULE,
    UNKNOWN_QUALITY_RULE,
    Evidence,
    MatchRule,
    QueryHashes,
    SearchPlan,
    VariantHashes,
    rule_for,
    sha256_evidence,
)
from optout.matching.scale import (
    COLOURS_AGREE,
    FALSE_EXCLUSION_TARGET,
    UNCONFIRMED,
    held_back_strictness,
)
from optout.matching.snapshot import SnapshotOptOut
from optout.matching.thresholds import Thresholds
from registry import keypoints

# The index searches every rule in use needs: the default rule's plan covers
# the stricter rule for records without their PDQ quality and every stricter
# threshold a pipeline asks for.
SEARCH_PLAN = DEFAULT_RULE.search_plan()


def rule_fingerprint() -> str:
    """Names the decision rule and the registered variant set (receipts): any
    change to a threshold (the colour threshold included), a gate, the
    variants or the rates that hold unconfirmed matches back changes it."""
    from registry.variants import DEFAULT_VARIANTS

    held_back = (FALSE_EXCLUSION_TARGET, COLOURS_AGREE, sorted(UNCONFIRMED.items()))
    text = repr((DEFAULT_RULE, UNKNOWN_QUALITY_RULE, DEFAULT_VARIANTS, held_back))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class MatchSource(Protocol):
    """The registry at one registry version, as decide() reads it. Photo and
    claim ids are the source's own; decide() only hands them back."""

    version: int

    def sha256_photos(self, digests: Sequence[str]) -> list[list[int]]:
        """Per digest, the photos registered with exactly that SHA-256."""
        ...

    def variant_candidates(
        self, queries: Sequence[QueryHashes], plan: SearchPlan
    ) -> list[list[tuple[int, VariantHashes]]]:
        """Per record, (photo, variant) of registered variants that include
        every variant the rule can accept (the searches of ``plan``)."""
        ...

    def opt_outs_of_photo(self, photo: int) -> Sequence[SnapshotOptOut]:
        """The opt-outs covering the photo that are active at this version."""
        ...

    def photo_keypoints(self, photos: Sequence[int]) -> Mapping[int, bytes]:
        """The registered keypoints (registry.keypoints) of those photos that
        have them."""
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
    # Photo matches: which variant, which hashes, their distances and
    # thresholds (rule.Evidence.as_dict); None for claim matches.
    evidence: dict[str, Any] | None = field(default=None, hash=False)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            "distance": self.distance,
            "threshold": self.threshold,
            "opt_out": self.opt_out,
            "uses": list(self.uses),
        }
        if self.evidence is not None:
            data["evidence"] = dict(self.evidence)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        return cls(
            data["kind"],
            data["distance"],
            data["threshold"],
            data["opt_out"],
            tuple(data["uses"]),
            data.get("evidence"),
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
        if key not in found or _closeness(found[key]) > _closeness(match):
            found[key] = match
    return tuple(sorted(found.values(), key=lambda m: (m.kind, m.distance, m.opt_out)))


def _closeness(match: Match) -> tuple[int, int, int, str]:
    """Orders a kind's matches: distance, then both distances, then variant name
    (ties broken the same way whichever registry or shard found them)."""
    evidence = match.evidence or {}
    return (
        match.distance,
        evidence.get("pdq_distance") or 0,
        evidence.get("phash_distance") or 0,
        str(evidence.get("variant", "")),
    )


def _applies(opt_out: SnapshotOptOut, use: str, organization: int | None) -> bool:
    return use in opt_out.refused and (
        organization is None or organization not in opt_out.exceptions
    )


@dataclass(frozen=True)
class PhotoHit:
    """A record matched a registered photo: how (the Match fields) and why."""

    photo: int
    kind: str  # sha256 | pdq | phash
    distance: int
    threshold: int
    evidence: dict[str, Any]


def _judged(
    query: QueryHashes, variant: VariantHashes, thresholds: Thresholds, strictness: int
) -> Evidence | None:
    """The variant judged by the registry's rule for the record ``strictness``
    steps stricter (``rule_for``), under a pipeline's stricter thresholds, the
    evidence stating the steps; None when it does not match."""
    evidence = rule_for(query, strictness).evaluate(query, variant)
    if not evidence.matched:
        return None
    pdq_threshold, phash_threshold = evidence.pdq_threshold, evidence.phash_threshold
    if evidence.pdq_distance is not None and pdq_threshold is not None:
        if evidence.pdq_distance > thresholds.pdq:
            return None
        pdq_threshold = min(pdq_threshold, thresholds.pdq)
    if evidence.phash_distance is not None and phash_threshold is not None:
        if evidence.phash_distance > thresholds.phash:
            return None
        phash_threshold = min(phash_threshold, thresholds.phash)
    return replace(
        evidence,
        pdq_threshold=pdq_threshold,
        phash_threshold=phash_threshold,
        strictness=strictness,
    )


def _perceptual_hit(photo: int, evidence: Evidence) -> PhotoHit:
    kind = "pdq" if evidence.pdq_distance is not None else "phash"
    distance = getattr(evidence, f"{kind}_distance")
    threshold = getattr(evidence, f"{kind}_threshold")
    return PhotoHit(photo, kind, distance, threshold, evidence.as_dict())


def _photo_hits(
    records: Sequence[Record], registry: MatchSource, thresholds: Thresholds
) -> list[list[PhotoHit]]:
    """Every record's photo hits, each hash kind looked up for all records at once."""
    hits: list[list[PhotoHit]] = [[] for _ in records]
    positions = [i for i, record in enumerate(records) if record.sha256]
    if positions:
        found = registry.sha256_photos([records[i].sha256 for i in positions])
        exact = sha256_evidence().as_dict()
        for i, photos in zip(positions, found, strict=True):
            hits[i].extend(PhotoHit(photo, "sha256", 0, 0, exact) for photo in photos)
    perceptual = _perceptual_matches(records, registry, thresholds)
    for i, photo, evidence in _keypoints_confirm(records, registry, perceptual, thresholds):
        hits[i].append(_perceptual_hit(photo, evidence))
    return hits


@dataclass(frozen=True)
class _Perceptual:
    """A variant the rule matches, within the thresholds, before the
    geometric check: the record's position, the photo, why, and by which rule."""

    position: int
    photo: int
    evidence: Evidence
    rule: MatchRule
    query: QueryHashes
    variant: VariantHashes


def _perceptual_matches(
    records: Sequence[Record], registry: MatchSource, thresholds: Thresholds
) -> list[_Perceptual]:
    """Every variant the rule matches, within the thresholds, before the
    geometric check."""
    positions = [i for i, record in enumerate(records) if record.pdq or record.phash]
    if not positions:
        return []
    queries = [
        QueryHashes(
            records[i].pdq,
            records[i].phash,
            records[i].pdq_quality,
            records[i].colour,
            records[i].band,
        )
        for i in positions
    ]
    candidates = registry.variant_candidates(queries, SEARCH_PLAN)
    perceptual: list[_Perceptual] = []
    for i, query, pairs in zip(positions, queries, candidates, strict=True):
        rule = rule_for(query, thresholds.strictness)
        for photo, variant in pairs:
            judged = _judged(query, variant, thresholds, thresholds.strictness)
            if judged is not None:
                perceptual.append(_Perceptual(i, photo, judged, rule, query, variant))
    return perceptual


def keypoints_wanted(
    records: Sequence[Record], registry: MatchSource, *, thresholds: Thresholds
) -> set[int]:
    """Positions of the records whose keypoints would be checked: a
    perceptual match against a photo registered with keypoints. A caller that
    computes keypoints only where they count (the workers' shard hashing)
    computes them for these; every other record is decided the same with or
    without them. Opt-outs are not consulted: whether one applies is
    ``decide``'s business, and a record checked needlessly costs only time."""
    perceptual = _perceptual_matches(records, registry, thresholds)
    photos = sorted({match.photo for match in perceptual})
    stored = registry.photo_keypoints(photos) if photos else {}
    return {match.position for match in perceptual if stored.get(match.photo)}


def _size_judged(match: _Perceptual, thresholds: Thresholds) -> Evidence | None:
    """A match the keypoints did not check, as the registry's size has it
    judged (scale.py): by the rule as many steps stricter as that size needs
    for a match whose colours agree, or for one nothing confirms; None when
    that rule does not match."""
    colours_agree = match.evidence.colour_distance is not None
    steps = held_back_strictness(
        thresholds.registry_photos, match.query, colours_agree=colours_agree
    )
    if steps <= thresholds.strictness:
        return match.evidence
    return _judged(match.query, match.variant, thresholds, steps)


def _keypoints_confirm(
    records: Sequence[Record],
    registry: MatchSource,
    perceptual: Sequence[_Perceptual],
    thresholds: Thresholds,
) -> Iterator[tuple[int, int, Evidence]]:
    """The perceptual matches (record position, photo, evidence) that the
    geometric check leaves standing, their evidence completed with it; a
    match it cannot check (either side without keypoints) as the registry's
    size has it judged (``_size_judged``). A record and a photo are
    compared once, whichever variants matched."""
    wanted = sorted({m.photo for m in perceptual if records[m.position].keypoints})
    stored = registry.photo_keypoints(wanted) if wanted else {}
    checked: dict[tuple[int, int], int] = {}
    for match in perceptual:
        i, photo = match.position, match.photo
        registered = stored.get(photo, b"")
        if not (records[i].keypoints and registered):
            judged = _size_judged(match, thresholds)
            if judged is not None:
                yield i, photo, judged
            continue
        if (i, photo) not in checked:
            checked[i, photo] = keypoints.inliers(records[i].keypoints, registered)
        agreeing = checked[i, photo]
        needed = match.rule.keypoints_needed(match.query)
        if agreeing >= needed:
            yield (
                i,
                photo,
                replace(match.evidence, keypoint_inliers=agreeing, keypoint_threshold=needed),
            )


def _decide_one(
    record: Record,
    hits: list[PhotoHit],
    registry: MatchSource,
    *,
    use: str,
    organization: int | None,
) -> Decision:
    candidates: list[Match] = []

    def add(
        kind: str,
        distance: int,
        threshold: int,
        opt_outs: Iterable[SnapshotOptOut],
        evidence: dict[str, Any] | None = None,
    ) -> None:
        candidates.extend(
            Match(kind, distance, threshold, opt_out.public_id, opt_out.uses, evidence)
            for opt_out in opt_outs
            if _applies(opt_out, use, organization)
        )

    for hit in hits:
        opt_outs = registry.opt_outs_of_photo(hit.photo)
        add(hit.kind, hit.distance, hit.threshold, opt_outs, hit.evidence)
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
