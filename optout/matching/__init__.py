"""The decision engine. Pure: no Django, no ORM; callers hand it a snapshot of
the registry at one registry version and the records to decide."""

from optout.matching.decide import decide
from optout.matching.records import Invalid, Record, record_parse
from optout.matching.snapshot import Snapshot, SnapshotClaim, SnapshotOptOut, SnapshotPhoto
from optout.matching.thresholds import DEFAULT_THRESHOLDS, Thresholds, ThresholdTooLoose

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Invalid",
    "Record",
    "Snapshot",
    "SnapshotClaim",
    "SnapshotOptOut",
    "SnapshotPhoto",
    "ThresholdTooLoose",
    "Thresholds",
    "decide",
    "record_parse",
]
