"""The decision engine. Pure: no Django, no ORM; callers hand it the registry
as of one registry version (a MatchSource: the live index's view, or the
brute-force Snapshot it is tested against) and the records to decide."""

from optout.matching.decide import MatchSource, decide, rule_fingerprint
from optout.matching.records import Invalid, Record, record_parse
from optout.matching.snapshot import Snapshot, SnapshotClaim, SnapshotOptOut, SnapshotPhoto
from optout.matching.thresholds import DEFAULT_THRESHOLDS, Thresholds, ThresholdTooLoose

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Invalid",
    "MatchSource",
    "Record",
    "Snapshot",
    "SnapshotClaim",
    "SnapshotOptOut",
    "SnapshotPhoto",
    "ThresholdTooLoose",
    "Thresholds",
    "decide",
    "record_parse",
    "rule_fingerprint",
]
