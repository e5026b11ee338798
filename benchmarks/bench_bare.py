"""Bare records (PDQ and pHash without the PDQ quality): which rule?

The API contract's record is `{"pdq": …, "phash": …}`; a pipeline that does
not send `pdq_quality` leaves the registry blind to featureless records (sky,
flat colour, gradients), the ones the quality gate keeps from deciding alone.
The product judges bare records by ``UNKNOWN_QUALITY_RULE`` (the rule two
steps stricter), which costs recall on captions, crops and resizes. This
measures the alternatives on the same hashes, false pairs and recall:

- ``default``: the rule's own boxes, as if every record were of good quality;
- ``shift -1``, ``shift -2`` (the product until now): the rule stricter;
- ``variant >= Q``: the rule's own boxes when the *registered* variant's PDQ
  quality is at least Q, two steps stricter otherwise — a true copy of a
  textured photo is textured, while a featureless record fooling the hashes
  mostly meets registered photos that are smooth themselves.

A pair's level under each policy is taken per variant from the rule's
per-variant levels (``bench_colour.variant_levels`` with the record's quality
unknown): the rule shifted by k is matched at level <= k. False pairs: the
cross pairs of ``matchbench.precision_corpus``, estimated at k = 0 by the
tail fit of ``bench_colour.fit_at_zero``; recall: ``matchbench.recall_set``.

Last, whether the hashes themselves betray a featureless record (so that a
bare record's quality could be inferred): classifiers on the PDQ and pHash
bits (logistic regression, gradient-boosted trees; scikit-learn) trained on
the calibration half's records and scored on the validation half's.

    .venv/bin/python benchmarks/bench_bare.py --workers 2 [--photos DIR]
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

from optout.matching.rule import DEFAULT_RULE

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
KMAX = 6


def bare_levels(reg, qs, pi, pj):  # type: ignore[no-untyped-def]
    """(pairs, V) levels of DEFAULT_RULE with the record's quality unknown."""
    return bc.variant_levels(reg, qs, pi, pj, query_quality=False)


def policy_levels(levels: np.ndarray, quality: np.ndarray, policy: tuple) -> np.ndarray:  # type: ignore[type-arg]
    kind, value = policy
    if kind == "shift":
        return levels - value
    if kind == "variant":
        return np.where(quality >= value, levels, levels + 2)
    # "graded": value = (q0, q1): own boxes at >= q0, one step stricter at >= q1, else two
    q0, q1 = value
    return np.where(quality >= q0, levels, np.where(quality >= q1, levels + 1, levels + 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--per-source", type=int, default=500)
    parser.add_argument("--workers", type=int, default=mb.default_workers())
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    started = time.perf_counter()
    tag = f"w{args.windows}_p{args.per_source}{corpus.TAG}"
    rs = bc.cached(f"recall_hashes_{tag}.pkl", lambda: mb.recall_set(args.windows, args.workers))
    reg, qs = bc.cached(
        f"precision_hashes_{tag}.pkl", lambda: mb.precision_corpus(args.per_source, args.workers)
    )
    rsrc, qsrc = mb._source_ids(reg, qs)
    # Every policy is at most two steps stricter than the rule's own boxes, so
    # the pairs of the rule (record quality unknown) up to KMAX hold each
    # policy's pairs up to KMAX - 2.
    pi, pj, _ = bc.cached(
        f"near_pairs_{tag}_bare_k{KMAX}.pkl",
        lambda: mb.near_pairs(reg, qs, DEFAULT_RULE, "both", False, KMAX),
    )
    pairs_total = int(sum(np.sum(rsrc == s) * np.sum(qsrc != s) for s in np.unique(rsrc)))
    levels = bare_levels(reg, qs, pi, pj)
    quality = reg.quality[pi]  # (pairs, V) the registered variants' PDQ quality
    record_low = qs.quality[pj] < DEFAULT_RULE.min_quality
    photo = np.arange(len(rs.split))
    true = {name: bare_levels(rs.photos, rs.edits[name], photo, photo) for name in rs.edits}
    true_quality = rs.photos.quality
    cal = rs.split == "calibration"
    print(
        f"{len(rs.split)} recall photos, {len(reg.sources)} patches of "
        f"{len(set(reg.sources))} sources, {pairs_total:.3g} cross pairs, "
        f"{len(pi)} near pairs ({time.perf_counter() - started:.0f} s)\n"
    )
    policies = [
        ("default boxes", ("shift", 0)),
        ("shift -1", ("shift", -1)),
        ("shift -2 (UNKNOWN_QUALITY_RULE)", ("shift", -2)),
        *[
            (f"own boxes when the variant's quality >= {q}", ("variant", q))
            for q in (60, 70, 80, 90, 100)
        ],
        ("own boxes at quality 100, one step stricter at >= 80", ("graded", (100, 80))),
        ("own boxes at quality 100, one step stricter at >= 50", ("graded", (100, 50))),
        ("own boxes at >= 90, one step stricter at >= 70", ("graded", (90, 70))),
    ]
    kmax = KMAX - 2
    print(
        f"| bare-record policy | false pairs, k = 0..{kmax} | of them flat records at k={kmax} "
        "| per record at 1e6 (fit) | " + " | ".join(TARGETS) + " |"
    )
    print("|---|---|---|---|" + "---|" * len(TARGETS))
    for label, policy in policies:
        lv = policy_levels(levels, quality, policy)
        counts = {k: int(np.sum(np.any(lv <= k, axis=1))) for k in range(kmax + 1)}
        flat = int(np.sum(np.any(lv <= kmax, axis=1) & record_low))
        estimate = bc.fit_at_zero(counts, range(1, kmax + 1))
        rough = ""
        if np.isnan(estimate):
            estimate, rough = bc.fit_at_zero(counts, range(1, kmax + 1), minimum=1), " (rough)"
        recalls = []
        for name in TARGETS:
            hit = np.any(policy_levels(true[name], true_quality, policy) <= 0, axis=1)
            recalls.append(f"{hit[cal].mean():.2f}/{hit[~cal].mean():.2f}")
        print(
            f"| {label} | {' / '.join(str(counts[k]) for k in range(kmax + 1))} | {flat} "
            f"| {estimate / pairs_total * 1e6:.2g}{rough} | " + " | ".join(recalls) + " |"
        )
    print(
        "\n(recall: calibration / validation half, all photos, flat ones included; "
        f"flat records: PDQ quality < {DEFAULT_RULE.min_quality})\n"
    )
    print("False pairs of the rule's own boxes at k = 0 (registered -> record):")
    for c in np.where(levels.min(axis=1) <= 0)[0]:
        i, j, v = int(pi[c]), int(pj[c]), int(np.argmin(levels[c]))
        print(
            f"- {reg.sources[i]} ({reg.names[v]}, quality {reg.quality[i, v]}) -> "
            f"{qs.sources[j]} (record quality {qs.quality[j]})"
        )
    quality_from_bits(qs)
    print(f"\n({time.perf_counter() - started:.0f} s)")


def quality_from_bits(qs) -> None:  # type: ignore[no-untyped-def]
    """Can a record's PDQ and pHash bits tell that it is featureless?"""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def bits(words: np.ndarray) -> np.ndarray:
        raw = words.astype(">u8").view(np.uint8).reshape(len(words), -1)
        return np.unpackbits(raw, axis=1)

    features = np.hstack([bits(qs.pdq), bits(qs.phash[:, None])]).astype(np.float32)
    flat = qs.quality < DEFAULT_RULE.min_quality
    train = np.isin(np.array(qs.sources), list(corpus.CALIBRATION))
    print(
        f"\nFeatureless records (PDQ quality < {DEFAULT_RULE.min_quality}) told from their "
        f"bits: trained on {int(train.sum())} records, scored on {int((~train).sum())} "
        f"({int(flat[~train].sum())} featureless)\n"
    )
    print("| classifier | AUC | textured records flagged when 95 % / 99 % of the featureless are |")
    print("|---|---|---|")
    models = {
        "logistic regression": LogisticRegression(C=0.1, max_iter=2000),
        "gradient-boosted trees": HistGradientBoostingClassifier(max_iter=300, random_state=0),
    }
    truth = flat[~train]
    for label, model in models.items():
        model.fit(features[train], flat[train])
        score = model.predict_proba(features[~train])[:, 1]
        shares = []
        for catch in (0.95, 0.99):
            cut = np.quantile(score[truth], 1 - catch)
            shares.append(f"{np.mean(score[~truth] >= cut):.2f}")
        print(f"| {label} | {roc_auc_score(truth, score):.2f} | {' / '.join(shares)} |")


if __name__ == "__main__":
    main()
