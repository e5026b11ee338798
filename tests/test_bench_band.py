"""The benchmarks' kernels measure the middle band as the rule decides it
(benchmarks/matchbench.py, ``band=True``): a record's band hashes against the
photo's ``band`` variant, replayed through ``MatchRule.evaluate``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from benchmarks import edits as bench_edits
from benchmarks import matchbench as mb
from optout.matching.rule import DEFAULT_RULE
from registry.hashing import decode

NAMES = ("astronaut", "coffee", "chelsea", "camera")


@pytest.fixture(scope="module")
def captioned() -> tuple[mb.Registered, mb.Queries]:
    """Four photographs registered, and a meme-captioned copy of each."""
    items = [(name, Image.fromarray(getattr(data, name)())) for name in NAMES]
    reg = mb.register(items, 1)
    records = [
        (name, bench_edits.edited_bytes(decode(mb.jpeg(image, 95)), "text_large", i))
        for i, (name, image) in enumerate(items)
    ]
    return reg, mb.queries(records, 1)


def test_records_carry_their_band_hashes(captioned: tuple[mb.Registered, mb.Queries]) -> None:
    reg, qs = captioned
    assert reg.names[-1] == mb.BAND
    assert qs.band_pdq.shape == (len(NAMES), 4) and qs.band_phash.shape == (len(NAMES),)
    assert len(qs.band_hex(0)) == 82
    taken = qs.take(np.array([2, 0]))
    assert taken.sources == ["chelsea", "astronaut"]
    assert taken.band_hex(1) == qs.band_hex(0)
    _, half = mb.subset(reg, qs, ("coffee", "camera"))
    assert half.band_hex(1) == qs.band_hex(3)


def test_a_pair_level_is_the_lower_of_its_own_and_its_band(
    captioned: tuple[mb.Registered, mb.Queries],
) -> None:
    reg, qs = captioned
    photo = np.arange(len(NAMES))
    own = mb.paired_levels(reg, photo, qs, DEFAULT_RULE, query_quality=True)
    band_rule = mb.band_only(DEFAULT_RULE)
    alone = mb.paired_levels(reg, photo, qs, band_rule, query_quality=True, band=True)
    both = mb.paired_levels(reg, photo, qs, DEFAULT_RULE, query_quality=True, band=True)
    assert np.array_equal(both, np.minimum(own, alone))
    # A caption across the bottom leaves the middle band alone.
    assert np.mean(alone <= 0) >= 0.75
    # Band and rule, shifted either way, agree with rule.evaluate on every variant.
    for k in (-1, 0, 1, 3):
        rule = DEFAULT_RULE if k == 0 else DEFAULT_RULE.shifted(k)  # k = 0: the engine's own
        mb.check_exact(reg, photo, qs, photo, both - k, rule, "both", True, True)
        mb.check_exact(reg, photo, qs, photo, alone - k, band_rule.shifted(k), "both", True, True)


def test_without_band_hashes_the_band_variant_never_matches(
    captioned: tuple[mb.Registered, mb.Queries],
) -> None:
    reg, qs = captioned
    photo = np.arange(len(NAMES))
    alone = mb.paired_levels(reg, photo, qs, mb.band_only(DEFAULT_RULE), query_quality=True)
    assert (alone > mb.LEVEL_MAX).all()


def test_cross_pairs_with_band(captioned: tuple[mb.Registered, mb.Queries]) -> None:
    reg, qs = captioned
    own = mb.cross_counts(reg, qs, DEFAULT_RULE, query_quality=True)
    both = mb.cross_counts(reg, qs, DEFAULT_RULE, query_quality=True, band=True)
    alone = mb.cross_counts(reg, qs, mb.band_only(DEFAULT_RULE), query_quality=True, band=True)
    assert own.pairs == both.pairs == len(NAMES) * (len(NAMES) - 1)
    for level in range(mb.LEVEL_MIN, mb.LEVEL_MAX + 1):
        assert both.at_level(level) >= max(own.at_level(level), alone.at_level(level))
        assert both.at_level(level) <= own.at_level(level) + alone.at_level(level)
    # The band alone is attributed to the band column only.
    band = reg.names.index(mb.BAND)
    assert alone.attribution.sum() == alone.attribution[band].sum()
    assert own.attribution[band].sum() == 0
    assert mb.check_cross(reg, qs, DEFAULT_RULE, "both", True, sample=50, band=True) > 0
