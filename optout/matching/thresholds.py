"""Hamming-distance thresholds. A pipeline may ask for stricter ones, never looser."""

from __future__ import annotations

from dataclasses import dataclass, field

from optout.matching.rule import DEFAULT_RULE


class ThresholdTooLoose(ValueError):
    pass


def _widest(kind: str) -> int:
    """The widest distance on ``kind`` at which the registry's rule matches."""
    widths = [getattr(box, kind) for box in DEFAULT_RULE.all_boxes()]
    return max(widths + DEFAULT_RULE.single_thresholds(kind))


@dataclass(frozen=True)
class Thresholds:
    """Caps on the Hamming distances of a perceptual match. The registry's own
    rule (rule.py) decides within them; the defaults are the widest distances
    that rule accepts, and a pipeline's stricter caps exclude every match
    beyond them on either hash."""

    pdq: int = field(default_factory=lambda: _widest("pdq"))
    phash: int = field(default_factory=lambda: _widest("phash"))

    def stricter(self, *, pdq: int | None = None, phash: int | None = None) -> Thresholds:
        """Thresholds a caller asked for; raises ThresholdTooLoose above the registry's."""
        for name, requested, allowed in (("pdq", pdq, self.pdq), ("phash", phash, self.phash)):
            if requested is not None and not 0 <= requested <= allowed:
                raise ThresholdTooLoose(
                    f"{name} threshold must be between 0 and {allowed} (the registry's maximum)"
                )
        return Thresholds(
            pdq=self.pdq if pdq is None else pdq, phash=self.phash if phash is None else phash
        )


DEFAULT_THRESHOLDS = Thresholds()
