"""Experiment: a colour-layout signature as a third confirming signal.

PDQ and pHash are both luminance-DCT hashes; distinct photos of similar layout
fool both at once. This measures whether a cheap colour-layout signature
(chromaticity of a coarse grid, brightness-invariant) rejects the false matches
of DEFAULT_RULE (and of its looser shifts, the tail the precision benchmark
extrapolates from) while keeping the true matches of the target edits.

Data: the benchmark's own corpora and hashes (benchmarks/matchbench.py):
``recall_set(windows, workers)`` for true pairs, ``precision_corpus(per_source,
workers)`` for false pairs (cross-source only). Colour signatures are computed on
exactly the images those hashes come from: registered variant images via
``registry.variants.variant_image`` of ``decode(jpeg(photo, 95))``; recall
queries ``decode(edits.edited_bytes(rgb, edit, index))``; precision queries
``decode(jpeg(patch, 85))``.

Decision with the colour check, per (registered variant, record):
- record colourfulness < GREY: the record carries no colour evidence -> the
  check is skipped (cannot reject);
- registered variant colourfulness < GREY while record colourfulness >= 2*GREY
  -> reject (a grey photo cannot be the source of a colour record);
- otherwise pass when colour distance <= t.
A (photo, record) pair survives at rule.shifted(k) when some variant matches at
level <= k AND passes the colour check.

    .venv/bin/python benchmarks/bench_colour.py --windows 4 --per-source 500 --workers 2 --verify

(about 8 min the first time on 2 cores; the hashes and signatures are cached
in ``--cache``, default a directory under the system's temporary directory).
The evidence for the product's third confirming signal (registry.colour;
docs/matching.md, "Colour as a third signal"). ``--product`` computes every
signature through the product's own registration path
(``hash_bytes_with_variants``) and worker hashing path (``hash_bytes(fast=True)``)
and also judges at the product's ``COLOUR_THRESHOLD``; its product-rule section
also counts records that carry their middle band's hashes (as ``optout hash``
produces them): a pair matches by the product rule or by its band.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import corpus
import edits
import matchbench as mb
import numba
import numpy as np
from PIL import Image

from optout.matching.rule import (
    DEFAULT_RULE,
    MAX_STRICTNESS,
    PDQ_STEP,
    PHASH_STEP,
    MatchRule,
    QueryHashes,
    VariantHashes,
)
from registry.colour import (
    COLOUR_CONFIRM_THRESHOLD,
    COLOUR_THRESHOLD,
    GRID,
    LAYOUT_SCALE,
    LAYOUT_THRESHOLD,
    colour_parts,
    grey_signature,
    layout_parts,
)
from registry.hashing import decode, hash_bytes
from registry.variants import (
    DEFAULT_VARIANTS,
    ORIGINAL,
    hash_bytes_with_variants,
    variant_image,
    variant_kind,
)

# The directory's suffix changes when the cached hashes change shape (2: the
# records' band hashes, matchbench.Queries).
CACHE = os.path.join(tempfile.gettempdir(), "optout-bench-colour-2")
BIG = 10**6
TARGETS = (*edits.TARGET_EDITS, *edits.ROTATION_EDITS)

# --------------------------------------------------------------------------
# Colour signature
# --------------------------------------------------------------------------
# Added to every channel of a cell mean before taking chromaticity: a dark
# cell (sum of channels << 3*EPS) is pulled towards neutral grey instead of
# carrying the noise of a ratio of small numbers.
EPS = 8.0
# Layout of the signature vector.
C4 = slice(0, 32)  # 4x4 cells x (r, g) chromaticity minus 1/3
C3 = slice(32, 50)  # 3x3 cells x (r, g)
LAB4 = slice(50, 82)  # 4x4 cells x (a*, b*)
COLOURFUL = 82  # mean over a 16x16 grid of |chromaticity - neutral|
# The product's luminance layout of a grey signature (registry.colour), in
# units of 1/LAYOUT_SCALE, and whether the signature carries one.
LAYOUT = slice(83, 99)
HAS_LAYOUT = 99
SIG_LEN = 100


def _cells(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) area averages (PIL BOX on float channels: exact area means)."""
    channels = [
        np.asarray(c.convert("F").resize((size, size), Image.Resampling.BOX), dtype=np.float64)
        for c in image.convert("RGB").split()
    ]
    return np.stack(channels, axis=-1)


def _chroma(cells: np.ndarray) -> np.ndarray:
    total = cells.sum(axis=-1) + 3 * EPS
    r = (cells[..., 0] + EPS) / total - 1 / 3
    g = (cells[..., 1] + EPS) / total - 1 / 3
    return np.stack([r, g], axis=-1)


def signature(image: Image.Image) -> np.ndarray:
    from skimage.color import rgb2lab

    c16 = _cells(image, 16)
    c4 = c16.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))
    c3 = _cells(image, 3)
    lab = rgb2lab(np.clip(c4 / 255.0, 0, 1))[..., 1:]
    out = np.zeros(SIG_LEN, dtype=np.float64)
    out[C4] = _chroma(c4).reshape(-1)
    out[C3] = _chroma(c3).reshape(-1)
    out[LAB4] = lab.reshape(-1)
    out[COLOURFUL] = np.linalg.norm(_chroma(c16), axis=-1).mean()
    return out


def _cell_dist(a: np.ndarray, b: np.ndarray, part: slice) -> np.ndarray:
    """(n, cells) Euclidean distance per cell of two (n, SIG_LEN) arrays."""
    cells = (part.stop - part.start) // 2
    da = a[:, part].reshape(len(a), cells, 2) - b[:, part].reshape(len(b), cells, 2)
    return np.linalg.norm(da, axis=-1)


def _second(x: np.ndarray) -> np.ndarray:
    return np.sort(x, axis=1)[:, -2]


DISTANCES = {
    "chroma4x4-max": lambda a, b: _cell_dist(a, b, C4).max(axis=1),
    "chroma4x4-2nd": lambda a, b: _second(_cell_dist(a, b, C4)),
    "chroma4x4-mean": lambda a, b: _cell_dist(a, b, C4).mean(axis=1),
    "chroma3x3-max": lambda a, b: _cell_dist(a, b, C3).max(axis=1),
    "chroma3x3-mean": lambda a, b: _cell_dist(a, b, C3).mean(axis=1),
    "lab-ab4x4-max": lambda a, b: _cell_dist(a, b, LAB4).max(axis=1),
    "lab-ab4x4-mean": lambda a, b: _cell_dist(a, b, LAB4).mean(axis=1),
}


# --------------------------------------------------------------------------
# Signatures of the benchmark's images (same construction as matchbench)
# --------------------------------------------------------------------------
def recall_items(windows: int) -> list[tuple[str, Image.Image]]:
    items: list[tuple[str, Image.Image]] = []
    for source in corpus.available(tuple(corpus.SOURCES)):
        items += [(source, photo) for photo in corpus.recall_photos(source, windows=windows)]
    return items


# --product: signatures through the product's own paths instead of
# ``signature`` (set in main before any worker process starts).
PRODUCT = False


def product_vector(colour: str) -> np.ndarray:
    """A product signature (registry.colour, 66 hex) in this script's layout:
    its rounded a*b* in LAB4 and its colourfulness (other slices zero)."""
    colourful, ab = colour_parts(colour)
    out = np.zeros(SIG_LEN, dtype=np.float64)
    out[LAB4] = ab.reshape(-1)
    out[COLOURFUL] = colourful
    layout = layout_parts(colour)
    if layout is not None:
        out[LAYOUT] = np.rint(layout * LAYOUT_SCALE)
        out[HAS_LAYOUT] = 1
    return out


def _registered_product(data: bytes) -> np.ndarray:
    """(V, D): the colours an upload of ``data`` registers (photo and variants)."""
    hashes, derived = hash_bytes_with_variants(data)
    colours = {ORIGINAL: hashes.colour, **{v.name: v.colour for v in derived}}
    return np.stack([product_vector(colours[name]) for name in DEFAULT_VARIANTS])


def _query_product(data: bytes) -> np.ndarray:
    """The colour a worker hashing the record's image gives it."""
    return product_vector(hash_bytes(data, fast=True).colour)


def _recall_sigs(item: tuple[int, Image.Image]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    index, image = item
    if PRODUCT:
        data = mb.jpeg(image, 95)
        rgb = decode(data)
        return _registered_product(data), {
            name: _query_product(edits.edited_bytes(rgb, name, index))
            for name in (*edits.EDITS, *edits.STRETCH_EDITS)
        }
    rgb = decode(mb.jpeg(image, 95))
    reg = np.stack([signature(variant_image(rgb, name)) for name in DEFAULT_VARIANTS])
    queries = {
        name: signature(decode(edits.edited_bytes(rgb, name, index)))
        for name in (*edits.EDITS, *edits.STRETCH_EDITS)
    }
    return reg, queries


def _precision_sigs(
    task: tuple[str, int, int, list[int], list[int]],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Signatures of the registered variants of patches ``reg_local`` and of
    the queries ``q_local`` of one source (indices local to the source)."""
    source, per_source, seed, reg_local, q_local = task
    patches = list(corpus.patches(source, per_source, seed=seed))
    reg, qry = {}, {}
    if PRODUCT:
        reg = {k: _registered_product(mb.jpeg(patches[k], 95)) for k in reg_local}
        qry = {k: _query_product(mb.jpeg(patches[k], 85)) for k in q_local}
        return reg, qry
    for k in reg_local:
        rgb = decode(mb.jpeg(patches[k], 95))
        reg[k] = np.stack([signature(variant_image(rgb, name)) for name in DEFAULT_VARIANTS])
    for k in q_local:
        qry[k] = signature(decode(mb.jpeg(patches[k], 85)))
    return reg, qry


def _map(function, items, workers):  # type: ignore[no-untyped-def]
    if workers <= 1:
        return [function(item) for item in items]
    with Pool(workers) as pool:
        return pool.map(function, items, chunksize=1)


def _near_task(task):  # type: ignore[no-untyped-def]
    source, per_source, reg_local, q_local, registered, query = task
    patches = list(corpus.patches(source, per_source, seed=11))
    return (
        {k: registered(decode(mb.jpeg(patches[k], 95))) for k in reg_local},
        {k: query(decode(mb.jpeg(patches[k], 85))) for k in q_local},
    )


def _recall_task(task):  # type: ignore[no-untyped-def]
    index, image, registered, query, targets = task
    rgb = decode(mb.jpeg(image, 95))
    return registered(rgb), {
        name: query(decode(edits.edited_bytes(rgb, name, index))) for name in targets
    }


def recall_features(registered, query, targets, windows=4, workers=2):  # type: ignore[no-untyped-def]
    """For the experiments on the recall set: per photo (``recall_items``
    order), ``registered`` of the photo as uploaded (decoded JPEG q95) and a
    dict of ``query`` of each of its edited copies named in ``targets``.
    ``registered`` and ``query`` are module-level functions of an RGB image."""
    tasks = [(i, im, registered, query, targets) for i, (_, im) in enumerate(recall_items(windows))]
    return _map(_recall_task, tasks, workers)


def near_pair_features(pi, pj, per_source, registered, query, workers=2):  # type: ignore[no-untyped-def]
    """For the experiments on the cached cross pairs (pi, pj): ``registered``
    of each registered patch as uploaded (decoded JPEG q95) and ``query`` of
    each record (JPEG q85), two dicts by corpus index. ``registered`` and
    ``query`` are module-level functions of an RGB image (they cross to the
    worker processes)."""
    tasks = []
    for position, source in enumerate(corpus.available(tuple(corpus.SOURCES))):
        lo = position * per_source
        r_local = sorted({int(i) - lo for i in pi if lo <= i < lo + per_source})
        q_local = sorted({int(j) - lo for j in pj if lo <= j < lo + per_source})
        tasks.append((source, per_source, r_local, q_local, registered, query))
    by_registered, by_query = {}, {}
    for position, (r, q) in enumerate(_map(_near_task, tasks, workers)):
        lo = position * per_source
        by_registered.update({lo + k: v for k, v in r.items()})
        by_query.update({lo + k: v for k, v in q.items()})
    return by_registered, by_query


def load_cached(name: str):  # type: ignore[no-untyped-def]
    """A cache of this script's, for the experiments that read them."""
    path = os.path.join(CACHE, name)
    if not os.path.exists(path):
        sys.exit(f"{path} missing: run bench_colour.py --windows 4 --per-source 500 --product")
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - the benchmark's own cache


def load_product_caches(tag: str, kmax: int = 6):  # type: ignore[no-untyped-def]
    """What ``--product`` (with ``--kmax``) cached for ``tag``: the recall set
    and its product signatures, the precision corpus, its near pairs
    (k <= kmax) and their signatures, as (rs, rsig, reg, qs, pi, pj,
    preg_sig, pq_sig)."""
    rs = load_cached(f"recall_hashes_{tag}.pkl")
    rsig = load_cached(f"recall_sigs_{tag}_product.pkl")
    reg, qs = load_cached(f"precision_hashes_{tag}.pkl")
    pi, pj, _ = load_cached(f"near_pairs_{tag}_k{kmax}.pkl")
    preg_sig, pq_sig = load_cached(f"precision_sigs_{tag}_product_k{kmax}.pkl")
    return rs, rsig, reg, qs, pi, pj, preg_sig, pq_sig


def cached(name: str, build):  # type: ignore[no-untyped-def]
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - the benchmark's own cache
    value = build()
    with open(path + ".tmp", "wb") as f:
        pickle.dump(value, f)
    os.replace(path + ".tmp", path)
    return value


# --------------------------------------------------------------------------
# Per-variant levels (the kernel of matchbench._pair_level, kept per variant)
# --------------------------------------------------------------------------
@numba.njit(cache=True)
def _variant_levels(rp, rh, rq, pi, qp, qh, qq, pj, bp, bh, use_qq, minq, pstep, hstep):  # type: ignore[no-untyped-def]
    """(pairs, V): for pair k = (registered pi[k], query pj[k]) the smallest
    shift at which variant v matches (BIG when it never does)."""
    n_pairs = pi.shape[0]
    n_variants = rh.shape[1]
    n_boxes = bp.shape[2]
    out = np.full((n_pairs, n_variants), BIG, dtype=np.int64)
    for k in range(n_pairs):
        i, j = pi[k], pj[k]
        for v in range(n_variants):
            low = 1 if (rq[i, v] < minq or (use_qq and qq[j] < minq)) else 0
            if bp[v, low, 0] == mb.NONE:
                continue
            dh = mb._popcount(rh[i, v] ^ qh[j])
            dp = (
                mb._popcount(rp[i, v, 0] ^ qp[j, 0])
                + mb._popcount(rp[i, v, 1] ^ qp[j, 1])
                + mb._popcount(rp[i, v, 2] ^ qp[j, 2])
                + mb._popcount(rp[i, v, 3] ^ qp[j, 3])
            )
            for b in range(n_boxes):
                p = bp[v, low, b]
                if p == mb.NONE:
                    break
                h = bh[v, low, b]
                lh = mb._ceil_div(dh - h, hstep) if h < mb.UNBOUNDED else np.int64(-BIG)
                lp = mb._ceil_div(dp - p, pstep) if p < mb.UNBOUNDED else np.int64(-BIG)
                level = max(lh, lp)
                if level < out[k, v]:
                    out[k, v] = level
    return out


def variant_levels(reg, qs, pi, pj, rule=DEFAULT_RULE, query_quality=True):  # type: ignore[no-untyped-def]
    """(pairs, V) levels; ``query_quality=False`` leaves the record's PDQ
    quality unknown (a bare record: only the variant's quality gates)."""
    bp, bh = mb.box_tables(rule, reg.names, "both")
    return _variant_levels(
        reg.pdq, reg.phash, reg.quality, pi.astype(np.int64),
        qs.pdq, qs.phash, qs.quality, pj.astype(np.int64),
        bp, bh, query_quality, rule.min_quality, PDQ_STEP, PHASH_STEP,
    )  # fmt: skip


def query_at(qs, j: int, colour: str = "", band: bool = False) -> QueryHashes:  # type: ignore[no-untyped-def]
    """Record ``j`` of a matchbench Queries, as the rule sees it (``band``:
    with its band hashes)."""
    return QueryHashes(
        pdq=mb._hex(qs.pdq[j]),
        phash=mb._hex(qs.phash[j]),
        pdq_quality=int(qs.quality[j]),
        colour=colour,
        band=qs.band_hex(j) if band else "",
    )


def variant_at(reg, i: int, v: int, colour: str = "") -> VariantHashes:  # type: ignore[no-untyped-def]
    """Variant ``v`` of registered photo ``i`` of a matchbench Registered."""
    name = reg.names[v]
    return VariantHashes(
        name=name,
        kind=variant_kind(name),
        pdq=mb._hex(reg.pdq[i, v]),
        pdq_quality=int(reg.quality[i, v]),
        phash=mb._hex(reg.phash[i, v]),
        colour=colour,
    )


def replay(reg, qs, pi, pj, levels, ks, sample, seed=3) -> int:  # type: ignore[no-untyped-def]
    """Check per-variant levels against DEFAULT_RULE.shifted(k).evaluate."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pi), size=min(sample, len(pi)), replace=False)
    rules = {k: DEFAULT_RULE.shifted(k) for k in ks}
    checked = 0
    for c in chosen:
        i, j = pi[c], pj[c]
        query = query_at(qs, j)
        for v, name in enumerate(reg.names):
            variant = variant_at(reg, i, v)
            for k, rule in rules.items():
                if rule.evaluate(query, variant).matched != (levels[c, v] <= k):
                    raise AssertionError(
                        f"per-variant level disagrees: pair {i},{j} v={name} k={k}"
                    )
                checked += 1
    return checked


# --------------------------------------------------------------------------
# Colour decision
# --------------------------------------------------------------------------
def colour_pass(dist, q_colour, r_colour, t, grey):  # type: ignore[no-untyped-def]
    """(pairs, V) bool: the colour check passes (skipped checks pass)."""
    skip = (q_colour < grey)[:, None]
    grey_reg = (r_colour < grey) & (q_colour >= 2 * grey)[:, None]
    return skip | ((dist <= t) & ~grey_reg)


def faint_pair(q_colour, r_colour, grey):  # type: ignore[no-untyped-def]
    """(pairs, V) bool: the record's or the variant's colours are faint
    (``registry.colour.faint_colour``: grey <= colourfulness < 2 grey); a
    featureless pair with faint colours never matches."""
    q_faint = ((q_colour >= grey) & (q_colour < 2 * grey))[:, None]
    return q_faint | ((r_colour >= grey) & (r_colour < 2 * grey))


def pair_distances(name, q_sig, r_sig):  # type: ignore[no-untyped-def]
    """(pairs, V) distance between each query and each variant of its photo."""
    n, V, D = r_sig.shape
    q = np.repeat(q_sig, V, axis=0)
    return DISTANCES[name](q, r_sig.reshape(n * V, D)).reshape(n, V)


def threshold(true_d, true_skip, fraction):  # type: ignore[no-untyped-def]
    """Smallest t with pass rate >= fraction on every target edit. ``true_d``:
    per edit the distance of each matched pair (min over accepted variants,
    inf when every accepted variant is a grey-registered/colour-record reject)."""
    t, binding = 0.0, "-"
    for name in TARGETS:
        d, skip = true_d[name], true_skip[name]
        n = len(d)
        if n == 0:
            continue
        need = math.ceil(fraction * n - 1e-9) - int(skip.sum())
        if need <= 0:
            continue
        value = float(np.sort(d[~skip])[need - 1])
        if value > t:
            t, binding = value, name
    return t, binding


def fit_at_zero(counts: dict[int, float], ks, minimum: int = 5, at: int = 0) -> float:
    """bench_precision/matchbench.extrapolate on levels ``ks``: the observed
    count at 0 when >= minimum, else a log-linear fit of the cumulative counts
    at the first three levels of ``ks`` with >= minimum pairs, evaluated at 0
    (``at``: at that level instead, for the rule ``shifted(at)``)."""
    if counts.get(at, 0) >= minimum:
        return float(counts[at])
    levels = [k for k in ks if counts[k] >= minimum][:3]
    if len(levels) < 2:
        return float("nan")
    slope, intercept = np.polyfit(levels, np.log([counts[k] for k in levels]), 1)
    return float(np.exp(intercept + slope * at))


def q(x: np.ndarray, p: float) -> str:
    return f"{np.percentile(x, p):.4f}" if len(x) else "-"


# --------------------------------------------------------------------------
def _product_hex(vector: np.ndarray) -> str:
    """The product signature (registry.colour) a ``product_vector`` came from."""
    colourful = round(vector[COLOURFUL] * 1000)
    if vector[HAS_LAYOUT]:
        return grey_signature(colourful, np.rint(vector[LAYOUT]))
    ab = np.rint(vector[LAB4]).astype(np.int8)
    return (bytes((colourful,)) + ab.tobytes()).hex()


def layout_pass(q_sig: np.ndarray, r_sig: np.ndarray) -> np.ndarray:
    """(pairs, V) bool: the product's layout check between a grey record and a
    grey variant that both carry a layout (others pass): the mean cell
    difference, rounded as ``layout_compare`` does, within LAYOUT_THRESHOLD."""
    both = (q_sig[:, HAS_LAYOUT] > 0)[:, None] & (r_sig[:, :, HAS_LAYOUT] > 0)
    total = np.abs(q_sig[:, None, LAYOUT] - r_sig[:, :, LAYOUT]).sum(axis=-1)
    distance = np.round(total / (GRID * GRID * LAYOUT_SCALE), 2)
    return ~both | (distance <= LAYOUT_THRESHOLD)


@dataclass
class ProductAccept:
    """Per (cross pair, variant): what the product rule with colour decides
    (``product_accept``)."""

    fq_colour: np.ndarray  # (pairs,) the record's colourfulness
    fr_colour: np.ndarray  # (pairs, V) the variants'
    fq_skip: np.ndarray  # (pairs,) grey record: no colour check
    low_pair: np.ndarray  # (pairs, V) record or variant below the quality gate
    layout_ok: np.ndarray  # (pairs, V) the grey layouts agree (or are not compared)
    featureless_faint: np.ndarray  # (pairs, V) featureless with faint colours
    ok: np.ndarray  # (pairs, V) the checks of the rule's own boxes pass
    ok_conf: np.ndarray  # (pairs, V) the checks of the confirmed boxes pass
    levels_f: np.ndarray  # (pairs, V) levels of the boxes alone
    levels_g: np.ndarray  # (pairs, V) with a grey record against colour stricter
    levels_c: np.ndarray  # (pairs, V) levels of the confirmed boxes

    def variants(self, k: int, confirm: bool = True, grey_stricter: bool = True) -> np.ndarray:
        """(pairs, V) bool: the variant matches the product rule shifted by
        ``k`` (``confirm``: with the confirmed boxes; ``grey_stricter``: a
        grey record against a colourful variant judged stricter)."""
        accepted = ((self.levels_g if grey_stricter else self.levels_f) <= k) & self.ok
        if confirm:
            accepted |= (self.levels_c <= k) & self.ok_conf
        return accepted


def product_accept(reg, qs, pi, pj, levels_f, fd, fq, fr, grey) -> ProductAccept:  # type: ignore[no-untyped-def]
    """The product rule's colour decisions on the cross pairs (pi, pj):
    ``fd`` the colour distances, ``fq``/``fr`` the record's and the variants'
    signatures (``product_vector``), ``levels_f`` the boxes' levels."""
    rule = DEFAULT_RULE
    fq_colour, fr_colour = fq[:, COLOURFUL], fr[:, :, COLOURFUL]
    fq_skip = fq_colour < grey
    # The confirmed boxes need the closer agreement, and so does a pair whose
    # registered variant or record is of low PDQ quality (a featureless pair).
    ok_conf = colour_pass(fd, fq_colour, fr_colour, COLOUR_CONFIRM_THRESHOLD, grey)
    low_pair = (reg.quality[pi] < rule.min_quality) | (qs.quality[pj] < rule.min_quality)[:, None]
    ok = np.where(low_pair, ok_conf, colour_pass(fd, fq_colour, fr_colour, COLOUR_THRESHOLD, grey))
    featureless_faint = low_pair & faint_pair(fq_colour, fr_colour, grey)
    ok &= ~featureless_faint
    # Two grey signatures with layouts: the layouts must agree.
    layout_ok = layout_pass(fq, fr)
    ok &= layout_ok
    ok_conf &= ~fq_skip[:, None]
    levels_c = variant_levels(reg, qs, pi, pj, rule=rule.confirmed_only())
    # A grey record against a colourful variant: -grey_record_shift levels further.
    stricter = fq_skip[:, None] & (fr_colour >= 2 * grey)
    levels_g = np.where(stricter, levels_f - rule.grey_record_shift, levels_f)
    return ProductAccept(
        fq_colour, fr_colour, fq_skip, low_pair, layout_ok, featureless_faint,
        ok, ok_conf, levels_f, levels_g, levels_c,
    )  # fmt: skip


def _contained(inner, outer) -> bool:  # type: ignore[no-untyped-def]
    return inner.pdq <= outer.pdq and inner.phash <= outer.phash


def _tail_fit(counts: dict[int, float], kmax: int, at: int = 0) -> tuple[float, bool]:
    """(pairs at level ``at`` by ``fit_at_zero`` over levels 1..kmax, whether
    the fit is rough: fewer than two levels held 5 pairs, so levels with 1-4
    were used; nan when even those are too few)."""
    e = fit_at_zero(counts, range(1, kmax + 1), at=at)
    if not np.isnan(e):
        return e, False
    return fit_at_zero(counts, range(1, kmax + 1), minimum=1, at=at), True


def _per_record(counts: dict[int, float], kmax: int, pairs: int, at: int = 0) -> str:
    """False exclusions per record at 10^6 photos from the tail ``counts``
    over ``pairs`` cross pairs, for the rule shifted by ``at``."""
    e, rough = _tail_fit(counts, kmax, at)
    if np.isnan(e):  # pairs at one level only
        return "- (too few pairs to fit)"
    return f"{e / pairs * 1e6:.2g}" + (" (rough: fit through 1-4 pairs)" if rough else "")


class SourceBootstrap:
    """How far the tail fit moves when the source photographs are drawn
    again (with replacement; a source brings its registered patches and its
    records together): the spread of ``_per_record`` over ``draws`` such
    corpora."""

    def __init__(self, reg, qs, draws: int = 400, seed: int = 7) -> None:  # type: ignore[no-untyped-def]
        self.rsrc, self.qsrc = mb._source_ids(reg, qs)
        n = int(max(self.rsrc.max(), self.qsrc.max())) + 1
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(n, np.full(n, 1 / n), size=draws).astype(np.float64)

    def interval(self, alive, pi, pj, kmax, photos, records) -> str:  # type: ignore[no-untyped-def]
        """5th-95th percentile of the per-record estimate: ``alive(k)`` the
        counted cross pairs (pi, pj) at level k; ``photos``/``records`` the
        registered patches and records of the class (bool per corpus index)."""
        w = self.weights[:, self.rsrc[pi]] * self.weights[:, self.qsrc[pj]]
        counts = {k: w[:, alive(k)].sum(axis=1) for k in range(kmax + 1)}
        per_r = self.weights * np.bincount(self.rsrc[photos], minlength=self.weights.shape[1])
        per_q = self.weights * np.bincount(self.qsrc[records], minlength=self.weights.shape[1])
        pairs = per_r.sum(axis=1) * per_q.sum(axis=1) - (per_r * per_q).sum(axis=1)
        estimates = []
        for b in range(len(self.weights)):
            e, _rough = _tail_fit({k: float(counts[k][b]) for k in counts}, kmax)
            estimates.append(e / pairs[b] * 1e6 if pairs[b] else np.nan)
        values = np.array(estimates)
        known = values[~np.isnan(values)]
        if len(known) < len(values) / 2:
            return "-"
        lo, hi = np.percentile(known, [5, 95])
        unknown = len(values) - len(known)
        few = f" ({unknown} draws with too few pairs to fit left out)" if unknown else ""
        return f"{lo:.2g} to {hi:.2g}{few}"


def confirmed_section(  # type: ignore[no-untyped-def]
    out, args, reg, qs, pi, pj, levels_f, fd, fq, fr, grey, pairs_total,
    colour_pairs, rs, true_levels, true_qsig, reg_sig_recall, cal, q_grey,
) -> None:  # fmt: skip
    """The product rule with its colour-confirmed boxes (``KindRule.confirmed``):
    a pair matches in the rule's boxes with the colour check, or in the
    confirmed boxes when the record is colourful and the colours agree. "+
    band": records that also carry their band hashes (``optout hash``), which
    match when the record's middle band matches the photo's ``band`` variant
    (no colour check: ``MatchRule._evaluate_band``); ``q_grey``: per precision
    query, whether its record is grey."""
    rule = DEFAULT_RULE
    confirmed = rule.confirmed_only()
    # Every confirmed box lies inside the rule shifted by 2, so the pairs
    # enumerated up to kmax hold every confirmed match up to kmax - 2.
    shifted = rule.shifted(2)
    for kind, kind_rule in rule.kinds.items():
        for box in kind_rule.confirmed:
            assert any(_contained(box, b) for b in shifted.kinds[kind].both), (kind, box)
    kmax = args.kmax - 2
    t = COLOUR_THRESHOLD
    g = -rule.grey_record_shift  # a grey record against colour: g levels further
    pa = product_accept(reg, qs, pi, pj, levels_f, fd, fq, fr, grey)
    fq_colour, fr_colour, fq_skip = pa.fq_colour, pa.fr_colour, pa.fq_skip
    ok, ok_conf, levels_c, levels_g = pa.ok, pa.ok_conf, pa.levels_c, pa.levels_g
    low_pair, layout_ok, featureless_faint = pa.low_pair, pa.layout_ok, pa.featureless_faint

    def alive(k: int, confirm: bool = True, grey_stricter: bool = True) -> np.ndarray:
        return np.any(pa.variants(k, confirm, grey_stricter), axis=1)

    # Replay: the product's evaluate, with the records' and variants' product
    # signatures, on every pair alive at kmax and a sample of the others.
    rng = np.random.default_rng(5)
    chosen = set(np.where(alive(kmax, grey_stricter=False))[0].tolist())
    chosen |= set(rng.choice(len(pi), size=min(args.replay, len(pi)), replace=False).tolist())
    rules = {k: rule.shifted(k) for k in range(kmax + 1)}
    checked = 0
    for c in sorted(chosen):
        i, j = int(pi[c]), int(pj[c])
        query = query_at(qs, j, _product_hex(fq[c]))
        for v, name in enumerate(reg.names):
            variant = variant_at(reg, i, v, _product_hex(fr[c, v]))
            for k, shifted_rule in rules.items():
                expected = bool(
                    (levels_g[c, v] <= k and ok[c, v]) or (levels_c[c, v] <= k and ok_conf[c, v])
                )
                if shifted_rule.evaluate(query, variant).matched != expected:
                    raise AssertionError(f"evaluate disagrees: pair {i},{j} v={name} k={k}")
                checked += 1
    out("\n## The product rule: colour-confirmed boxes, grey records against colour\n")
    boxes = {k: v.confirmed for k, v in rule.kinds.items() if v.confirmed}
    out(
        f"Confirmed boxes: {boxes} (colours within {COLOUR_CONFIRM_THRESHOLD:g}); colour "
        f"veto {t:g}; a grey record against a "
        f"colourful variant judged by the rule shifted by {rule.grey_record_shift}.\n"
    )
    levels_header = " | ".join(f"k={k}" for k in range(kmax + 1))
    out(
        f"| | {levels_header} | false excl. / record at 1e6 | 90 % of the estimates "
        "over resampled sources |"
    )
    out("|---|" + "---|" * (kmax + 3))
    boxes_only = {"confirm": False, "grey_stricter": False}
    every_photo = np.ones(len(reg.sources), dtype=bool)
    records = {
        "all": (np.ones(len(pi), dtype=bool), pairs_total, np.ones(len(q_grey), dtype=bool)),
        "colour": (~fq_skip, colour_pairs, ~q_grey),
        "grey": (fq_skip, pairs_total - colour_pairs, q_grey),
    }
    rows = (
        ("all records, boxes + colour check", boxes_only, "all"),
        ("all records, + confirmed boxes", {"grey_stricter": False}, "all"),
        ("all records, + grey against colour stricter (**product**)", {}, "all"),
        ("colour records, boxes + colour check", boxes_only, "colour"),
        ("colour records, product", {}, "colour"),
        ("grey records, boxes (check skipped)", boxes_only, "grey"),
        ("grey records, product", {}, "grey"),
    )
    bootstrap = SourceBootstrap(reg, qs)
    for label, options, which in rows:
        subset, pairs, of_class = records[which]

        def counted(k: int, options: dict = options, subset: np.ndarray = subset) -> np.ndarray:  # type: ignore[type-arg]
            return alive(k, **options) & subset

        c = {k: int(np.sum(counted(k))) for k in range(kmax + 1)}
        cells = " | ".join(str(c[k]) for k in range(kmax + 1))
        spread = bootstrap.interval(counted, pi, pj, kmax, every_photo, of_class)
        out(f"| {label} | {cells} | {_per_record(c, kmax, pairs)} | {spread} |")

    # Grey records by the registered photo: a patch is black-and-white when
    # its own record is grey (the same patch, JPEG q95 against q85).
    rsrc, qsrc = mb._source_ids(reg, qs)
    out(
        "\nGrey records, product rule, by the registered photo they meet (a registry's "
        "share of black-and-white photos scales the first row):\n"
    )
    out(
        f"| grey records against | cross pairs | {levels_header} | per record at 1e6 such "
        "photos | 90 % over resampled sources |"
    )
    out("|---|---|" + "---|" * (kmax + 3))
    for label, bw in (("black-and-white photos", True), ("colour photos", False)):
        photos = q_grey == bw
        pairs = sum(
            int(np.sum((rsrc == s) & photos)) * int(np.sum((qsrc != s) & q_grey))
            for s in np.unique(rsrc)
        )

        def met(k: int, photos: np.ndarray = photos) -> np.ndarray:
            return alive(k) & fq_skip & photos[pi]

        c = {k: int(np.sum(met(k))) for k in range(kmax + 1)}
        cells = " | ".join(str(c[k]) for k in range(kmax + 1))
        spread = bootstrap.interval(met, pi, pj, kmax, photos, q_grey)
        out(f"| {label} | {pairs:.3g} | {cells} | {_per_record(c, kmax, pairs)} | {spread} |")

    # ---- records carrying their band hashes: a pair matches by the product
    # rule or by its band (every cross pair whose band matches at k, enumerated).
    band_rule = mb.band_only(rule)
    tag = f"w{args.windows}_p{args.per_source}{corpus.TAG}"
    bi, bj, blevel = cached(
        f"band_pairs_{tag}_k{kmax}.pkl",
        lambda: mb.near_pairs(reg, qs, band_rule, "both", True, kmax, band=True),
    )
    for k in range(kmax + 1):
        checked += mb.check_exact(
            reg, bi, qs, bj, blevel - k, band_rule.shifted(k), "both", True, band=True
        )
    band_records = {"all": np.ones(len(bj), dtype=bool), "colour": ~q_grey[bj], "grey": q_grey[bj]}
    band_counts: dict[str, dict[int, int]] = {}
    for which in ("all", "colour", "grey"):
        subset, pairs, _ = records[which]
        c = band_counts[which] = {}
        for k in range(kmax + 1):
            own = alive(k) & subset
            keys = set(zip(pi[own].tolist(), pj[own].tolist(), strict=True))
            by_band = (blevel <= k) & band_records[which]
            keys |= set(zip(bi[by_band].tolist(), bj[by_band].tolist(), strict=True))
            c[k] = len(keys)
        cells = " | ".join(str(c[k]) for k in range(kmax + 1))
        out(f"| {which} records, product **+ band** | {cells} | {_per_record(c, kmax, pairs)} |")
    cells = " | ".join(str(int(np.sum(blevel <= k))) for k in range(kmax + 1))
    out(f"| all records, band alone | {cells} | |")

    # ---- recall per edit (records carrying the product's colour signature)
    photo = np.arange(len(rs.split))
    out(
        "\n### Recall per edit, records carrying their colour signature "
        "(calibration / validation / all)\n"
    )
    out(
        "| edit | grey records | boxes + colour check | product rule "
        "| photos gained (source) | photos lost (source) | product rule + band "
        "| photos the band adds (source) |"
    )
    out("|---|---|---|---|---|---|---|---|")
    band_column = rs.photos.names.index(mb.BAND)
    band_levels = mb.recall_levels(rs, band_rule, query_quality=True, band=True)

    def true_accept(
        name: str, tc: float, g: int = g, band: bool = False, level: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (photo, variant) pairs of edit ``name`` the product rule
        (shifted by ``level``) accepts with the confirmed boxes' threshold
        ``tc`` (a grey record against a colourful variant ``g`` levels further;
        ``band``: records with their band hashes), and the photos the boxes
        with the colour check alone match."""
        lv = true_levels[name]
        lvc = variant_levels(rs.photos, rs.edits[name], photo, photo, rule=confirmed)
        qsig = true_qsig[name]
        d = pair_distances("lab-ab4x4-max", qsig, reg_sig_recall)
        q_col = qsig[:, COLOURFUL]
        r_col = reg_sig_recall[:, :, COLOURFUL]
        low_record = rs.edits[name].quality < rule.min_quality
        low_true = (rs.photos.quality < rule.min_quality) | low_record[:, None]
        okc = colour_pass(d, q_col, r_col, tc, grey)
        okt = np.where(low_true, okc, colour_pass(d, q_col, r_col, t, grey))
        okt &= ~(low_true & faint_pair(q_col, r_col, grey))
        okt &= layout_pass(qsig, reg_sig_recall)
        okc &= (q_col >= grey)[:, None]
        gv = (q_col < grey)[:, None] & (r_col >= 2 * grey)
        accept = ((np.where(gv, lv + g, lv) <= level) & okt) | ((lvc <= level) & okc)
        if band:
            accept[:, band_column] = band_levels[name] <= level
        return accept, np.any((lv <= level) & okt, axis=1)

    def replay_true(name: str, accept: np.ndarray, judge: MatchRule) -> int:
        """Every (photo, variant) pair of edit ``name`` through ``judge.evaluate``
        (records with their colour and band hashes): it must decide ``accept``."""
        qsig, qs_e = true_qsig[name], rs.edits[name]
        for n in range(len(photo)):
            query = query_at(qs_e, n, _product_hex(qsig[n]), band=True)
            for v, vname in enumerate(rs.photos.names):
                variant = variant_at(rs.photos, n, v, _product_hex(reg_sig_recall[n, v]))
                if judge.evaluate(query, variant).matched != bool(accept[n, v]):
                    raise AssertionError(f"evaluate disagrees: photo {n} edit {name} v={vname}")
        return accept.size

    true_checked = 0
    for name in rs.edits:
        q_col = true_qsig[name][:, COLOURFUL]
        accept, base_hit = true_accept(name, COLOUR_CONFIRM_THRESHOLD, band=True)
        hit_band = np.any(accept, axis=1)
        hit = np.any(np.delete(accept, band_column, axis=1), axis=1)
        true_checked += replay_true(name, accept, rule)

        def rates(x: np.ndarray) -> str:
            return f"{x[cal].mean():.2f} / {x[~cal].mean():.2f} / {x.mean():.2f}"

        gained = [rs.photos.sources[n] for n in np.where(hit & ~base_hit)[0]]
        lost = [rs.photos.sources[n] for n in np.where(~hit & base_hit)[0]]
        added = [rs.photos.sources[n] for n in np.where(hit_band & ~hit)[0]]
        mark = "**" if name in TARGETS else ""
        out(
            f"| {mark}{name}{mark} | {int(np.sum(q_col < grey))} | {rates(base_hit)} | "
            f"{rates(hit)} | {len(gained)} ({', '.join(sorted(set(gained)))}) | "
            f"{len(lost)} ({', '.join(sorted(set(lost)))}) | {rates(hit_band)} | "
            f"{len(added)} ({', '.join(sorted(set(added)))}) |"
        )
    out(
        f"\n(`rule.shifted(k).evaluate` replayed on {checked} false (pair, variant, k) "
        f"triples and band pairs and {true_checked} true (pair, variant) pairs, records "
        "with their band hashes: identical)"
    )

    # ---- a pipeline's strictness: the product rule shifted by -s
    out("\n### Strictness: the product rule asked for k steps stricter\n")
    out(
        "Records with their colour and band hashes; false exclusions per record at 10^6 "
        "by the tail fit evaluated at -k (the further below 0, the rougher); recall over "
        "all photos, the target edits' lowest and those below 0.95. Every (photo, "
        "variant) pair of every target edit replayed through `rule.shifted(-k).evaluate`.\n"
    )
    out(
        "| strictness | colour records | grey records | lowest target edit "
        "| target edits below 0.95 |"
    )
    out("|---|---|---|---|---|")
    strict_checked = 0
    for strictness in range(MAX_STRICTNESS + 1):
        shifted_rule = rule.shifted(-strictness)
        recalls: dict[str, float] = {}
        for name in TARGETS:
            accept, _ = true_accept(name, COLOUR_CONFIRM_THRESHOLD, band=True, level=-strictness)
            recalls[name] = float(np.any(accept, axis=1).mean())
            strict_checked += replay_true(name, accept, shifted_rule)
        lowest = min(recalls, key=lambda n: recalls[n])
        below = ", ".join(f"{n} {r:.2f}" for n, r in recalls.items() if r < 0.95) or "none"
        colour_e, grey_e = (
            _per_record(band_counts[which], kmax, records[which][1], at=-strictness)
            for which in ("colour", "grey")
        )
        out(f"| {strictness} | {colour_e} | {grey_e} | {lowest} {recalls[lowest]:.2f} | {below} |")
    out(f"\n({strict_checked} true (pair, variant) pairs replayed: identical)")

    # ---- how much stricter for a grey record against a colourful variant
    out("\n### A grey record against a colourful variant: how many levels stricter\n")
    out(
        "Grey records (the colour check skipped), product rule with the shift replaced: "
        "false pairs, and recall of the grey records of every target edit (the grayscale "
        "edit of colour photographs; black-and-white photographs under any edit).\n"
    )
    out(
        "| levels stricter | "
        + " | ".join(f"k={k}" for k in range(kmax + 1))
        + " | grayscale edit | lowest target edit, grey records (edit) |"
    )
    out("|---|" + "---|" * (kmax + 1) + "---|---|")
    for shift in (0, 1, 2, 3, 4, 6):
        lg = np.where(fq_skip[:, None] & (fr_colour >= 2 * grey), levels_f + shift, levels_f)
        counts = [
            int(np.sum(np.any(((lg <= k) & ok) | ((levels_c <= k) & ok_conf), axis=1) & fq_skip))
            for k in range(kmax + 1)
        ]
        recall: dict[str, float] = {}
        for name in rs.edits:
            if name not in TARGETS:
                continue
            grey_q = true_qsig[name][:, COLOURFUL] < grey
            if grey_q.any():
                accept, _ = true_accept(name, COLOUR_CONFIRM_THRESHOLD, g=shift)
                recall[name] = float(np.any(accept, axis=1)[grey_q].mean())
        low = min(recall, key=lambda n: recall[n])
        mark = " (product)" if shift == g else ""
        out(
            f"| {shift}{mark} | {' | '.join(map(str, counts))} | "
            f"{recall.get('grayscale', float('nan')):.2f} | {recall[low]:.2f} ({low}) |"
        )

    # ---- how close the colours of a confirmed-box match must be
    out("\n### The confirmed boxes' colour agreement: false pairs and recall per threshold\n")
    out(
        "Colour records, product rule with the confirmed boxes' threshold replaced; "
        "photos gained over the boxes + colour check, summed over the target edits "
        "and over the others (and the edit that gains most).\n"
    )
    out(
        "| confirm threshold | "
        + " | ".join(f"k={k}" for k in range(kmax + 1))
        + " | photos gained: target edits | other edits |"
    )
    out("|---|" + "---|" * (kmax + 1) + "---|---|")
    sweep = sorted({5.0, 7.5, 9.9, 12.5, 15.3, 20.0, COLOUR_CONFIRM_THRESHOLD})
    for tc in sweep:
        agree_tc = colour_pass(fd, fq_colour, fr_colour, tc, grey)
        ok_tc = agree_tc & ~fq_skip[:, None]
        ok_veto = np.where(low_pair, agree_tc, colour_pass(fd, fq_colour, fr_colour, t, grey))
        ok_veto &= layout_ok & ~featureless_faint
        counts = []
        for k in range(kmax + 1):
            accepted = ((levels_g <= k) & ok_veto) | ((levels_c <= k) & ok_tc)
            counts.append(int(np.sum(np.any(accepted, axis=1) & ~fq_skip)))
        gains: dict[str, int] = {}
        for name in rs.edits:
            accept, base_hit = true_accept(name, tc)
            gains[name] = int(np.sum(np.any(accept, axis=1) & ~base_hit))
        target = {n: c for n, c in gains.items() if n in TARGETS}
        stretch = {n: c for n, c in gains.items() if n not in TARGETS}
        top = max(target, key=lambda n: target[n])
        top_s = max(stretch, key=lambda n: stretch[n])
        mark = " (product)" if tc == COLOUR_CONFIRM_THRESHOLD else ""
        out(
            f"| {tc:g}{mark} | {' | '.join(map(str, counts))} | "
            f"{sum(target.values())} ({top} {target[top]}) | "
            f"{sum(stretch.values())} ({top_s} {stretch[top_s]}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--per-source", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kmax", type=int, default=6, help="tail levels enumerated")
    parser.add_argument("--grey", type=float, default=0.01, help="colourfulness below: grey")
    parser.add_argument("--replay", type=int, default=300, help="pairs replayed via evaluate")
    parser.add_argument("--verify", action="store_true", help="compare with cross_counts")
    parser.add_argument(
        "--product",
        action="store_true",
        help="signatures by the product's registration and worker hashing paths "
        "(registry.colour), also judged at its COLOUR_THRESHOLD",
    )
    parser.add_argument("--report", default=os.path.join(CACHE, "report.md"))
    corpus.add_argument(parser)
    args = parser.parse_args()
    corpus.apply(args)
    started = time.perf_counter()
    global PRODUCT
    PRODUCT = args.product
    if PRODUCT:  # the product's signature is the Lab a*b* 4 x 4 one, rounded
        for name in [n for n in DISTANCES if n != "lab-ab4x4-max"]:
            del DISTANCES[name]
    tag = f"w{args.windows}_p{args.per_source}{corpus.TAG}"
    sig_tag = f"{tag}_product" if PRODUCT else tag
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    # ---- hashes (the benchmark's own functions) and signatures
    rs = cached(f"recall_hashes_{tag}.pkl", lambda: mb.recall_set(args.windows, args.workers))
    t_rs = time.perf_counter() - started
    items = recall_items(args.windows)
    assert [s for s, _ in items] == rs.photos.sources
    rsig = cached(
        f"recall_sigs_{sig_tag}.pkl",
        lambda: _map(_recall_sigs, [(i, im) for i, (_, im) in enumerate(items)], args.workers),
    )
    reg_sig_recall = np.stack([r for r, _ in rsig])  # (n, V, D)
    print(f"recall set ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    reg, qs = cached(
        f"precision_hashes_{tag}.pkl", lambda: mb.precision_corpus(args.per_source, args.workers)
    )
    print(f"precision corpus ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    rsrc, qsrc = mb._source_ids(reg, qs)

    def enumerate_pairs():  # type: ignore[no-untyped-def]
        return mb.near_pairs(reg, qs, DEFAULT_RULE, "both", True, args.kmax)

    pi, pj, plevel = cached(f"near_pairs_{tag}_k{args.kmax}.pkl", enumerate_pairs)
    print(f"{len(pi)} near pairs ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    sources = corpus.available(tuple(corpus.SOURCES))
    assert reg.sources == [s for s in sources for _ in range(args.per_source)]

    def precision_sigs():  # type: ignore[no-untyped-def]
        tasks = []
        for s_pos, source in enumerate(sources):
            lo = s_pos * args.per_source
            r_local = sorted({int(i) - lo for i in pi if lo <= i < lo + args.per_source})
            q_local = list(range(args.per_source))  # every query: colourfulness stats
            tasks.append((source, args.per_source, 11, r_local, q_local))
        results = _map(_precision_sigs, tasks, args.workers)
        r_all, q_all = {}, {}
        for s_pos, (r, qq) in enumerate(results):
            lo = s_pos * args.per_source
            r_all.update({lo + k: v for k, v in r.items()})
            q_all.update({lo + k: v for k, v in qq.items()})
        return r_all, q_all

    preg_sig, pq_sig = cached(f"precision_sigs_{sig_tag}_k{args.kmax}.pkl", precision_sigs)
    print(f"signatures ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    # ---- checks against the benchmark's own kernels / the rule
    levels_f = variant_levels(reg, qs, pi, pj)
    assert np.array_equal(levels_f.min(axis=1), plevel)
    checked = replay(reg, qs, pi, pj, levels_f, range(0, args.kmax + 1), args.replay)
    pairs_total = int(sum(np.sum(rsrc == s) * np.sum(qsrc != s) for s in np.unique(rsrc)))
    base = {k: int(np.sum(plevel <= k)) for k in range(0, args.kmax + 1)}
    if args.verify:
        cc = mb.cross_counts(reg, qs, DEFAULT_RULE, query_quality=True)
        assert cc.pairs == pairs_total
        for k in range(0, args.kmax + 1):
            assert cc.at_level(k) == base[k], (k, cc.at_level(k), base[k])
        mb_est = mb.estimate(cc) / cc.pairs * 1e6
    recall = mb.recall_levels(rs, DEFAULT_RULE, query_quality=True)

    # ---- true pairs: per edit, per-variant levels and distances
    n_photos = len(rs.photos.sources)
    photo = np.arange(n_photos)
    edit_names = list(rs.edits)
    true_levels = {}
    true_qsig = {}
    for name in edit_names:
        lv = variant_levels(rs.photos, rs.edits[name], photo, photo)
        assert np.array_equal(np.clip(lv.min(axis=1), mb.LEVEL_MIN, mb.LEVEL_MAX + 1), recall[name])
        true_levels[name] = lv
        true_qsig[name] = np.stack([qd[name] for _, qd in rsig])
    cal = rs.split == "calibration"

    grey = args.grey
    pq_colour = np.array([pq_sig[j][COLOURFUL] for j in range(len(qs.sources))])
    grey_source = {s: bool(np.all(pq_colour[np.array(qs.sources) == s] < grey)) for s in sources}

    out("# Colour-layout signature as a third confirming signal (experiment)\n")
    out(
        f"Recall set: {n_photos} photos x {len(edit_names)} edits (`recall_set({args.windows})`); "
        f"precision corpus: {len(reg.sources)} patches of {len(sources)} sources "
        f"(`precision_corpus({args.per_source})`), {pairs_total:.3g} cross pairs; "
        f"{len(pi)} cross pairs at DEFAULT_RULE.shifted(k <= {args.kmax}) enumerated "
        f"(histogram identical to the kernel's{', and to cross_counts' if args.verify else ''}); "
        f"per-variant levels replayed through `rule.shifted(k).evaluate` on {checked} "
        f"(pair, variant, k) triples: identical.\n"
    )
    out(
        f"Signature: per cell mean RGB (exact area average), chromaticity (R+e)/(S+3e), "
        f"(G+e)/(S+3e) minus 1/3 with e = {EPS:g}; Lab a*b* of the 4x4 cell means; "
        f"colourfulness = mean |chromaticity - neutral| over a 16x16 grid. Grey: "
        f"colourfulness < {grey:g} (record: check skipped; registered variant: reject when "
        f"the record's colourfulness >= {2 * grey:g}).\n"
    )

    # colourfulness distributions
    out("## Colourfulness (mean |chroma| over 16x16 cells)\n")
    out("| set | n | min | p1 | p50 | max | share < grey |")
    out("|---|---|---|---|---|---|---|")
    gq = true_qsig["grayscale"][:, COLOURFUL]
    rows = [("recall queries, edit `grayscale`", gq)]
    for e in ("jpeg_q50", "bright_+20", "text"):
        rows.append((f"recall queries, edit `{e}`", true_qsig[e][:, COLOURFUL]))
    rows.append(("registered recall photos (original)", reg_sig_recall[:, 0, COLOURFUL]))
    gs = np.array([grey_source[s] for s in qs.sources])
    rows.append(("precision queries, grey sources", pq_colour[gs]))
    rows.append(("precision queries, colour sources", pq_colour[~gs]))
    for label, x in rows:
        out(
            f"| {label} | {len(x)} | {x.min():.4f} | {q(x, 1)} | {q(x, 50)} | {x.max():.4f} "
            f"| {np.mean(x < grey):.2f} |"
        )
    out(
        f"\nGrey sources (every query patch < grey): "
        f"{', '.join(s for s in sources if grey_source[s])}.\n"
    )

    # ---- distances for true and false pairs, per signature variant
    fq = np.stack([pq_sig[int(j)] for j in pj])
    fr = np.stack([preg_sig[int(i)] for i in pi])  # (pairs, V, D)
    fq_colour = fq[:, COLOURFUL]
    fr_colour = fr[:, :, COLOURFUL]
    colour_pairs = int(sum(np.sum(rsrc != qsrc[j]) for j in np.where(pq_colour >= grey)[0]))
    ks = range(1, 5)
    base_est = fit_at_zero(base, ks)
    fq_skip = fq_colour < grey

    summary = []
    per_sig = {}
    for sname in DISTANCES:
        true_d, true_skip = {}, {}
        for name in edit_names:
            lv = true_levels[name]
            matched = lv.min(axis=1) <= 0
            qsig = true_qsig[name][matched]
            rsig_m = reg_sig_recall[matched]
            d = pair_distances(sname, qsig, rsig_m)
            q_col = qsig[:, COLOURFUL]
            grey_reg = (rsig_m[:, :, COLOURFUL] < grey) & (q_col >= 2 * grey)[:, None]
            d = np.where((lv[matched] <= 0) & ~grey_reg, d, np.inf)
            true_d[name] = d.min(axis=1)
            true_skip[name] = q_col < grey
        fd = pair_distances(sname, fq, fr)
        t99, b99 = threshold(true_d, true_skip, 0.99)
        t995, b995 = threshold(true_d, true_skip, 0.995)
        res = {}
        thresholds = [("99", t99, b99), ("99.5", t995, b995)]
        if PRODUCT:
            thresholds.append(("product", COLOUR_THRESHOLD, "registry.colour.COLOUR_THRESHOLD"))
        for label, t, binding in thresholds:
            ok = colour_pass(fd, fq_colour, fr_colour, t, grey)
            alive_k = {
                k: int(np.sum(np.any((levels_f <= k) & ok, axis=1))) for k in range(args.kmax + 1)
            }
            alive_colour_k = {
                k: int(np.sum(np.any((levels_f <= k) & ok, axis=1) & ~fq_skip))
                for k in range(args.kmax + 1)
            }
            res[label] = (t, alive_k, alive_colour_k, ok, binding)
        per_sig[sname] = (true_d, true_skip, fd, res)
        summary.append((sname, res))

    # ---- summary table
    out("## False tail surviving the colour check (DEFAULT_RULE.shifted(k), query quality known)\n")
    out(
        "Threshold t: smallest distance with >= 99 % (resp. 99.5 %) of the matched true pairs "
        "of every target edit passing (target edits: "
        + ", ".join(TARGETS)
        + "; grey records count as passing; with n <= 100 matched pairs per edit, 99 % "
        "allows ceil-rounding to at most one failure, none when n < 100). "
        "Estimate at k = 0: log-linear fit of the cumulative counts at the first three "
        "levels of k = 1..4 with >= 5 pairs (as matchbench.extrapolate), per record at 1e6 = "
        "estimate / cross pairs x 1e6; NaN when fewer than two levels of 1..4 hold 5 pairs "
        "(then the fit over k = 1..6 is given in brackets).\n"
    )
    head = "| signature | pass target | t (binding edit) | " + " | ".join(
        f"k={k}" for k in range(1, args.kmax + 1)
    )
    out(head + " | est. k=0 | false excl. / record at 1e6 |")
    out("|---|---|---|" + "---|" * args.kmax + "---|---|")
    ks_wide = range(1, args.kmax + 1)

    def est_cell(counts, pairs):  # type: ignore[no-untyped-def]
        e = fit_at_zero(counts, ks)
        if np.isnan(e):
            w = fit_at_zero(counts, ks_wide)
            return f"nan ({w:.3g})", f"nan ({w / pairs * 1e6:.2g})"
        return f"{e:.3g}", f"{e / pairs * 1e6:.2g}"

    def survivor_rows(base_counts, pairs, colour_only):  # type: ignore[no-untyped-def]
        """The table's rows: no check, then each signature's survivors (all
        records, or records with colour only)."""

        def row(name, target, threshold, counts):  # type: ignore[no-untyped-def]
            e, r = est_cell(counts, pairs)
            cells = " | ".join(str(counts[k]) for k in range(1, args.kmax + 1))
            out(f"| {name} | {target} | {threshold} | {cells} | {e} | {r} |")

        row("(no colour check)", "-", "-", base_counts)
        for sname, res in summary:
            for label, (t, alive_k, alive_c, _, binding) in res.items():
                target = "product" if label == "product" else f"{label} %"
                if colour_only:
                    row(sname, target, f"{t:.4f}", alive_c)
                else:
                    row(sname, target, f"{t:.4f} ({binding})", alive_k)

    survivor_rows(base, pairs_total, colour_only=False)
    if args.verify:
        out(f"\n(baseline check: matchbench.estimate on cross_counts gives {mb_est:.2g} at 1e6)")

    # Records carrying colour only
    out(
        f"\n### Records with colour evidence only (query colourfulness >= {grey:g}: "
        f"{np.mean(pq_colour >= grey):.0%} of the precision queries, "
        f"{colour_pairs:.3g} cross pairs)\n"
    )
    base_c = {k: int(np.sum((plevel <= k) & ~fq_skip)) for k in range(0, args.kmax + 1)}
    out(head + " | est. k=0 | false excl. / colour record at 1e6 |")
    out("|---|---|---|" + "---|" * args.kmax + "---|---|")
    survivor_rows(base_c, colour_pairs, colour_only=True)
    grey_only = {k: base[k] - base_c[k] for k in base}
    out(
        "\nPairs whose record is grey (check skipped, unchanged by any colour check), k = 1.."
        f"{args.kmax}: " + ", ".join(str(grey_only[k]) for k in range(1, args.kmax + 1))
    )

    # ---- choose best: fewest survivors at k<=4 at 99 %
    best = min(summary, key=lambda s: (s[1]["99"][1][4], s[1]["99.5"][1][4]))[0]
    true_d, true_skip, fd, res = per_sig[best]
    out(f"\n## Best signature by surviving pairs at k <= 4 (99 % target): `{best}`\n")
    out("### True pairs (matched by DEFAULT_RULE, level <= 0) per edit\n")
    t99, t995 = res["99"][0], res["99.5"][0]
    out(
        "| edit | matched | grey query (skip) | p50 | p90 | p99 | max | pass at t99 "
        f"({t99:.4f}) | pass at "
        + (f"the product's {COLOUR_THRESHOLD:g}" if PRODUCT else f"t99.5 ({t995:.4f})")
        + " | pass t99 cal / val |"
    )
    out("|---|---|---|---|---|---|---|---|---|---|")
    for name in edit_names:
        d, skip = true_d[name], true_skip[name]
        n = len(d)
        if n == 0:
            out(f"| {name} | 0 | | | | | | | | |")
            continue
        dd = d[~skip]
        lv = true_levels[name]
        matched = lv.min(axis=1) <= 0
        p99 = skip | (d <= t99)
        p995 = skip | (d <= (COLOUR_THRESHOLD if PRODUCT else t995))
        cm = cal[matched]
        mark = "**" if name in TARGETS else ""
        out(
            f"| {mark}{name}{mark} | {n} | {int(skip.sum())} | {q(dd, 50)} | {q(dd, 90)} | "
            f"{q(dd, 99)} | {dd.max() if len(dd) else float('nan'):.4f} | "
            f"{p99.mean():.3f} | {p995.mean():.3f} | "
            f"{p99[cm].mean() if cm.any() else float('nan'):.3f} / "
            f"{p99[~cm].mean() if (~cm).any() else float('nan'):.3f} |"
        )
    # sensitivity to the threshold
    out("\n### Threshold sensitivity (best signature)\n")
    out(
        "| t | lowest pass rate over target edits (edit) | survivors k=1..4, all records | "
        "colour records only |"
    )
    out("|---|---|---|---|")
    for factor in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        t = t99 * factor
        rates = {}
        for name in TARGETS:
            d, skip = true_d[name], true_skip[name]
            if len(d):
                rates[name] = float(np.mean(skip | (d <= t)))
        worst_edit = min(rates, key=lambda e: rates[e])
        ok = colour_pass(fd, fq_colour, fr_colour, t, grey)
        al = [int(np.sum(np.any((levels_f <= k) & ok, axis=1))) for k in ks]
        ac = [int(np.sum(np.any((levels_f <= k) & ok, axis=1) & ~fq_skip)) for k in ks]
        out(
            f"| {t:.4f} ({factor:g} x t99) | {rates[worst_edit]:.3f} ({worst_edit}) | "
            f"{', '.join(map(str, al))} | {', '.join(map(str, ac))} |"
        )
    # worst true pairs
    out("\nLargest true-pair distances (target edits):\n")
    worst = []
    for name in TARGETS:
        lv = true_levels[name]
        idx = np.where(lv.min(axis=1) <= 0)[0]
        for k, (d, s) in enumerate(zip(true_d[name], true_skip[name], strict=True)):
            if not s:
                worst.append((d, name, rs.photos.sources[idx[k]], int(idx[k])))
    worst.sort(reverse=True)
    for d, name, src, i in worst[:8]:
        out(f"- {d:.4f}: edit `{name}`, photo {i} ({src})")

    # ---- false pairs composition at k <= 4
    out("\n### False pairs at k <= 4: composition and survivors (best signature)\n")
    ok99 = res["99"][3]
    within = plevel <= 4
    alive = np.any((levels_f <= 4) & ok99, axis=1) & within
    out("| query source -> registered source | pairs k<=4 | grey query | survive t99 |")
    out("|---|---|---|---|")
    combos: dict[tuple[str, str], list[int]] = {}
    for c in np.where(within)[0]:
        key = (qs.sources[pj[c]], reg.sources[pi[c]])
        row = combos.setdefault(key, [0, 0, 0])
        row[0] += 1
        row[1] += int(fq_skip[c])
        row[2] += int(alive[c])
    for key, row in sorted(combos.items(), key=lambda kv: -kv[1][0])[:15]:
        out(f"| {key[0]} -> {key[1]} | {row[0]} | {row[1]} | {row[2]} |")
    out(f"\n({len(combos)} source combinations in all)")
    surv_colour = alive & ~fq_skip
    if surv_colour.any():
        out(
            "\nSurviving pairs whose record carries colour (colour distance to the best passing "
            "matched variant, record colourfulness):\n"
        )
        for c in np.where(surv_colour)[0][:12]:
            acc = (levels_f[c] <= 4) & ok99[c]
            v = int(np.argmin(np.where(acc, fd[c], np.inf)))
            out(
                f"- k={plevel[c]} {qs.sources[pj[c]]}#{pj[c]} -> {reg.sources[pi[c]]}#{pi[c]} "
                f"variant {reg.names[v]}: d={fd[c, v]:.4f}, colourfulness record "
                f"{fq_colour[c]:.4f} / registered {fr_colour[c, v]:.4f}"
            )
    if PRODUCT:
        confirmed_section(
            out, args, reg, qs, pi, pj, levels_f, per_sig["lab-ab4x4-max"][2], fq, fr,
            grey, pairs_total, colour_pairs, rs, true_levels, true_qsig, reg_sig_recall, cal,
            pq_colour < grey,
        )  # fmt: skip
    out(
        f"\n(base estimate check: {base_est:.3g} pairs at k=0 from k=1..4; "
        f"hashing cached under {CACHE}; total {time.perf_counter() - started:.0f} s, "
        f"recall hashes {t_rs:.0f} s)"
    )
    with open(args.report, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
