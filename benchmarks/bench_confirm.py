"""Experiment (not in the product): a second view of the photo as the
confirming signal for records whose colour cannot confirm a match.

The colour check confirms colour records; what stays far from the step-3b
target are grey records and records sent without colour (docs/matching.md,
"Against the targets"). PDQ and pHash both hash the whole image's low
frequencies, so two distinct photos of similar layout fool both at once. This
measures whether the hashes of a second view of the photo — computed on the
record and on each registered variant image, compared only when both views
are of PDQ quality >= the rule's gate — tell those false pairs from the true
ones:

- ``band``: the middle band (``registry.hashing.band_of``: the image without
  the top and bottom 15 % of its height), which records from our tools
  already carry; here computed per registered variant too;
- ``centre``: the central half of the width and height (a quarter of the
  area, at twice the scale of the whole image's hashes: finer detail).

Distances: PDQ bits, pHash bits, or both within their thresholds. Each
threshold is the largest over the true pairs: every (target edit, photo) pair
the rule's boxes match keeps one accepted variant within it (or not compared).
False pairs: the cross pairs of ``bench_colour.py`` matched by the rule
shifted by k = 0..6, per kind of record: records without colour (the boxes
alone), and grey and colour records under the product rule with colour.

Needs the hashes and product signatures cached by

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 --workers 2 --product

and then (a few minutes on 2 cores):

    .venv/bin/python benchmarks/bench_confirm.py [--photos DIR]
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

from optout.matching.rule import DEFAULT_RULE
from registry import fast_hashing
from registry.hashing import band_of, band_split, phash_of
from registry.variants import DEFAULT_VARIANTS, variant_image

TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)
PER_SOURCE = 500
GREY = 0.01
SIGNALS = ("band", "centre")
KMAX = 4  # the product-rule pairs of bench_colour are complete up to 6 - 2


def _words(pdq: str, phash: str, quality: int) -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex(pdq + phash), dtype=">u8").astype(np.uint64)
    return np.append(raw, np.uint64(quality))  # 4 PDQ words, pHash, quality


def _centre(image: Image.Image) -> np.ndarray:
    w, h = image.size
    part = np.asarray(image.crop((w // 4, h // 4, w - w // 4, h - h // 4)))
    pdq, quality = fast_hashing.pdq_of_reduced(part, part.shape[:2])
    return _words(pdq, phash_of(Image.fromarray(part)), quality)


def views(image: Image.Image) -> np.ndarray:
    """(len(SIGNALS), 6) uint64: each view's PDQ words, pHash and quality."""
    image = image.convert("RGB")
    return np.stack([_words(*band_split(band_of(image))), _centre(image)])


def registered_views(rgb: Image.Image) -> np.ndarray:
    return np.stack([views(variant_image(rgb, name)) for name in DEFAULT_VARIANTS])


def distances(record: np.ndarray, variants: np.ndarray) -> tuple[np.ndarray, ...]:
    """PDQ bits, pHash bits and whether compared (both views above the gate),
    between record views (..., S, 6) and variant views (..., V, S, 6)."""
    x = np.bitwise_xor(record[..., None, :, :5], variants[..., :5])
    pdq = np.bitwise_count(x[..., :4]).sum(axis=-1).astype(np.int64)
    phash = np.bitwise_count(x[..., 4]).astype(np.int64)
    gate = DEFAULT_RULE.min_quality
    compared = (record[..., None, :, 5] >= gate) & (variants[..., 5] >= gate)
    return pdq, phash, compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--leave-out", nargs="*", default=[], help="target edits the thresholds ignore"
    )
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    tag = f"w4_p{PER_SOURCE}{corpus.TAG}"
    rs, _rsig, reg, qs, pi, pj, preg_sig, pq_sig = bc.load_product_caches(tag)
    recall = bc.recall_features(registered_views, views, TARGETS)
    vreg, vq = bc.near_pair_features(pi, pj, PER_SOURCE, registered_views, views)

    # False pairs, per variant: the boxes alone and the product rule.
    levels_f = bc.variant_levels(reg, qs, pi, pj)
    fq = np.stack([pq_sig[int(j)] for j in pj])
    fr = np.stack([preg_sig[int(i)] for i in pi])
    fd = bc.pair_distances("lab-ab4x4-max", fq, fr)
    pa = bc.product_accept(reg, qs, pi, pj, levels_f, fd, fq, fr, GREY)
    grey_record = pa.fq_skip
    classes = {
        "records without colour (boxes)": (lambda k: levels_f <= k, np.ones(len(pi), bool)),
        "grey records (product)": (pa.variants, grey_record),
        "colour records (product)": (pa.variants, ~grey_record),
    }
    f_pdq, f_phash, f_cmp = distances(
        np.stack([vq[int(j)] for j in pj]), np.stack([vreg[int(i)] for i in pi])
    )  # (pairs, V, S)

    # True pairs: per target edit and photo, the variants the boxes accept.
    photos = np.arange(len(rs.split))
    true = []  # (pdq, phash, compared) over the accepted variants, edit, source
    for name in [t for t in TARGETS if t not in args.leave_out]:
        lv = bc.variant_levels(rs.photos, rs.edits[name], photos, photos)
        for n in photos:
            accepted = lv[n] <= 0
            if accepted.any():
                d = distances(recall[n][1][name], recall[n][0])
                true.append((tuple(x[accepted] for x in d), name, rs.photos.sources[n]))

    print(
        f"{len(true)} true (target edit, photo) pairs matched by the boxes; "
        f"{len(pi)} cross pairs near the rule; false pairs k = 0..{KMAX}, before -> "
        "with the view's check at the largest true distance:\n"
    )
    header = " | ".join(classes)
    print(f"| view | distance | threshold (edit, photo) | {header} |")
    print("|---|---|---|" + "---|" * len(classes))
    for s, signal in enumerate(SIGNALS):
        for label in ("pdq", "phash", "both"):
            threshold, passes = view_check(true, s, label)
            ok = passes(f_pdq[..., s], f_phash[..., s], f_cmp[..., s])  # (pairs, V)
            cells = []
            for accept, subset in classes.values():
                before = [int(np.sum(np.any(accept(k), axis=1) & subset)) for k in range(KMAX + 1)]
                after = [
                    int(np.sum(np.any(accept(k) & ok, axis=1) & subset)) for k in range(KMAX + 1)
                ]
                cells.append(f"{'/'.join(map(str, before))} -> {'/'.join(map(str, after))}")
            print(f"| {signal} | {label} | {threshold} | {' | '.join(cells)} |", flush=True)


def _needed(distance: tuple[np.ndarray, ...], s: int) -> tuple[np.ndarray, np.ndarray]:
    """The PDQ and pHash distances of view ``s`` a true pair's accepted
    variants offer (0 where the views are not compared: the check passes)."""
    pdq, phash, compared = (x[:, s] for x in distance)
    return np.where(compared, pdq, 0), np.where(compared, phash, 0)


def view_check(true, s: int, label: str):  # type: ignore[no-untyped-def]
    """(the threshold described, the check on (pdq, phash, compared) arrays)
    for view ``s`` judged by ``label`` ("pdq", "phash" or "both"): each
    threshold the largest that a true pair needs from its closest accepted
    variant (for "both", the pHash a true pair needs with PDQ within its
    threshold)."""
    if label == "both":
        tp, name, source = max((int(_needed(d, s)[0].min()), n, src) for d, n, src in true)
        th = max((int(h[p <= tp].min()), n, src) for d, n, src in true for p, h in [_needed(d, s)])
        described = f"PDQ {tp} ({name}, {source}), pHash {th[0]} ({th[1]}, {th[2]})"
        return described, lambda p, h, c: ~c | ((p <= tp) & (h <= th[0]))
    column = 0 if label == "pdq" else 1
    worst = max((int(_needed(d, s)[column].min()), n, src) for d, n, src in true)
    return (
        f"{worst[0]} ({worst[1]}, {worst[2]})",
        lambda p, h, c: ~c | ((p if column == 0 else h) <= worst[0]),
    )


if __name__ == "__main__":
    main()
