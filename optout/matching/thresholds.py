"""Hamming-distance thresholds. A pipeline may ask for stricter ones, never looser."""

from __future__ import annotations

from dataclasses import dataclass


class ThresholdTooLoose(ValueError):
    pass


@dataclass(frozen=True)
class Thresholds:
    # HMA's confident-match threshold for PDQ (256 bits).
    pdq: int = 31
    # pHash (64 bits): a resize to 50 % plus JPEG q60 stays within 8 bits on the
    # golden-test photographs (tests/registry/test_hashing.py).
    phash: int = 8

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
