"""Experiment (not in the product): a luminance layout as the confirming signal
for grey records.

The colour check cannot confirm a black-and-white record: what the product
rule still lets through on package photographs are grey records matching
photos of other content (docs/matching.md, "Colour-confirmed boxes and grey
records"). This measures whether the layout of the luminance — the image in a
4 x 4 grid of area means, z-normalised (minus the mean, over the standard
deviation, floored at 4, 8, 16 or 32 of 255: the higher the floor, the less a
caption on a low-contrast photo moves it) so that brightness and contrast
changes cancel — separates those false pairs from the true pairs of grey records.

Distance between two layouts: the largest, second largest or fourth largest
cell difference of the z-scores, or their mean. Compared only when the record
and the registered variant are both grey (a product would keep the layout in
the grey signatures, whose chroma bytes are empty); a photo of a true pair
stays matched when one accepted variant is within the threshold or not
compared. True pairs: every grey record of a target edit
(benchmarks/edits.py) the product rule matches; false pairs: the grey records
among the cross pairs of ``bench_colour.py`` matched by the product rule
loosened by k = 0..4. The threshold of each distance is the largest true
pair's.

Needs the hashes and product signatures cached by

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 --workers 2 --product

and then (about 40 s on 2 cores):

    .venv/bin/python benchmarks/bench_luma_layout.py [--photos DIR]
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_colour as bc
import corpus
import edits
import matchbench as mb
import numpy as np
from PIL import Image

from optout.matching.rule import DEFAULT_RULE
from registry.hashing import decode
from registry.variants import DEFAULT_VARIANTS, variant_image

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
PER_SOURCE = 500
GREY = 0.01
# Floors of the cells' standard deviation (of 255) the z-scores are measured at.
FLOORS = (4.0, 8.0, 16.0, 32.0)
# A candidate for the product: (floor, distance, threshold) applied to every
# corpus alike (the largest true pair of three corpora, 0.32, plus margin).
FIXED = (16.0, "mean", 0.38)


def layout(image: Image.Image) -> np.ndarray:
    """The 16 cell means of the luminance (z-normalised later, per floor)."""
    grey = image.convert("L").convert("F").resize((4, 4), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float64).reshape(-1)


def z(cells: np.ndarray, floor: float) -> np.ndarray:
    """Minus the mean, over the standard deviation floored at ``floor`` (of 255)."""
    spread = np.maximum(cells.std(axis=-1, keepdims=True), floor)
    return (cells - cells.mean(axis=-1, keepdims=True)) / spread


def _recall(item: tuple[int, Image.Image]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    index, image = item
    rgb = decode(mb.jpeg(image, 95))
    queries = {name: layout(decode(edits.edited_bytes(rgb, name, index))) for name in TARGETS}
    return _registered(rgb), queries


def _registered(rgb: Image.Image) -> np.ndarray:
    return np.stack([layout(variant_image(rgb, name)) for name in DEFAULT_VARIANTS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    corpus.add_argument(parser)
    corpus.apply(parser.parse_args())
    tag = f"w4_p{PER_SOURCE}{corpus.TAG}"
    rs, rsig, reg, qs, pi, pj, preg_sig, pq_sig = bc.load_product_caches(tag)
    with Pool(2) as pool:
        recall = pool.map(_recall, list(enumerate(im for _, im in bc.recall_items(4))))
    lreg, lq = bc.near_pair_features(pi, pj, PER_SOURCE, _registered, layout)

    shift = -DEFAULT_RULE.grey_record_shift
    # False pairs: grey records, product rule levels (grey against colour shifted).
    levels = bc.variant_levels(reg, qs, pi, pj)
    q_colour = np.array([pq_sig[int(j)][bc.COLOURFUL] for j in pj])
    r_colour = np.stack([preg_sig[int(i)][:, bc.COLOURFUL] for i in pi])
    levels = np.where((q_colour < GREY)[:, None] & (r_colour >= 2 * GREY), levels + shift, levels)
    grey_record = q_colour < GREY
    # The product stores a layout in grey signatures only: it is compared
    # when the record and the variant are both grey.
    both_grey = grey_record[:, None] & (r_colour < GREY)
    # True pairs: grey records of the target edits the product rule matches.
    photos = np.arange(len(rs.split))
    registered_colour = np.stack([r for r, _ in rsig])[:, :, bc.COLOURFUL]
    true = []  # (photo's sorted diffs per accepted variant, compared mask, edit, source)
    for name in TARGETS:
        lv = bc.variant_levels(rs.photos, rs.edits[name], photos, photos)
        record_colour = np.stack([qd[name] for _, qd in rsig])[:, bc.COLOURFUL]
        grey = record_colour < GREY
        lv = np.where(grey[:, None] & (registered_colour >= 2 * GREY), lv + shift, lv)
        for n in np.where(grey)[0]:
            accepted = lv[n] <= 0
            if accepted.any():
                pair = (recall[n][0][accepted], recall[n][1][name])
                compared = registered_colour[n] < GREY
                true.append((pair, compared[accepted], name, rs.photos.sources[n]))
    statistics = {
        "largest cell": lambda d: d[..., -1],
        "second largest": lambda d: d[..., -2],
        "fourth largest": lambda d: d[..., -4],
        "mean": lambda d: d.mean(axis=-1),
    }
    print(
        f"{len(true)} true pairs with a grey record matched by the product rule "
        f"({sum(bool(c.any()) for _, c, _, _ in true)} against a grey variant); "
        "grey records' false pairs (layouts compared when both are grey):\n"
    )
    print(
        "| contrast floor | distance | max over true pairs (edit, photo) "
        "| false pairs k = 0..4: product -> with layout at that max |"
    )
    print("|---|---|---|---|")
    for floor in FLOORS:
        false_diffs = np.stack(
            [
                np.sort(np.abs(z(lreg[int(i)], floor) - z(lq[int(j)], floor)[None, :]), axis=1)
                for i, j in zip(pi, pj, strict=True)
            ]
        )  # (pairs, V, 16) ascending
        true_diffs = [
            np.sort(np.abs(z(r, floor) - z(q, floor)[None, :]), axis=1) for (r, q), *_ in true
        ]
        for label, stat in statistics.items():
            # A true photo needs one accepted variant within t (or not compared).
            need = [
                (float(np.where(c, stat(d), 0.0).min()), name, source)
                for d, (_, c, name, source) in zip(true_diffs, true, strict=True)
            ]
            worst = max(need)
            distance = np.where(both_grey, stat(false_diffs), 0.0)
            thresholds = [(worst[0], f"{worst[0]:.2f} ({worst[1]}, {worst[2]})")]
            if (floor, label) == FIXED[:2]:  # one threshold for every corpus
                lost = sum(t > FIXED[2] for t, _, _ in need)
                thresholds.append((FIXED[2], f"fixed {FIXED[2]:g}: {lost} true photos lost"))
            for threshold, described in thresholds:
                cells = []
                for k in range(5):
                    before = int(np.sum(np.any(levels <= k, axis=1) & grey_record))
                    within = (levels <= k) & (distance <= threshold)
                    after = int(np.sum(np.any(within, axis=1) & grey_record))
                    cells.append(f"{before} -> {after}")
                print(f"| {floor:g} | {label} | {described} | {', '.join(cells)} |")


if __name__ == "__main__":
    main()
