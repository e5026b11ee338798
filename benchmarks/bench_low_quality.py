"""Experiment: what may a featureless image (PDQ quality < 50) match?

A pair whose registered variant or record is of low PDQ quality (flat colour,
sky, blur) matches only inside the rule's low-quality boxes: the photo and its
mirror image within (PDQ 24, pHash 4), a crop or rotation within (4, 0). Two
distinct blue skies can sit that close in every signal: on 45 real
photographs (docs/matching.md, "A third outside check") a patch of one sky
matched a crop of another, their colours 15.2 a*b* apart — inside the veto.
This measures, on the product's hashes and colour signatures (the caches of
``bench_colour.py --product``), the false pairs and the recall per edit when a
low-quality pair

- ``veto only``: is held to the colour veto like any pair (until 2026-11-27);
- ``no derived``: matches only the photo and its mirror image;
- ``colours agree``: matches only when both carry colours that agree within
  ``COLOUR_CONFIRM_THRESHOLD`` (a grey record cannot confirm); ``…,
  registered low`` / ``…, both low``: the same only when the registered side
  / both sides are of low quality;
- ``closer veto`` (the product on 2026-11-27; this script leaves out the
  luminance-layout check of grey pairs built after it): when both carry colour
  evidence, the colours must agree within ``COLOUR_CONFIRM_THRESHOLD``; a
  grey record (no colour evidence) keeps the low-quality boxes alone;
- ``closer veto, faint colours refused`` (the product since 2026-11-27,
  ``registry.colour.faint_colour``): as ``closer veto``, but a pair where
  either side's colours are faint (colourfulness 0.010-0.020: its a*b*
  near zero, so "agreeing" colours say little) does not match;
- ``clearly colourful and agreeing``: only when both sides are clearly colourful
  (>= 0.020) and their colours agree within ``COLOUR_CONFIRM_THRESHOLD``;
- ``never``: never matches perceptually (SHA-256 only).

Needs the caches of

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 \
        --workers 2 --product [--photos DIR]

then (seconds):

    .venv/bin/python benchmarks/bench_low_quality.py [--photos DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_colour as bc
import corpus
import edits
import numpy as np

from optout.matching.rule import DEFAULT_RULE
from registry.colour import COLOUR_CONFIRM_THRESHOLD, COLOUR_THRESHOLD
from registry.variants import variant_kind

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
GREY = 0.01
POLICIES = (
    "veto only",
    "no derived",
    "colours agree",
    "colours agree, registered low",
    "colours agree, both low",
    "closer veto",
    "closer veto, faint colours refused",
    "clearly colourful and agreeing",
    "never",
)


def accepted(
    policy: str,
    k: int,
    levels: np.ndarray,
    levels_c: np.ndarray,
    distance: np.ndarray,
    q_colour: np.ndarray,
    r_colour: np.ndarray,
    low_registered: np.ndarray,
    low_record: np.ndarray,
    derived: np.ndarray,
) -> np.ndarray:
    """(pairs, V): the product rule shifted by k, with the policy for low-quality pairs."""
    rule = DEFAULT_RULE
    low = low_registered | low_record
    grey_record = (q_colour < GREY)[:, None]
    stricter = grey_record & (r_colour >= 2 * GREY)
    levels_g = np.where(stricter, levels - rule.grey_record_shift, levels)
    veto = bc.colour_pass(distance, q_colour, r_colour, COLOUR_THRESHOLD, GREY)
    agree = bc.colour_pass(distance, q_colour, r_colour, COLOUR_CONFIRM_THRESHOLD, GREY)
    agree &= ~grey_record
    out = ((levels_g <= k) & veto) | ((levels_c <= k) & agree)
    if policy == "no derived":
        out &= ~(low & derived)
    elif policy == "colours agree":
        out &= ~low | agree
    elif policy == "colours agree, registered low":
        out &= ~low_registered | agree
    elif policy == "closer veto":  # colour pairs agree closely; grey pairs as now
        out &= ~low | agree | grey_record
    elif policy == "closer veto, faint colours refused":
        out &= ~low | ((agree | grey_record) & ~bc.faint_pair(q_colour, r_colour, GREY))
    elif policy == "clearly colourful and agreeing":
        out &= ~low | (agree & (q_colour >= 2 * GREY)[:, None] & (r_colour >= 2 * GREY))
    elif policy == "colours agree, both low":
        out &= ~(low_registered & low_record) | agree
    elif policy == "never":
        out &= ~low
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    tag = f"w4_p500{corpus.TAG}"
    rs, rsig, reg, qs, pi, pj, preg_sig, pq_sig = bc.load_product_caches(tag)
    rule = DEFAULT_RULE
    confirmed = rule.confirmed_only()
    minq = rule.min_quality
    derived = np.array([variant_kind(n) not in rule.low_quality_kinds for n in reg.names])

    # False pairs (every cross pair at the rule shifted by <= 6 is enumerated;
    # the confirmed boxes lie within 2 steps, so k <= 4 is complete).
    levels = bc.variant_levels(reg, qs, pi, pj)
    levels_c = bc.variant_levels(reg, qs, pi, pj, rule=confirmed)
    fq = np.stack([pq_sig[int(j)] for j in pj])
    fr = np.stack([preg_sig[int(i)] for i in pi])
    distance = bc.pair_distances("lab-ab4x4-max", fq, fr)
    q_colour, r_colour = fq[:, bc.COLOURFUL], fr[:, :, bc.COLOURFUL]
    low_reg = reg.quality[pi] < minq
    low_rec = np.broadcast_to((qs.quality[pj] < minq)[:, None], low_reg.shape)
    low = low_reg | low_rec
    colour_record = q_colour >= GREY

    # True pairs: each edit of each photo against its own variants.
    photo = np.arange(len(rs.split))
    reg_sig = np.stack([r for r, _ in rsig])
    true = {}
    for name in TARGETS:
        qsig = np.stack([qd[name] for _, qd in rsig])
        true[name] = (
            bc.variant_levels(rs.photos, rs.edits[name], photo, photo),
            bc.variant_levels(rs.photos, rs.edits[name], photo, photo, rule=confirmed),
            bc.pair_distances("lab-ab4x4-max", qsig, reg_sig),
            qsig[:, bc.COLOURFUL],
            reg_sig[:, :, bc.COLOURFUL],
            rs.photos.quality < minq,
            np.broadcast_to((rs.edits[name].quality < minq)[:, None], rs.photos.quality.shape),
        )
    low_photos = rs.photos.quality[:, 0] < minq

    print(
        f"{len(set(reg.sources))} sources; {len(rs.split)} recall photos "
        f"({int(low_photos.sum())} of PDQ quality < {minq}); {len(pi)} near cross pairs\n"
    )
    print(
        "| low-quality pairs | all records, false pairs k = 0..4 | colour records | "
        "of them low-quality at k = 4 | " + " | ".join(TARGETS) + " |"
    )
    print("|---|---|---|---|" + "---|" * len(TARGETS))
    for policy in POLICIES:
        counts, colour_counts = [], []
        for k in range(5):
            hit = np.any(
                accepted(
                    policy,
                    k,
                    levels,
                    levels_c,
                    distance,
                    q_colour,
                    r_colour,
                    low_reg,
                    low_rec,
                    derived,
                ),
                axis=1,
            )
            counts.append(int(hit.sum()))
            colour_counts.append(int((hit & colour_record).sum()))
        at4 = accepted(
            policy, 4, levels, levels_c, distance, q_colour, r_colour, low_reg, low_rec, derived
        )
        low_at4 = int(np.sum(np.any(at4 & low, axis=1)))
        recalls = []
        for name in TARGETS:
            lv, lvc, d, qc, rc, low_r, low_q = true[name]
            hit = np.any(accepted(policy, 0, lv, lvc, d, qc, rc, low_r, low_q, derived), axis=1)
            recalls.append(f"{hit.mean():.2f}")
        print(
            f"| {policy} | {' / '.join(map(str, counts))} | {' / '.join(map(str, colour_counts))} "
            f"| {low_at4} | " + " | ".join(recalls) + " |"
        )
    print("\n(recall: records with their quality and colour signature, all photos)")


if __name__ == "__main__":
    main()
