"""Experiment (not in the product): the texture of a grey photo as the
confirming signal for grey records against grey registered photos.

Grey records meet black-and-white registered photos of similar layout
(docs/matching.md, "Against the targets"): PDQ, pHash and the 4 x 4 layout
all describe the low frequencies. This measures whether descriptors of the
photo's *texture* — what its edges and fine detail look like, not where its
light and dark parts are — tell those false pairs from the true ones. Each is
computed on the luminance at a fixed working size (128 x 128), compared by L1
distance, and only between a grey record and a grey registered variant (the
spare bytes of a grey signature could hold it):

- ``orient``: the gradient orientation histogram (8 bins over 0-180 degrees,
  weighted by gradient magnitude, summing to 1);
- ``scales``: the share of detail energy at each of 5 scales (a box pyramid
  128 -> 4, summing to 1);
- ``sparsity``: the share of gradient magnitude carried by the strongest 5 %
  and 20 % of pixels;
- combinations (sum of the L1 distances).

Thresholds: the largest over the true pairs (each (target edit, grey photo)
pair the rule's boxes match keeps one accepted grey variant within it), and
the 99th percentile for comparison. False pairs: grey records of the cross
pairs of ``bench_colour.py`` accepted by the product rule shifted by k.

Needs the caches of

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 --workers 2 --product

and then

    .venv/bin/python benchmarks/bench_texture.py [--photos DIR]
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
from PIL import Image

from registry.variants import DEFAULT_VARIANTS, variant_image

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
PER_SOURCE = 500
GREY = 0.01
KMAX = 4
SIZE = 128
PARTS = {
    "orient": slice(0, 8),
    "scales": slice(8, 13),
    "sparsity": slice(13, 15),
    "detail": slice(15, 31),
    "fine": slice(31, 47),
}
COMBOS = {
    "orient": ("orient",),
    "scales": ("scales",),
    "sparsity": ("sparsity",),
    "orient+scales": ("orient", "scales"),
    "all": ("orient", "scales", "sparsity"),
    "detail": ("detail",),
    "fine": ("fine",),
    "detail+fine": ("detail", "fine"),
}


def _cell_map(values: np.ndarray) -> np.ndarray:
    """(16,) z-scores of the log mean of ``values`` over a 4 x 4 grid."""
    h, w = values.shape
    cells = np.log(values.reshape(4, h // 4, 4, w // 4).mean(axis=(1, 3)).ravel() + 1e-3)
    return (cells - cells.mean()) / max(float(cells.std()), 0.25) / 16


def texture(image: Image.Image) -> np.ndarray:
    """(15,) the descriptors of an image's luminance (see the module doc)."""
    g = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX), np.float64)
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((angle / np.pi * 8).astype(int), 7)
    total = mag.sum() or 1.0
    orient = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=8) / total
    energies, level = [], g
    for _ in range(5):
        h, w = level.shape
        coarse = level.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        detail = level - np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
        energies.append(float((detail**2).mean()))
        level = coarse
    e = np.array(energies)
    scales = e / (e.sum() or 1.0)
    ordered = np.sort(mag.ravel())[::-1]
    n = ordered.size
    sparsity = np.array([ordered[: n // 20].sum(), ordered[: n // 5].sum()]) / total
    # Where the detail is: the gradient energy per cell, and the finest
    # scale's detail energy per cell.
    fine = g - np.repeat(
        np.repeat(g.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3)), 2, 0), 2, 1
    )
    return np.concatenate([orient, scales, sparsity, _cell_map(mag**2), _cell_map(fine**2)])


def registered_textures(rgb: Image.Image) -> np.ndarray:
    return np.stack([texture(variant_image(rgb, name)) for name in DEFAULT_VARIANTS])


def distance(record: np.ndarray, variants: np.ndarray, parts: tuple[str, ...]) -> np.ndarray:
    return sum(
        np.abs(record[..., None, PARTS[p]] - variants[..., PARTS[p]]).sum(axis=-1) for p in parts
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    tag = f"w4_p{PER_SOURCE}{corpus.TAG}"
    rs, rsig, reg, qs, pi, pj, preg_sig, pq_sig = bc.load_product_caches(tag)
    recall = bc.recall_features(registered_textures, texture, TARGETS)
    treg, tq = bc.near_pair_features(pi, pj, PER_SOURCE, registered_textures, texture)

    levels_f = bc.variant_levels(reg, qs, pi, pj)
    fq = np.stack([pq_sig[int(j)] for j in pj])
    fr = np.stack([preg_sig[int(i)] for i in pi])
    fd = bc.pair_distances("lab-ab4x4-max", fq, fr)
    pa = bc.product_accept(reg, qs, pi, pj, levels_f, fd, fq, fr, GREY)
    grey_pair = pa.fq_skip[:, None] & (pa.fr_colour < GREY)  # (pairs, V): compared
    grey_record = pa.fq_skip
    fq_t = np.stack([tq[int(j)] for j in pj])
    fr_t = np.stack([treg[int(i)] for i in pi])

    # True pairs: grey records (the edited photo is grey) against grey variants.
    photos = np.arange(len(rs.split))
    true = []
    for name in TARGETS:
        lv = bc.variant_levels(rs.photos, rs.edits[name], photos, photos)
        for n in photos:
            accepted = lv[n] <= 0
            grey_v = rsig[n][0][:, bc.COLOURFUL] < GREY
            if accepted.any() and rsig[n][1][name][bc.COLOURFUL] < GREY:
                true.append((recall[n][1][name], recall[n][0], accepted, grey_v, name, n))
    print(f"{len(true)} true (target edit, grey photo) pairs matched by the boxes; grey records:")
    before = [int(np.sum(np.any(pa.variants(k), axis=1) & grey_record)) for k in range(KMAX + 1)]
    print(f"false pairs k = 0..{KMAX} before: {'/'.join(map(str, before))}\n")
    print("| descriptor | threshold max (edit, photo) | after | threshold p99 | after |")
    print("|---|---|---|---|---|")
    for label, parts in COMBOS.items():
        needed = []
        for q, r, accepted, grey_v, name, n in true:
            d = distance(q, r, parts)
            d = np.where(grey_v, d, 0.0)  # not compared: passes
            needed.append((float(d[accepted].min()), name, n))
        worst = max(needed)
        p99 = float(np.quantile([x for x, _, _ in needed], 0.99))
        fdist = distance(fq_t, fr_t, parts)  # (pairs, V)
        cells = [f"{worst[0]:.3f} ({worst[1]}, {worst[2]})"]
        for t in (worst[0], p99):
            ok = ~grey_pair | (fdist <= t)
            after = [
                int(np.sum(np.any(pa.variants(k) & ok, axis=1) & grey_record))
                for k in range(KMAX + 1)
            ]
            cells.append("/".join(map(str, after)))
            if t == worst[0]:
                cells.append(f"{p99:.3f}")
        print(f"| {label} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
