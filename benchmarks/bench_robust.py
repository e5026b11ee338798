"""Recall per edit: does an edited repost of a registered photo still match it?

Photos: every photograph that ships with scikit-image and scikit-learn
(benchmarks/corpus.py; scikit-learn's two come with the ``bench`` extra), each
with ``--windows`` large windows of it (default 4: 100 photos), split by source
into the calibration half (thresholds were chosen on it) and the validation
half (never looked at while choosing). Each photo is registered through the
registry's path (all default variants, registry/variants.py) and every edit of
benchmarks/edits.py is hashed from the bytes a pipeline would meet.

Columns: the registry's rule (optout/matching/rule.py ``DEFAULT_RULE``, records
carrying PDQ, its quality and pHash, as the workers and ``optout hash`` produce
them) on each half and on all photos; ``UNKNOWN_QUALITY_RULE`` for bare PDQ +
pHash records without their quality; the default rule for records carrying
only a PDQ; HMA's rule (the photo's own PDQ, distance <= 31); pHash <= 8 on the
photo's own pHash.

    .venv/bin/python benchmarks/bench_robust.py              # about 20 s
    .venv/bin/python benchmarks/bench_robust.py --windows 9  # more photos
"""

from __future__ import annotations

import argparse
import time

import edits
import numpy as np
from matchbench import HMA_RULE, PHASH8_RULE, default_workers, recall_levels, recall_set

from optout.matching.rule import DEFAULT_RULE, UNKNOWN_QUALITY_RULE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4, help="extra windows per source photo")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()

    started = time.perf_counter()
    rs = recall_set(args.windows, args.workers)
    hashed = time.perf_counter() - started
    rule = recall_levels(rs, DEFAULT_RULE, query_quality=True)
    bare = recall_levels(rs, UNKNOWN_QUALITY_RULE)
    pdq_only = recall_levels(rs, DEFAULT_RULE, mode="pdq", query_quality=True)
    hma = recall_levels(rs, HMA_RULE, mode="pdq")
    phash8 = recall_levels(rs, PHASH8_RULE, mode="phash")
    cal = rs.split == "calibration"
    low = rs.photos.quality[:, 0] < DEFAULT_RULE.min_quality
    print(
        f"{len(rs.split)} photos ({cal.sum()} calibration, {(~cal).sum()} validation; "
        f"{low.sum()} with PDQ quality < {DEFAULT_RULE.min_quality}), "
        f"{len(rs.photos.names)} variants each; hashing {hashed:.0f} s\n"
    )
    print(
        "| edit | rule, calibration | rule, validation | rule, all | bare hashes, all "
        "| PDQ-only records, all | HMA (PDQ <= 31) | pHash <= 8 |"
    )
    print("|---|---|---|---|---|---|---|---|")

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
            f"| {recall(rule[name])} | {recall(bare[name])} | {recall(pdq_only[name])} "
            f"| {recall(hma[name])} "
            f"| {recall(phash8[name])} |"
        )
    print(
        "\nTargets (bold): recall >= 0.95 for each, >= 0.80 for the rotations "
        f"(total {time.perf_counter() - started:.0f} s)."
    )


if __name__ == "__main__":
    main()
