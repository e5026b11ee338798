"""The geometric check of the product (registry/keypoints.py, the rule's
``keypoint_inliers``; docs/matching.md, "Keypoints: the geometric check"),
measured on the calibration corpus.

Every confirming signal measured before it for grey records (the 4 x 4
layout, a second view, the texture) describes the photo as a whole, like PDQ
and pHash do, and is fooled by the same false pairs: photos of similar
layout. Keypoints are a signal of another kind: ORB corners of the luminance
at 256 px, matched between the record and the registered photo (and its
mirror image), counted only when they agree on one similarity transform
(RANSAC). Two different photographs rarely share many corners in the same
arrangement; an edited copy keeps most of them.

Reported, with the product's own keypoints and inliers:

- the inliers of random cross pairs of patches of different photographs
  (``--random N``), whatever their hashes;
- for grey records (the edited copy is grey) and colour records: the false
  pairs the product rule accepts shifted looser by k = 0..6 (``--kmax``; cross
  pairs of ``bench_colour.py``), the share of them reaching the product's
  threshold for the record (``MatchRule.keypoints_needed``: 8 for a colourful
  record, 10 for a grey or faint one) with its 95 % upper bound (the factor
  the check applies to the estimate without it), and, for thresholds on
  the inliers and for a minimum number of keypoints below which a side
  would pass unchecked (``keypoint_min``; the product has none), the false
  pairs left and the recall per target edit among the true pairs the rule
  matches;
- the estimate per record at 10^6 photos with the check: the estimate
  without it times that bound.

Needs the caches of

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 --workers 2 --product

and then

    .venv/bin/python benchmarks/bench_keypoints.py [--photos DIR]

(``--per-source N`` on both for a folder of many photographs, where 500
patches of each would take hours; ``--kmax K`` on both for more false
pairs: at K = 7 about 11 times the near pairs of K = 6 and 2 GB of memory;
K = 8 needs more than 24 GB.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_colour as bc
import corpus
import edits
import matchbench as mb
import numpy as np
from PIL import Image
from scipy.stats import beta

from optout.matching.rule import (
    DEFAULT_RULE,
    GREY_KEYPOINT_INLIERS,
    KEYPOINT_INLIERS,
    QueryHashes,
)
from registry import keypoints

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
PER_SOURCE = 500
GREY = 0.01
KMAX = 6
# The tail levels the estimate without the check is fitted to.
FIT_KMAX = 4
THRESHOLDS = (5, 6, 7, 8, 10, 12)
# The rule's keypoint_min tried: below it on either side the check leaves
# the rule's decision as it is.
MINIMA = (0, 8, 16)
FEATURES_MAX = keypoints.FEATURES


def registered_keypoints(rgb: Image.Image) -> bytes:
    return keypoints.photo_keypoints_of(rgb)


def record_keypoints(rgb: Image.Image) -> bytes:
    return keypoints.keypoints_of(rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    corpus.add_argument(parser)
    parser.add_argument(
        "--random",
        type=int,
        default=100_000,
        help="random cross pairs whose inliers to count (0: none; about 1.5 ms each)",
    )
    parser.add_argument(
        "--kmax",
        type=int,
        default=KMAX,
        help="false pairs up to this many steps looser than the rule (bench_colour.py's "
        "--kmax: its caches for that level)",
    )
    parser.add_argument(
        "--per-source",
        type=int,
        default=PER_SOURCE,
        help="patches per source photo (bench_colour.py's --per-source: its caches for that size)",
    )
    args = parser.parse_args()
    kmax = args.kmax
    per_source = args.per_source
    corpus.apply(args)
    tag = f"w4_p{per_source}{corpus.TAG}"
    rs, rsig, reg, qs, pi, pj, preg_sig, pq_sig = bc.load_product_caches(tag, kmax)
    started = time.perf_counter()
    recall = bc.recall_features(registered_keypoints, record_keypoints, TARGETS)
    kreg, kq = bc.near_pair_features(pi, pj, per_source, registered_keypoints, record_keypoints)
    print(f"keypoints computed in {time.perf_counter() - started:.0f} s", flush=True)

    levels_f = bc.variant_levels(reg, qs, pi, pj)
    fq = np.stack([pq_sig[int(j)] for j in pj])
    fr = np.stack([preg_sig[int(i)] for i in pi])
    fd = bc.pair_distances("lab-ab4x4-max", fq, fr)
    pa = bc.product_accept(reg, qs, pi, pj, levels_f, fd, fq, fr, GREY)
    alive = [np.any(pa.variants(k), axis=1) for k in range(kmax + 1)]
    candidates = np.flatnonzero(alive[kmax])
    started = time.perf_counter()
    f_in = np.zeros(len(pi), int)
    for p in candidates:
        f_in[p] = keypoints.inliers(kq[int(pj[p])], kreg[int(pi[p])])
    print(
        f"{len(candidates)} false pairs up to k = {kmax} verified in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )

    # The fewer keypoints of the two sides (the rule's keypoint_min).
    f_min = np.full(len(pi), FEATURES_MAX, int)
    for p in candidates:
        f_min[p] = min(keypoints.count(kq[int(pj[p])]), keypoints.count(kreg[int(pi[p])]))

    if args.random:
        _random_pairs(kreg, kq, args.random, per_source)

    photos = np.arange(len(rs.split))
    # Per target edit: (grey record, inliers, fewer keypoints of the two sides,
    # the inliers the product needs for the record, whether the registered
    # photo is above the rule's quality gate — featureless photos are outside
    # the recall targets: docs/matching.md, "Outside the calibration set").
    true: dict[str, list[tuple[bool, int, int, int, bool]]] = {name: [] for name in TARGETS}
    for name in TARGETS:
        lv = bc.variant_levels(rs.photos, rs.edits[name], photos, photos)
        for n in photos:
            if (lv[n] <= 0).any():
                signature = rsig[n][1][name]
                q, r = recall[n][1][name], recall[n][0]
                fewer = min(keypoints.count(q), keypoints.count(r))
                true[name].append(
                    (
                        bool(signature[bc.COLOURFUL] < GREY),
                        keypoints.inliers(q, r),
                        fewer,
                        _needed(signature),
                        bool(rs.photos.quality[n, 0] >= DEFAULT_RULE.min_quality),
                    )
                )

    # The check reads the luminance only: every false pair the rule accepts,
    # grey record or colour, is a trial of it, at either threshold.
    total = len(candidates)
    every_bounds = {}
    for needed in (KEYPOINT_INLIERS, GREY_KEYPOINT_INLIERS):
        kept = int(np.sum(f_in[candidates] >= needed))
        every_bounds[needed] = _upper(kept, total)
        print(
            f"every record: {kept} of the {total} false pairs up to k = {kmax} reach "
            f"{needed} inliers, a share of at most {every_bounds[needed]:.2g} (95 %)"
        )
    # What the product needs of each pair's record.
    f_need = np.array([_needed(pq_sig[j]) for j in range(len(qs.sources))])[pj]

    rsrc, qsrc = mb._source_ids(reg, qs)
    q_grey = np.array([pq_sig[j][bc.COLOURFUL] < GREY for j in range(len(qs.sources))])
    colour_pairs = int(sum(np.sum(rsrc != qsrc[j]) for j in np.flatnonzero(~q_grey)))
    pairs_total = int(sum(np.sum(rsrc == s) * np.sum(qsrc != s) for s in np.unique(rsrc)))
    estimates = []
    for label, is_grey in (("grey", True), ("colour", False)):
        record = pa.fq_skip if is_grey else ~pa.fq_skip
        before = [int(np.sum(alive[k] & record)) for k in range(kmax + 1)]
        counts = {name: sum(pair[0] == is_grey for pair in true[name]) for name in TARGETS}
        print(
            f"\n## {label} records: false pairs k = 0..{kmax} without the check: "
            + "/".join(map(str, before))
        )
        print("true pairs matched by the rule: " + ", ".join(f"{n} {c}" for n, c in counts.items()))
        false_in = f_in[record & alive[kmax]]
        print(
            f"false-pair inliers: max {false_in.max() if false_in.size else 0}, "
            f"histogram {np.bincount(false_in).tolist() if false_in.size else []}"
        )
        total = int(np.sum(record & alive[kmax]))
        kept = int(np.sum(record & alive[kmax] & (f_in >= f_need)))
        bound = _upper(kept, total)
        # The threshold the product holds most of this kind's records to.
        needed = GREY_KEYPOINT_INLIERS if is_grey else KEYPOINT_INLIERS
        every_bound = every_bounds[needed]
        _recall_line(
            "recall among the true pairs the rule matches, the product's check",
            {n: [i >= t for g, i, _, t, _ in true[n] if g == is_grey] for n in TARGETS},
        )
        _recall_line(
            "the same, photos above the quality gate only",
            {n: [i >= t for g, i, _, t, a in true[n] if g == is_grey and a] for n in TARGETS},
        )
        pairs = pairs_total - colour_pairs if is_grey else colour_pairs
        # Fitted like bench_colour.py's product table: levels 1..4.
        fitted, rough = bc._tail_fit(dict(enumerate(before)), FIT_KMAX)
        estimates.append((label, pairs, before, fitted / pairs * 1e6, rough, every_bound, bound))
        print(
            f"the product's check (at least {needed}; {KEYPOINT_INLIERS} for a colourful "
            f"record): {kept} of the {total} false pairs up to k = {kmax} pass, a share of "
            f"at most {bound:.2g} (95 %): the estimate "
            "without the check times this bounds the estimate with it"
        )
        print(
            f"\n| inliers ≥ | keypoint_min | false pairs k = 0..{kmax} | lowest recall (edit) "
            "| recall below 0.95 |"
        )
        print("|---|---|---|---|---|")
        for t in THRESHOLDS:
            for least in MINIMA:
                passed = (f_in >= t) | (f_min < least)
                after = [int(np.sum(alive[k] & record & passed)) for k in range(kmax + 1)]
                rates = {
                    name: float(
                        np.mean(
                            [i >= t or f < least for g, i, f, _, _ in true[name] if g == is_grey]
                        )
                    )
                    for name in TARGETS
                    if counts[name]
                }
                low = min(rates, key=rates.get) if rates else "-"
                below = ", ".join(f"{n} {r:.2f}" for n, r in rates.items() if r < 0.95) or "none"
                print(
                    f"| {t} | {least} | {'/'.join(map(str, after))} | "
                    f"{rates.get(low, 0):.2f} ({low}) | {below} |",
                    flush=True,
                )
    _summary(estimates, kmax)


def _summary(
    estimates: list[tuple[str, int, list[int], float, bool, float, float]], kmax: int
) -> None:
    """The product's decision for records carrying keypoints (what the workers
    send wherever the check could apply, and ``optout hash``): the estimate
    without the check, fitted to the product rule's tail as bench_colour.py's
    product table fits it (colour, no band), times the 95 % bound of the
    share of false pairs the check lets through — of every record's false
    pairs (the check reads the luminance only), and of this kind's alone."""
    print(
        "\n## False exclusions per record at 10^6 photos, records with keypoints\n\n"
        f"| record | cross pairs | false pairs k = 0..{kmax} without the check | estimate "
        f"without the check (tail fit, k = 1..{FIT_KMAX}) | with the check: x the bound "
        "from every record's false pairs | x the bound from this kind's only |"
        "\n|---|---|---|---|---|---|"
    )
    for label, pairs, before, estimate, rough, every_bound, bound in estimates:
        fit = "- (too few pairs to fit)" if np.isnan(estimate) else f"{estimate:.2g}"
        fit += " (rough: fit through 1-4 pairs)" if rough else ""
        cells = [
            "-" if np.isnan(estimate) else f"{estimate * b:.2g} ({b:.2g})"
            for b in (every_bound, bound)
        ]
        print(
            f"| {label} | {pairs:.3g} | {'/'.join(map(str, before))} | {fit} | "
            f"**{cells[0]}** | {cells[1]} |"
        )


def _needed(signature: np.ndarray) -> int:
    """The agreeing keypoints the product needs of a record with this
    signature (``MatchRule.keypoints_needed`` on its product colour)."""
    return DEFAULT_RULE.keypoints_needed(QueryHashes(colour=bc._product_hex(signature)))


def _recall_line(title: str, passed: dict[str, list[bool]]) -> None:
    """Print per target edit the share of its true pairs that pass, and the lowest."""
    rates = {name: float(np.mean(p)) for name, p in passed.items() if p}
    if not rates:
        return
    low = min(rates, key=rates.get)
    print(
        f"{title} ({sum(map(len, passed.values()))} pairs): lowest {rates[low]:.2f} ({low}); "
        + ", ".join(f"{n} {r:.2f}" for n, r in rates.items())
    )


def _upper(kept: int, total: int) -> float:
    """One-sided 95 % upper bound of a rate, ``kept`` of ``total`` observed
    (Clopper-Pearson; about 3 / total when none)."""
    return float(beta.ppf(0.95, kept + 1, total - kept)) if total else float("nan")


def _random_pairs(kreg: dict, kq: dict, count: int, per_source: int) -> None:
    """Random cross pairs (patches of different sources) among those
    computed: how often two unrelated pieces of content reach each count of
    inliers, whatever their hashes."""
    rng = np.random.default_rng(0)
    reg_ids = np.array(sorted(kreg))
    q_ids = np.array(sorted(kq))
    started = time.perf_counter()
    found = []
    while len(found) < count:
        i, j = int(rng.choice(reg_ids)), int(rng.choice(q_ids))
        if i // per_source != j // per_source:
            found.append(keypoints.inliers(kq[j], kreg[i]))
    hist = np.bincount(found)
    print(
        f"{count} random cross pairs in {time.perf_counter() - started:.0f} s: "
        f"inliers histogram {hist.tolist()}; at least "
        + ", ".join(f"{t}: {int(hist[t:].sum())}" for t in THRESHOLDS),
        flush=True,
    )


if __name__ == "__main__":
    main()
