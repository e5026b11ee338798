"""Recall per edit: does an edited repost of a registered photo still match it?

Photos: every photograph that ships with scikit-image and scikit-learn
(benchmarks/corpus.py; scikit-learn's two come with the ``bench`` extra), each
with ``--windows`` large windows of it (default 4: 100 photos), split by source
into the calibration half (thresholds were chosen on it) and the validation
half (never looked at while choosing). Each photo is registered through the
registry's path (all default variants, registry/variants.py) and every edit of
benchmarks/edits.py is hashed from the bytes a pipeline would meet.

Columns: the rule the engine applies (optout/matching/rule.py ``rule_for``):
``DEFAULT_RULE`` for records carrying PDQ, its quality and pHash (as the
workers and ``optout hash`` produce them) on each half and on all photos;
``UNKNOWN_QUALITY_RULE`` for bare PDQ + pHash records without their quality;
``DEFAULT_RULE`` for records carrying only a PDQ and its quality; HMA's rule
(the photo's own PDQ, distance <= 31); pHash <= 8 on the photo's own pHash.
"+ band": ``DEFAULT_RULE`` for records that also carry the hashes of their
middle band (``PhotoHashes.band``, as ``optout hash`` and the workers produce
them), matched against the photo's ``band`` variant; "band alone": those band
hashes by themselves (``matchbench.band_only``).
Every (photo, edit) pair of the registry columns is replayed through
``MatchRule.evaluate`` and the search plan (matchbench.check_exact).

    .venv/bin/python benchmarks/bench_robust.py              # about 45 s on 2 cores
    .venv/bin/python benchmarks/bench_robust.py --windows 9  # more photos
"""

from __future__ import annotations

import argparse
import time

import corpus
import edits
import numpy as np
from matchbench import (
    BAND,
    HMA_RULE,
    LEVEL_MIN,
    PHASH8_RULE,
    CrossCounts,
    band_only,
    check_exact,
    cross_counts,
    default_workers,
    recall_levels,
    recall_set,
)

from optout.matching.rule import DEFAULT_RULE, UNKNOWN_QUALITY_RULE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4, help="extra windows per source photo")
    parser.add_argument("--workers", type=int, default=default_workers())
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)

    started = time.perf_counter()
    rs = recall_set(args.windows, args.workers)
    hashed = time.perf_counter() - started
    rule = recall_levels(rs, DEFAULT_RULE, query_quality=True)
    banded = recall_levels(rs, DEFAULT_RULE, query_quality=True, band=True)
    band_rule = band_only(DEFAULT_RULE)
    band_alone = recall_levels(rs, band_rule, query_quality=True, band=True)
    bare = recall_levels(rs, UNKNOWN_QUALITY_RULE)
    pdq_only = recall_levels(rs, DEFAULT_RULE, mode="pdq", query_quality=True)
    hma = recall_levels(rs, HMA_RULE, mode="pdq")
    phash8 = recall_levels(rs, PHASH8_RULE, mode="phash")
    photo = np.arange(len(rs.split))
    checked = 0
    for levels, rule_used, mode, with_quality, with_band in (
        (rule, DEFAULT_RULE, "both", True, False),
        (banded, DEFAULT_RULE, "both", True, True),
        (band_alone, band_rule, "both", True, True),
        (bare, UNKNOWN_QUALITY_RULE, "both", False, False),
        (pdq_only, DEFAULT_RULE, "pdq", True, False),
    ):
        for name, qs in rs.edits.items():
            checked += check_exact(
                rs.photos, photo, qs, photo, levels[name], rule_used, mode, with_quality, with_band
            )
    cal = rs.split == "calibration"
    low = rs.photos.quality[:, 0] < DEFAULT_RULE.min_quality
    low_band = rs.photos.quality[:, rs.photos.names.index(BAND)] < DEFAULT_RULE.min_quality
    print(
        f"{len(rs.split)} photos ({cal.sum()} calibration, {(~cal).sum()} validation; "
        f"{low.sum()} with PDQ quality < {DEFAULT_RULE.min_quality}, "
        f"{low_band.sum()} whose band variant is), "
        f"{len(rs.photos.names)} variants each; hashing {hashed:.0f} s; "
        f"{checked} pairs replayed through rule.evaluate: identical\n"
        f"search plan: {DEFAULT_RULE.search_plan()}\n"
    )
    print(
        "| edit | rule, calibration | rule, validation | rule, all "
        "| rule + band, calibration | rule + band, validation | rule + band, all "
        "| band alone, all "
        f"| rule, quality >= {DEFAULT_RULE.min_quality} / below | bare hashes, all "
        "| PDQ-only records with quality, all | HMA (PDQ <= 31) | pHash <= 8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def recall(levels: np.ndarray, mask: np.ndarray | None = None) -> str:
        chosen = levels if mask is None else levels[mask]
        return f"{np.mean(chosen <= 0):.2f}"

    targets = set(edits.TARGET_EDITS) | set(edits.ROTATION_EDITS)
    for name in (*edits.EDITS, *edits.STRETCH_EDITS):
        label = f"**{name}**" if name in targets else name
        if name in edits.STRETCH_EDITS:
            label += " (stretch)"
        print(
            f"| {label} | {recall(rule[name], cal)} | {recall(rule[name], ~cal)} "
            f"| {recall(rule[name])} | {recall(banded[name], cal)} "
            f"| {recall(banded[name], ~cal)} | {recall(banded[name])} "
            f"| {recall(band_alone[name])} "
            f"| {recall(rule[name], ~low)} / {recall(rule[name], low)} "
            f"| {recall(bare[name])} | {recall(pdq_only[name])} "
            f"| {recall(hma[name])} "
            f"| {recall(phash8[name])} |"
        )
    # Distinct photos: every edited copy against every photo of another source.
    print()
    for label, band in (("records with quality", False), ("records with quality and band", True)):
        distinct(
            [
                cross_counts(rs.photos, qs, DEFAULT_RULE, query_quality=True, band=band)
                for qs in rs.edits.values()
            ],
            label,
            rs.photos.names.index(BAND),
        )
    print(
        "\nTargets (bold): recall >= 0.95 for each, >= 0.80 for the rotations; "
        "photos below the quality gate (featureless: sky, flat colour) are refused by design "
        f"(total {time.perf_counter() - started:.0f} s)."
    )


def distinct(cross: list[CrossCounts], label: str, band_column: int) -> None:
    """The line on distinct photos: pairs matched, and how much looser the rule
    must get for the nearest pair to match (and how many of those the band
    variant reached)."""
    histogram = np.sum([c.histogram for c in cross], axis=0)
    attribution = np.sum([c.attribution for c in cross], axis=0)
    pairs = sum(c.pairs for c in cross)
    nearest = next((LEVEL_MIN + k for k, n in enumerate(histogram) if n), None)
    near = nearest if nearest is not None else 0
    by_band = (
        int(attribution[band_column, : near - LEVEL_MIN + 1].sum()) if nearest is not None else 0
    )
    print(
        f"Distinct photos: {pairs} (photo, edited copy of a photo of another source) pairs "
        f"over {len(cross)} edits, {label}; matched by the rule: "
        f"{int(histogram[: -LEVEL_MIN + 1].sum())}; the nearest pair matches the rule "
        + (f"{nearest} steps looser" if nearest is not None else "at no level measured")
        + (f" ({by_band} of the nearest reached by the band)" if nearest is not None else "")
    )


if __name__ == "__main__":
    main()
