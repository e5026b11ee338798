"""Deciding records: exclude when an active opt-out refusing the use covers a
matching photo or claim and the organization holds no exception from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from optout.matching.records import Invalid, Record
from optout.matching.snapshot import Snapshot, SnapshotOptOut
from optout.matching.thresholds import Thresholds


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


def _host_and_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.startswith("www."):
        host = host[4:]
    return host, parts.path


def _claim_hits(snapshot: Snapshot, url: str) -> Iterable[tuple[int, str]]:
    host, path = _host_and_path(url)
    for index in snapshot.claims_by_kind.get("url_prefix", ()):
        if url.startswith(snapshot.claims[index].value):
            yield index, "url_prefix"
    for index in snapshot.claims_by_kind.get("domain", ()):
        domain = snapshot.claims[index].value
        if host == domain or host.endswith("." + domain):
            yield index, "domain"
    first_segment = path.strip("/").split("/", 1)[0].lstrip("@").lower()
    for index in snapshot.claims_by_kind.get("handle", ()):
        platform, _, name = snapshot.claims[index].value.partition(":")
        on_platform = host in (platform, f"{platform}.com") or host.endswith("." + platform)
        if on_platform and first_segment == name:
            yield index, "handle"


def _applies(opt_out: SnapshotOptOut, use: str, organization: int | None) -> bool:
    return use in opt_out.refused and (
        organization is None or organization not in opt_out.exceptions
    )


def decide_one(
    record: Record,
    snapshot: Snapshot,
    *,
    use: str,
    organization: int | None,
    thresholds: Thresholds,
) -> Decision:
    found: dict[tuple[str, str], Match] = {}

    def add(kind: str, distance: int, threshold: int, opt_outs: list[SnapshotOptOut]) -> None:
        for opt_out in opt_outs:
            if not _applies(opt_out, use, organization):
                continue
            key = (kind, opt_out.public_id)
            if key not in found or found[key].distance > distance:
                found[key] = Match(kind, distance, threshold, opt_out.public_id, opt_out.uses)

    if record.sha256:
        for index in snapshot.sha256.get(record.sha256, ()):
            add("sha256", 0, 0, snapshot.photo_opt_outs[index])
    if record.pdq:
        for index, distance in snapshot.within("pdq", record.pdq, thresholds.pdq):
            add("pdq", distance, thresholds.pdq, snapshot.photo_opt_outs[index])
    if record.phash:
        for index, distance in snapshot.within("phash", record.phash, thresholds.phash):
            add("phash", distance, thresholds.phash, snapshot.photo_opt_outs[index])
    if record.url:
        for index, kind in _claim_hits(snapshot, record.url):
            add(kind, 0, 0, snapshot.claim_opt_outs[index])
    matches = tuple(sorted(found.values(), key=lambda m: (m.kind, m.distance, m.opt_out)))
    return Decision(record.id, "exclude" if matches else "allow", matches, row=record.row)


def decide(
    records: Iterable[Record | Invalid],
    snapshot: Snapshot,
    *,
    use: str,
    organization: int | None,
    thresholds: Thresholds,
) -> list[Decision]:
    """One decision per record, in order."""
    decisions = []
    for record in records:
        if isinstance(record, Invalid):
            decisions.append(Decision(record.id, "invalid", reason=record.reason, row=record.row))
        else:
            decisions.append(
                decide_one(
                    record, snapshot, use=use, organization=organization, thresholds=thresholds
                )
            )
    return decisions
