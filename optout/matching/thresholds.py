"""Hamming-distance thresholds. A pipeline may ask for stricter ones, never looser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optout.matching.rule import DEFAULT_RULE, MAX_STRICTNESS


class ThresholdTooLoose(ValueError):
    pass


def _widest(kind: str) -> int:
    """The widest distance on ``kind`` at which the registry's rule matches."""
    widths = [getattr(box, kind) for box in DEFAULT_RULE.all_boxes()]
    return max(widths + DEFAULT_RULE.single_thresholds(kind))


@dataclass(frozen=True)
class Thresholds:
    """Caps on the Hamming distances of a perceptual match, and how many steps
    stricter than its own the registry's rule (rule.py) decides. The defaults
    are the widest distances that rule accepts and no extra strictness; a
    pipeline's stricter caps exclude every match beyond them on either hash,
    and ``strictness`` k decides with the rule shifted by -k (every box k
    steps narrower: fewer false exclusions, less recall; docs/matching.md,
    "Trade-off").

    ``registry_photos`` is not a pipeline's to set: the photos the registry
    held at the decision's registry version. A match the keypoints did not
    check is judged as many steps stricter as that size needs (scale.py); 0
    (unknown, or an empty registry) holds nothing back."""

    pdq: int = field(default_factory=lambda: _widest("pdq"))
    phash: int = field(default_factory=lambda: _widest("phash"))
    strictness: int = 0
    registry_photos: int = 0

    def stricter(
        self, *, pdq: int | None = None, phash: int | None = None, strictness: int | None = None
    ) -> Thresholds:
        """Thresholds a caller asked for; raises ThresholdTooLoose above the registry's."""
        for name, requested, allowed in (("pdq", pdq, self.pdq), ("phash", phash, self.phash)):
            if requested is not None and not 0 <= requested <= allowed:
                raise ThresholdTooLoose(
                    f"{name} threshold must be between 0 and {allowed} (the registry's maximum)"
                )
        if strictness is not None and not 0 <= strictness <= MAX_STRICTNESS:
            raise ThresholdTooLoose(f"strictness must be between 0 and {MAX_STRICTNESS}")
        return Thresholds(
            pdq=self.pdq if pdq is None else pdq,
            phash=self.phash if phash is None else phash,
            strictness=self.strictness if strictness is None else strictness,
            registry_photos=self.registry_photos,
        )

    def as_dict(self) -> dict[str, int]:
        """As batches store, digest and sign them: ``strictness`` only when a
        pipeline asked for some, ``registry_photos`` only once known (so what
        the registry's defaults stated before either existed reads the same)."""
        stored = {"pdq": self.pdq, "phash": self.phash}
        if self.strictness:
            stored["strictness"] = self.strictness
        if self.registry_photos:
            stored["registry_photos"] = self.registry_photos
        return stored

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Thresholds:
        return cls(
            pdq=stored["pdq"],
            phash=stored["phash"],
            strictness=stored.get("strictness", 0),
            registry_photos=stored.get("registry_photos", 0),
        )


DEFAULT_THRESHOLDS = Thresholds()
