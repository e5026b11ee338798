"""Precision at registry scale: how often does the rule match two distinct photos?

Corpus: ``--per-source`` patches (default 500) of every photograph that ships
with scikit-image and scikit-learn (benchmarks/corpus.py: windows of 16-60 % of
the shorter side at random positions, at most 256 px). Each patch is
registered through the registry's path (registry/variants.py: all default
variants) and, separately, hashed as a query (a JPEG quality 85 re-encoding,
registry.hashing.hash_bytes). Pairs are only formed between patches of
different source photographs, so none is a true match: every match is false.

For the registry's rule (optout/matching/rule.py) it counts, per
(registered photo, query) pair, whether ANY variant matches — the quantity a
record's false exclusion depends on — over every cross pair (~10^8 with the
defaults, ~1.5 x 10^9 variant comparisons with the 16 default variants). The
rule measured is the one the engine applies (``rule_for``): ``DEFAULT_RULE``
for records carrying their PDQ quality, ``UNKNOWN_QUALITY_RULE`` for bare ones;
every cross pair within one step of a match, and a random sample of the others,
is replayed through ``MatchRule.evaluate`` and the search plan
(matchbench.check_cross) and must agree with the counting kernel. Rates that
are too small to observe are extrapolated from the tail: the same rule
loosened by 1, 2, 3… steps of 8 PDQ bits and 2 pHash bits
(``MatchRule.shifted``) matches more and more pairs;
a log-linear fit of those counts, evaluated at the rule itself, estimates the
unobservable count (conservative while the log-tail is concave, as it is for
every rule measured here). Same data, same run: HMA's rule (the photo's own PDQ
at <= 31) and pHash <= 8.

Records from our tools (``optout hash``, the workers) also carry the hashes of
their middle band (``PhotoHashes.band``), which the rule matches against each
registered photo's ``band`` variant: the rows "+ band" count a pair as matched
when its own hashes or its band do (the decision rule for those records), the
row "band alone" what the band hashes match by themselves
(``matchbench.band_only``).

Expected false exclusions per record checked against a registry of N photos:
N x (false-match rate per registered photo).

    .venv/bin/python benchmarks/bench_precision.py                   # ~11 minutes on 2 cores
    .venv/bin/python benchmarks/bench_precision.py --per-source 200  # quick
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
    LEVEL_MAX,
    LEVEL_MIN,
    PHASH8_RULE,
    CrossCounts,
    band_only,
    check_cross,
    cross_counts,
    default_workers,
    distance_histogram,
    estimate,
    precision_corpus,
    recall_levels,
    recall_set,
    subset,
)

from optout.matching.rule import (
    DEFAULT_RULE,
    PDQ_STEP,
    PHASH_STEP,
    UNKNOWN_QUALITY_RULE,
)
from optout.matching.scale import form_strictness
from registry.variants import variant_kind

# Registry sizes the expected false exclusions are reported at.
SIZES = (10**5, 10**6, 10**8)


def upper_95(count: int) -> float:
    """One-sided 95 % Poisson upper limit of an observed count."""
    from scipy.stats import chi2

    return float(chi2.ppf(0.95, 2 * count + 2) / 2)


def rate_row(label: str, counts: CrossCounts, variants: int) -> str:
    observed = counts.at_level(0)
    per_photo = estimate(counts) / counts.pairs
    cells = [
        label,
        str(variants),
        f"{counts.pairs:.3g}",
        str(observed),
        f"{upper_95(observed) / counts.pairs:.1e}",
        f"{per_photo:.1e}",
        *(f"{per_photo * size:.2g}" for size in SIZES),
    ]
    return "| " + " | ".join(cells) + " |"


def level_row(label: str, counts: CrossCounts, levels: range) -> str:
    return (
        f"| {label} | {counts.pairs:.3g} | "
        + " | ".join(str(counts.at_level(lv)) for lv in levels)
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-source", type=int, default=500, help="patches per source photo")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--windows", type=int, default=4, help="recall photos per source - 1")
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    started = time.perf_counter()
    reg, qs = precision_corpus(args.per_source, args.workers)
    low = np.mean(reg.quality[:, 0] < DEFAULT_RULE.min_quality)
    print(
        f"{len(reg.sources)} patches from {len(set(reg.sources))} source photos "
        f"({low:.0%} with PDQ quality < {DEFAULT_RULE.min_quality}), "
        f"{len(reg.names)} variants each; hashed in {time.perf_counter() - started:.0f} s\n"
    )
    variants = len(reg.names)

    print("## False matches per registered photo (any variant), all cross pairs\n")
    head = (
        "| rule | variants | pairs | observed | 95 % upper | estimate per photo | "
        + " | ".join(f"false exclusions per record at {size:.0e}" for size in SIZES)
        + " |"
    )
    print(head)
    print("|" + "---|" * (6 + len(SIZES)))
    main_counts = cross_counts(reg, qs, DEFAULT_RULE, query_quality=True)
    band_counts = cross_counts(reg, qs, DEFAULT_RULE, query_quality=True, band=True)
    band_rule = band_only(DEFAULT_RULE)
    band_alone = cross_counts(reg, qs, band_rule, query_quality=True, band=True)
    bare_counts = cross_counts(reg, qs, UNKNOWN_QUALITY_RULE)
    pdq_counts = cross_counts(reg, qs, DEFAULT_RULE, mode="pdq", query_quality=True)
    bare_pdq_counts = cross_counts(reg, qs, UNKNOWN_QUALITY_RULE, mode="pdq")
    phash_counts = cross_counts(reg, qs, DEFAULT_RULE, mode="phash", query_quality=True)
    rows = [
        ("rule: PDQ + quality + pHash records", main_counts, variants),
        ("**rule: PDQ + quality + pHash + band records (our tools)**", band_counts, variants),
        ("band alone: band hashes against the band variant", band_alone, 1),
        ("rule: bare PDQ + pHash records (UNKNOWN_QUALITY_RULE)", bare_counts, variants),
        (
            "(default boxes on bare records, for reference)",
            cross_counts(reg, qs, DEFAULT_RULE),
            variants,
        ),
        ("rule: PDQ + quality records", pdq_counts, variants),
        ("rule: bare PDQ-only records (UNKNOWN_QUALITY_RULE)", bare_pdq_counts, variants),
        ("rule: pHash + quality records", phash_counts, variants),
        ("HMA: own PDQ <= 31", cross_counts(reg, qs, HMA_RULE, mode="pdq"), 1),
        ("own pHash <= 8", cross_counts(reg, qs, PHASH8_RULE, mode="phash"), 1),
    ]
    checked = sum(
        check_cross(reg, qs, rule, mode, with_quality, band=with_band)
        for rule, mode, with_quality, with_band in (
            (DEFAULT_RULE, "both", True, False),
            (DEFAULT_RULE, "both", True, True),
            (band_rule, "both", True, True),
            (UNKNOWN_QUALITY_RULE, "both", False, False),
            (DEFAULT_RULE, "pdq", True, False),
            (UNKNOWN_QUALITY_RULE, "pdq", False, False),
            (DEFAULT_RULE, "phash", True, False),
        )
    )
    for label, counts, count in rows:
        print(rate_row(label, counts, count))
    print(
        f"\n({checked} pairs replayed through rule.evaluate and the search plan: identical; "
        "a bare pHash-only record never matches: UNKNOWN_QUALITY_RULE has no pHash-only "
        f"threshold; search plan {DEFAULT_RULE.search_plan()})"
    )

    print("\n## By half\n")
    print(head)
    print("|" + "---|" * (6 + len(SIZES)))
    for label, names in (
        ("calibration sources", corpus.CALIBRATION),
        ("validation sources", corpus.VALIDATION),
    ):
        half_reg, half_qs = subset(reg, qs, names)
        half = cross_counts(half_reg, half_qs, DEFAULT_RULE, query_quality=True)
        print(rate_row(f"rule with quality, {label}", half, variants))
        half = cross_counts(half_reg, half_qs, DEFAULT_RULE, query_quality=True, band=True)
        print(rate_row(f"rule with quality + band, {label}", half, variants))
        half = cross_counts(half_reg, half_qs, band_rule, query_quality=True, band=True)
        print(rate_row(f"band alone, {label}", half, 1))
        half = cross_counts(half_reg, half_qs, UNKNOWN_QUALITY_RULE)
        print(rate_row(f"rule, bare records, {label}", half, variants))
        print(rate_row(f"HMA, {label}", cross_counts(half_reg, half_qs, HMA_RULE, mode="pdq"), 1))

    levels = range(-4, 6)
    print(
        "\n## Tail: pairs matching the rule shifted by k steps "
        f"({PDQ_STEP} PDQ bits, {PHASH_STEP} pHash bits per step)\n"
    )
    print("| rule | pairs | " + " | ".join(f"k = {lv}" for lv in levels) + " |")
    print("|" + "---|" * (2 + len(levels)))
    for label, counts, _ in rows:
        print(level_row(label, counts, levels))

    print(
        "\n## Held back by the registry's size: matches that neither colours nor keypoints "
        "confirm (optout/matching/scale.py)\n\nSuch a match is judged by the rule as many "
        "steps stricter as the registry's size needs (scale.UNCONFIRMED: a rate and a "
        "factor per step for each record form); the estimate here is this corpus's own fit "
        "at that step (the tail above), per record checked.\n"
    )
    print(
        "| record | "
        + " | ".join(f"steps at {size:.0e} | per record at {size:.0e}" for size in SIZES)
        + " |"
    )
    print("|" + "---|" * (1 + 2 * len(SIZES)))
    forms = (
        ("PDQ + quality + pHash (no colour, no keypoints)", main_counts, ("pdq+phash", True)),
        ("bare PDQ + pHash", bare_counts, ("pdq+phash", False)),
        ("PDQ + quality", pdq_counts, ("pdq", True)),
        ("bare PDQ", bare_pdq_counts, ("pdq", False)),
        ("pHash + quality", phash_counts, ("phash", True)),
    )
    for label, counts, form in forms:
        cells = []
        for size in SIZES:
            steps = form_strictness(size, form)
            cells += [str(steps), f"{estimate(counts, -steps) / counts.pairs * size:.2g}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n(recall at each step: the trade-off table below, rule shifted by minus the steps)")

    print(
        "\n## Which variants the nearest false matches came from (rule shifted by <= 1; "
        "with band: a pair goes to the band when its band alone reaches the lowest level)\n"
    )
    by_kind: dict[str, list[int]] = {}
    upto = 1 - LEVEL_MIN + 1
    for v, name in enumerate(reg.names):
        counts = by_kind.setdefault(variant_kind(name), [0, 0])
        counts[0] += int(main_counts.attribution[v, :upto].sum())
        counts[1] += int(band_counts.attribution[v, :upto].sum())
    print("| variant kind | pairs | pairs, records with band |\n|---|---|---|")
    for kind, (count, with_band) in by_kind.items():
        print(f"| {kind} | {count} | {with_band} |")
    column = reg.names.index(BAND)
    gated = (reg.quality[:, column] < DEFAULT_RULE.min_quality).mean()
    print(
        f"\n(band PDQ quality < {DEFAULT_RULE.min_quality}: {gated:.0%} of the registered band "
        f"variants, {(qs.band_quality < DEFAULT_RULE.min_quality).mean():.0%} of the records' "
        "bands; such a band never matches)"
    )

    hist = distance_histogram(reg, qs)
    pairs = hist.sum()
    pdq_cum = hist.sum(axis=1).cumsum()
    phash_cum = hist.sum(axis=0).cumsum()
    print(f"\n## Distance tail, photo's own hashes, {pairs:.3g} cross pairs\n")
    print("| PDQ <= | " + " | ".join(str(t) for t in (31, 40, 48, 56, 64, 72, 80, 90, 100)) + " |")
    print("|" + "---|" * 10)
    print(
        "| rate | "
        + " | ".join(f"{pdq_cum[t] / pairs:.1e}" for t in (31, 40, 48, 56, 64, 72, 80, 90, 100))
        + " |"
    )
    print("\n| pHash <= | " + " | ".join(str(t) for t in range(0, 21, 2)) + " |")
    print("|" + "---|" * 12)
    print("| rate | " + " | ".join(f"{phash_cum[t] / pairs:.1e}" for t in range(0, 21, 2)) + " |")

    print(
        "\n## Trade-off: recall per edit against false exclusions per record at 10^6 "
        "(DEFAULT_RULE shifted; records with their PDQ quality; recall calibration / "
        "validation)\n"
    )
    rs = recall_set(args.windows, args.workers)
    cal = rs.split == "calibration"
    shown = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS, "crop_corner_10", "text_large")
    for band, counts in ((False, main_counts), (True, band_counts)):
        if band:
            print("\nThe same, records carrying their band hashes (the band boxes shifted too):\n")
        recall = recall_levels(rs, DEFAULT_RULE, query_quality=True, band=band)
        print(
            "| rule shifted by | false exclusions per record at 1e6 | " + " | ".join(shown) + " |"
        )
        print("|" + "---|" * (2 + len(shown)))
        for level in range(-4, 3):
            expected = estimate(counts, level) / counts.pairs * 1e6
            cells = [
                f"{np.mean(recall[name][cal] <= level):.2f} / "
                f"{np.mean(recall[name][~cal] <= level):.2f}"
                for name in shown
            ]
            print(f"| {level} | {expected:.2g} | " + " | ".join(cells) + " |")
    print(
        f"\n(levels measured {LEVEL_MIN}..{LEVEL_MAX}; total {time.perf_counter() - started:.0f} s)"
    )
    print(
        "\nThese rates are the rule's on PDQ, pHash and band alone. Records as our tools "
        "send them also carry their colour signature and keypoints (optout hash; the "
        "workers wherever a match would check them), which the decision checks too: "
        "`bench_colour.py --windows 4 --per-source 500 --workers 2 --product` and then "
        "`bench_keypoints.py` (with the same --photos) measure the decision with them "
        '(docs/matching.md, "Against the targets").'
    )


if __name__ == "__main__":
    main()
