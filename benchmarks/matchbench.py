"""Shared machinery of bench_robust.py and bench_precision.py.

- Hashing through the registry's own path: a registered photo is saved as a
  JPEG (quality 95, as a creator would upload it), decoded with
  ``registry.hashing.decode`` and hashed with ``registry.variants.
  variants_compute`` (all default variants); a query is the bytes a pipeline
  meets, hashed with ``registry.hashing.hash_bytes``.
- A rule (``optout.matching.rule.MatchRule``) becomes per-variant tables of
  boxes, and numba kernels compute, for each (registered photo, query) pair,
  the **level** of the pair: the smallest ``MatchRule.shifted(level)`` under
  which some variant of the photo matches the query. A pair matches the rule
  itself when its level is <= 0; the counts at levels 1, 2, 3… are the tail the
  precision benchmark extrapolates from, the counts at -1, -2… the stricter
  rules of the trade-off curve.
- The middle band (``band=True``): a record from our tools carries the
  hashes of its middle band (``registry.hashing.band_of``), matched against
  the photo's ``band`` variant only, inside ``rule.band``, both bands
  of PDQ quality >= ``rule.min_quality`` (a gate that is not shifted). The
  level of that pair is computed like any box's, and a (photo, record) pair's
  level is the smaller of its own hashes' and its band's; a pair the band
  alone reaches first is attributed to the ``band`` column. ``band=False``
  (the default) measures records without band hashes (other tools' records).
- The kernels are a fast copy of ``MatchRule.evaluate``: ``check_exact``
  replays pairs through the rule the engine applies (``rule_for``: the default
  rule for records carrying their PDQ quality, ``UNKNOWN_QUALITY_RULE`` for
  bare ones) and through ``MatchRule.search_plan()``, and fails the benchmark
  on any disagreement.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numba
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus
import edits

from optout.matching.rule import (
    BAND_KINDS,
    PDQ_INDEXED_KINDS,
    PDQ_STEP,
    PHASH_STEP,
    PRIMARY_KINDS,
    Box,
    KindRule,
    MatchRule,
    QueryHashes,
    VariantHashes,
    rule_for,
)
from registry.hashing import band_signature, band_split, decode, hash_bytes
from registry.variants import DEFAULT_VARIANTS, variant_kind, variants_compute

LEVEL_MIN = -6
LEVEL_MAX = 10
NONE = -(10**6)  # a box that never matches
UNBOUNDED = 10**6  # a distance that is not constrained
NEVER = 10**6  # the level of a pair that matches under no shift
BAND = "band"  # the registered variant a record's band hashes are matched with

# HMA's rule: one PDQ per photo (the photo as registered), distance <= 31, no
# quality gate; and the pHash rule of the simple engine. Expressed as rules
# over the "original" variant so the same kernels measure them.
HMA_RULE = MatchRule(
    kinds={"original": KindRule(both=(Box(pdq=31, phash=UNBOUNDED),), pdq_only=31)},
    low_quality=KindRule(both=(Box(pdq=31, phash=UNBOUNDED),), pdq_only=31),
    low_quality_kinds=frozenset({"original"}),
    min_quality=0,
)
PHASH8_RULE = MatchRule(
    kinds={"original": KindRule(both=(Box(pdq=UNBOUNDED, phash=8),), phash_only=8)},
    low_quality=KindRule(both=(Box(pdq=UNBOUNDED, phash=8),), phash_only=8),
    low_quality_kinds=frozenset({"original"}),
    min_quality=0,
)


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def words(hex_values: Sequence[str], count: int) -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex("".join(hex_values)), dtype=">u8")
    return raw.astype(np.uint64).reshape(len(hex_values), count)


@dataclass
class Registered:
    """Variant hashes of registered photos: (n, V[, 4]) arrays, column v is
    ``names[v]``."""

    names: list[str]
    sources: list[str]
    pdq: np.ndarray  # (n, V, 4) uint64
    phash: np.ndarray  # (n, V) uint64
    quality: np.ndarray  # (n, V) int64


@dataclass
class Queries:
    """Hashes of records as ``hash_bytes`` gives them, with the hashes of
    their middle band (``PhotoHashes.band``)."""

    sources: list[str]
    pdq: np.ndarray  # (m, 4) uint64
    phash: np.ndarray  # (m,) uint64
    quality: np.ndarray  # (m,) int64
    band_pdq: np.ndarray  # (m, 4) uint64
    band_phash: np.ndarray  # (m,) uint64
    band_quality: np.ndarray  # (m,) int64

    def take(self, index: np.ndarray) -> Queries:
        """The records ``index`` (an integer or boolean array), in that order."""
        return Queries(
            sources=list(np.asarray(self.sources, dtype=object)[index]),
            pdq=self.pdq[index],
            phash=self.phash[index],
            quality=self.quality[index],
            band_pdq=self.band_pdq[index],
            band_phash=self.band_phash[index],
            band_quality=self.band_quality[index],
        )

    def band_hex(self, j: int) -> str:
        """Record ``j``'s band signature (``registry.hashing.band_signature``)."""
        return band_signature(
            _hex(self.band_pdq[j]), _hex(self.band_phash[j]), int(self.band_quality[j])
        )


# A record's hashes as the workers hand them over: PDQ, its quality, pHash and
# the band signature.
QueryRow = tuple[str, int, str, str]


def _query_row(data: bytes) -> QueryRow:
    hashes = hash_bytes(data)
    return hashes.pdq, hashes.pdq_quality, hashes.phash, hashes.band


def _queries_of(sources: list[str], rows: Sequence[QueryRow]) -> Queries:
    bands = [band_split(row[3]) for row in rows]
    return Queries(
        sources=sources,
        pdq=words([row[0] for row in rows], 4),
        phash=words([row[2] for row in rows], 1).reshape(-1),
        quality=np.array([row[1] for row in rows], dtype=np.int64),
        band_pdq=words([band[0] for band in bands], 4),
        band_phash=words([band[1] for band in bands], 1).reshape(-1),
        band_quality=np.array([band[2] for band in bands], dtype=np.int64),
    )


def _register(item: tuple[str, Image.Image]) -> tuple[str, list[tuple[str, int, str]]]:
    source, image = item
    rgb = decode(jpeg(image, 95))
    return source, [(v.pdq, v.pdq_quality, v.phash) for v in variants_compute(rgb)]


def _query(item: tuple[str, bytes]) -> tuple[str, QueryRow]:
    source, data = item
    return source, _query_row(data)


def _pool_map(function, items: list, workers: int, chunksize: int = 16) -> list:  # type: ignore[no-untyped-def]
    if workers <= 1:
        return [function(item) for item in items]
    with Pool(workers) as pool:
        return pool.map(function, items, chunksize=chunksize)


def register(items: list[tuple[str, Image.Image]], workers: int) -> Registered:
    results = _pool_map(_register, items, workers)
    names = list(DEFAULT_VARIANTS)
    pdq = words([v[0] for _, vs in results for v in vs], 4).reshape(len(results), len(names), 4)
    phash = words([v[2] for _, vs in results for v in vs], 1).reshape(len(results), len(names))
    quality = np.array([[v[1] for v in vs] for _, vs in results], dtype=np.int64)
    return Registered(names, [s for s, _ in results], pdq, phash, quality)


def queries(items: list[tuple[str, bytes]], workers: int) -> Queries:
    results = _pool_map(_query, items, workers)
    return _queries_of([s for s, _ in results], [row for _, row in results])


def box_tables(rule: MatchRule, names: Sequence[str], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(V, 2, B) arrays of box thresholds per variant column and quality state
    (0: both qualities fine, 1: low); NONE pads, UNBOUNDED for a hash the mode
    does not use. ``mode``: "both", "pdq" (PDQ-only records), "phash"."""
    has_pdq, has_phash = mode in ("both", "pdq"), mode in ("both", "phash")
    tables = [
        [
            rule.boxes(variant_kind(name), has_pdq=has_pdq, has_phash=has_phash, low_quality=low)
            for low in (False, True)
        ]
        for name in names
    ]
    width = max(1, max(len(boxes) for row in tables for boxes in row))
    bp = np.full((len(names), 2, width), NONE, dtype=np.int64)
    bh = np.full((len(names), 2, width), NONE, dtype=np.int64)
    for v, row in enumerate(tables):
        for low, boxes in enumerate(row):
            for b, box in enumerate(boxes):
                bp[v, low, b] = UNBOUNDED if not has_pdq or box.pdq >= UNBOUNDED else box.pdq
                bh[v, low, b] = UNBOUNDED if not has_phash or box.phash >= UNBOUNDED else box.phash
    return bp, bh


def band_tables(
    rule: MatchRule, names: Sequence[str], band: bool
) -> tuple[int, np.ndarray, np.ndarray]:
    """The column of the ``band`` variant (-1: the band is not measured) and
    (B,) arrays of the PDQ and pHash thresholds of ``rule.band``."""
    boxes = rule.band
    column = list(names).index(BAND) if band else -1  # ValueError: photos without a band
    return (
        column,
        np.array([box.pdq for box in boxes], dtype=np.int64),
        np.array([box.phash for box in boxes], dtype=np.int64),
    )


@numba.njit(cache=True, inline="always")
def _popcount(x: np.uint64) -> np.int64:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True, inline="always")
def _ceil_div(a: np.int64, b: np.int64) -> np.int64:
    return -((-a) // b)


@numba.njit(cache=True)
def _band_level(rp, rh, rq, i, band, qbp, qbh, qbq, bbp, bbh, minq, pstep, hstep):  # type: ignore[no-untyped-def]
    """Level of a record's band hashes against the band variant (column
    ``band``) of registered photo i: NEVER when either band's PDQ quality is
    below ``minq`` (a gate no shift moves) or the band is not measured."""
    if band < 0 or rq[i, band] < minq or qbq < minq:
        return np.int64(NEVER)
    dh = _popcount(rh[i, band] ^ qbh)
    dp = (
        _popcount(rp[i, band, 0] ^ qbp[0])
        + _popcount(rp[i, band, 1] ^ qbp[1])
        + _popcount(rp[i, band, 2] ^ qbp[2])
        + _popcount(rp[i, band, 3] ^ qbp[3])
    )
    best = np.int64(NEVER)
    for b in range(bbp.shape[0]):
        level = max(_ceil_div(dp - bbp[b], pstep), _ceil_div(dh - bbh[b], hstep))
        if level < best:
            best = level
    return best


@numba.njit(cache=True)
def _pair_level(  # type: ignore[no-untyped-def]
    rp, rh, rq, i, qp, qh, qq_j, bp, bh, use_qq, minq, best, pstep, hstep,
    band, qbp, qbh, qbq, bbp, bbh,
):  # fmt: skip
    """Level of (registered photo i, one query) and the variant that reaches
    it; with ``band >= 0`` the query's band hashes (``qbp``, ``qbh``, ``qbq``)
    against the band variant too, which wins only when strictly lower."""
    best_v = -1
    n_variants = rh.shape[1]
    n_boxes = bp.shape[2]
    for v in range(n_variants):
        low = 1 if (rq[i, v] < minq or (use_qq and qq_j < minq)) else 0
        if bp[v, low, 0] == NONE:
            continue
        dh = _popcount(rh[i, v] ^ qh)
        dp = np.int64(-1)
        for b in range(n_boxes):
            p = bp[v, low, b]
            if p == NONE:
                break
            h = bh[v, low, b]
            level_h = _ceil_div(dh - h, hstep) if h < UNBOUNDED else np.int64(-(10**6))
            if level_h >= best:
                continue
            if p < UNBOUNDED:
                if dp < 0:
                    dp = (
                        _popcount(rp[i, v, 0] ^ qp[0])
                        + _popcount(rp[i, v, 1] ^ qp[1])
                        + _popcount(rp[i, v, 2] ^ qp[2])
                        + _popcount(rp[i, v, 3] ^ qp[3])
                    )
                level = max(level_h, _ceil_div(dp - p, pstep))
            else:
                level = level_h
            if level < best:
                best = level
                best_v = v
    if band >= 0:
        level = _band_level(rp, rh, rq, i, band, qbp, qbh, qbq, bbp, bbh, minq, pstep, hstep)
        if level < best:
            best = level
            best_v = band
    return best, best_v


@numba.njit(cache=True)
def _cross_histogram(  # type: ignore[no-untyped-def]
    rp, rh, rq, rsrc, qp, qh, qq, qsrc, bp, bh, use_qq, minq, lmin, lmax, pstep, hstep,
    band, qbp, qbh, qbq, bbp, bbh,
):  # fmt: skip
    n, n_variants = rh.shape
    m = qh.shape[0]
    hist = np.zeros(lmax - lmin + 2, dtype=np.int64)
    attribution = np.zeros((n_variants, lmax - lmin + 2), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            if rsrc[i] == qsrc[j]:
                continue
            best, best_v = _pair_level(
                rp, rh, rq, i, qp[j], qh[j], qq[j], bp, bh, use_qq, minq,
                np.int64(lmax + 1), pstep, hstep, band, qbp[j], qbh[j], qbq[j], bbp, bbh,
            )  # fmt: skip
            index = max(best, lmin) - lmin
            hist[index] += 1
            if best_v >= 0:
                attribution[best_v, index] += 1
    return hist, attribution


@numba.njit(cache=True)
def _paired_levels(  # type: ignore[no-untyped-def]
    rp, rh, rq, photo, qp, qh, qq, bp, bh, use_qq, minq, lmin, lmax, pstep, hstep,
    band, qbp, qbh, qbq, bbp, bbh,
):  # fmt: skip
    out = np.empty(qh.shape[0], dtype=np.int64)
    for j in range(qh.shape[0]):
        best, _ = _pair_level(
            rp, rh, rq, photo[j], qp[j], qh[j], qq[j], bp, bh, use_qq, minq,
            np.int64(lmax + 1), pstep, hstep, band, qbp[j], qbh[j], qbq[j], bbp, bbh,
        )  # fmt: skip
        out[j] = max(best, lmin)
    return out


@dataclass
class CrossCounts:
    """Pairs of distinct content by level (index 0 is LEVEL_MIN or below,
    the last is above LEVEL_MAX), and which variant column reached each."""

    pairs: int
    histogram: np.ndarray
    attribution: np.ndarray

    def at_level(self, level: int) -> int:
        """Pairs that match ``rule.shifted(level)``."""
        return int(self.histogram[: level - LEVEL_MIN + 1].sum())


def _source_ids(reg: Registered, qs: Queries) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(set(reg.sources) | set(qs.sources))
    index = {name: i for i, name in enumerate(names)}
    return (
        np.array([index[s] for s in reg.sources], dtype=np.int64),
        np.array([index[s] for s in qs.sources], dtype=np.int64),
    )


def _band_args(
    reg: Registered, qs: Queries, rule: MatchRule, band: bool
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The trailing band arguments of the kernels (``_pair_level``)."""
    column, bbp, bbh = band_tables(rule, reg.names, band)
    return column, qs.band_pdq, qs.band_phash, qs.band_quality, bbp, bbh


def cross_counts(
    reg: Registered,
    qs: Queries,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    band: bool = False,
) -> CrossCounts:
    """Every (registered photo, query) pair from different sources, by level;
    ``band``: records carrying their band hashes."""
    bp, bh = box_tables(rule, reg.names, mode)
    rsrc, qsrc = _source_ids(reg, qs)
    hist, attribution = _cross_histogram(
        reg.pdq, reg.phash, reg.quality, rsrc, qs.pdq, qs.phash, qs.quality, qsrc, bp, bh,
        query_quality, rule.min_quality, LEVEL_MIN, LEVEL_MAX, PDQ_STEP, PHASH_STEP,
        *_band_args(reg, qs, rule, band),
    )  # fmt: skip
    pairs = int(sum(np.sum(rsrc == s) * np.sum(qsrc != s) for s in np.unique(rsrc)))
    return CrossCounts(pairs, hist, attribution)


def paired_levels(
    reg: Registered,
    photo: np.ndarray,
    qs: Queries,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    band: bool = False,
) -> np.ndarray:
    """The level of each query against its own registered photo ``photo[j]``."""
    bp, bh = box_tables(rule, reg.names, mode)
    return _paired_levels(
        reg.pdq, reg.phash, reg.quality, photo.astype(np.int64), qs.pdq, qs.phash, qs.quality,
        bp, bh, query_quality, rule.min_quality, LEVEL_MIN, LEVEL_MAX, PDQ_STEP, PHASH_STEP,
        *_band_args(reg, qs, rule, band),
    )  # fmt: skip


def band_only(rule: MatchRule) -> MatchRule:
    """``rule`` with nothing but its band boxes: what a record's band hashes
    match by themselves (measure with ``band=True``)."""
    never = KindRule(both=())
    return replace(
        rule,
        kinds={},
        low_quality=never,
        low_quality_kinds=frozenset(),
        low_quality_derived=never,
    )


@dataclass
class RecallSet:
    """Registered calibration photos and, per edit, one query per photo."""

    photos: Registered
    split: np.ndarray  # (n,) "calibration" | "validation"
    edits: dict[str, Queries]


def _edit_queries(item: tuple[int, Image.Image, int]) -> list[tuple[str, QueryRow]]:
    _, image, seed = item
    rgb = decode(jpeg(image, 95))
    return [
        (name, _query_row(edits.edited_bytes(rgb, name, seed)))
        for name in (*edits.EDITS, *edits.STRETCH_EDITS)
    ]


def recall_set(windows: int, workers: int) -> RecallSet:
    items: list[tuple[str, Image.Image]] = []
    for source in corpus.available(tuple(corpus.SOURCES)):
        items += [(source, photo) for photo in corpus.recall_photos(source, windows=windows)]
    photos = register(items, workers)
    edited = _pool_map(
        _edit_queries, [(i, image, i) for i, (_, image) in enumerate(items)], workers, 1
    )
    per_edit: dict[str, Queries] = {}
    for name in (*edits.EDITS, *edits.STRETCH_EDITS):
        rows = [dict(row)[name] for row in edited]
        per_edit[name] = _queries_of([s for s, _ in items], rows)
    split = np.array(["calibration" if s in corpus.CALIBRATION else "validation" for s, _ in items])
    return RecallSet(photos, split, per_edit)


def recall_levels(
    rs: RecallSet,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    band: bool = False,
) -> dict[str, np.ndarray]:
    photo = np.arange(len(rs.photos.sources))
    return {
        name: paired_levels(rs.photos, photo, qs, rule, mode, query_quality, band)
        for name, qs in rs.edits.items()
    }


def precision_corpus(per_source: int, workers: int, seed: int = 11) -> tuple[Registered, Queries]:
    """Patches of every available source: registered (all variants) and as
    queries (an independent JPEG quality 85 re-encoding of the same patch;
    pairs are only formed across sources)."""
    items: list[tuple[str, Image.Image]] = []
    for source in corpus.available(tuple(corpus.SOURCES)):
        items += [(source, patch) for patch in corpus.patches(source, per_source, seed=seed)]
    reg = register(items, workers)
    qs = queries([(source, jpeg(patch, 85)) for source, patch in items], workers)
    return reg, qs


def subset(reg: Registered, qs: Queries, sources: Iterable[str]) -> tuple[Registered, Queries]:
    keep = set(sources)
    ri = np.array([s in keep for s in reg.sources])
    qi = np.array([s in keep for s in qs.sources])
    return (
        Registered(
            reg.names,
            [s for s in reg.sources if s in keep],
            reg.pdq[ri],
            reg.phash[ri],
            reg.quality[ri],
        ),
        qs.take(qi),
    )


def default_workers() -> int:
    return min(2, os.cpu_count() or 1)


@numba.njit(cache=True)
def _distance_histogram(rp, rh, rsrc, qp, qh, qsrc, column):  # type: ignore[no-untyped-def]
    hist = np.zeros((257, 65), dtype=np.int64)
    for i in range(rh.shape[0]):
        for j in range(qh.shape[0]):
            if rsrc[i] == qsrc[j]:
                continue
            dp = (
                _popcount(rp[i, column, 0] ^ qp[j, 0])
                + _popcount(rp[i, column, 1] ^ qp[j, 1])
                + _popcount(rp[i, column, 2] ^ qp[j, 2])
                + _popcount(rp[i, column, 3] ^ qp[j, 3])
            )
            hist[dp, _popcount(rh[i, column] ^ qh[j])] += 1
    return hist


def distance_histogram(reg: Registered, qs: Queries, variant: str = "original") -> np.ndarray:
    """(257, 65) counts of (PDQ, pHash) distances between one variant of each
    registered photo and every query from another source."""
    rsrc, qsrc = _source_ids(reg, qs)
    return _distance_histogram(
        reg.pdq, reg.phash, rsrc, qs.pdq, qs.phash, qsrc, reg.names.index(variant)
    )


def estimate(counts: CrossCounts, level: int = 0) -> float:
    """The larger of the observed count and the tail extrapolation."""
    fitted = extrapolate(counts, level)
    observed = float(counts.at_level(level))
    return observed if np.isnan(fitted) else max(fitted, observed)


def extrapolate(counts: CrossCounts, level: int = 0, minimum: int = 5) -> float:
    """Expected number of pairs matching ``rule.shifted(level)``: the observed
    count when it is at least ``minimum``; otherwise a log-linear fit of the
    cumulative counts at the first three looser levels holding at least
    ``minimum`` pairs, evaluated at ``level`` (NaN when there are not two)."""
    observed = counts.at_level(level)
    if observed >= minimum:
        return float(observed)
    levels = [lv for lv in range(level + 1, LEVEL_MAX + 1) if counts.at_level(lv) >= minimum][:3]
    if len(levels) < 2:
        return float("nan")
    slope, intercept = np.polyfit(levels, np.log([counts.at_level(lv) for lv in levels]), 1)
    return float(np.exp(intercept + slope * level))


def _hex(value: np.ndarray) -> str:
    return "".join(f"{int(word):016x}" for word in np.atleast_1d(value))


def check_exact(
    reg: Registered,
    photo: np.ndarray,
    qs: Queries,
    query_index: np.ndarray,
    levels: np.ndarray,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    band: bool = False,
) -> int:
    """Replay (registered photo ``photo[k]``, query ``query_index[k]``) pairs
    through ``rule.evaluate`` on every variant and assert that a pair matches
    exactly when its kernel level is <= 0; with ``query_quality`` or without,
    ``rule`` must be what ``rule_for`` gives such a record unless it is a
    reference rule (HMA, pHash <= 8). ``band``: the records carry their band
    hashes (``QueryHashes.band``). Every accepted variant must also lie within
    ``rule.search_plan()`` (the engine only ever sees those candidates).
    Returns the number of pairs checked."""
    from optout.matching.rule import DEFAULT_RULE, UNKNOWN_QUALITY_RULE

    registry_rule = rule in (DEFAULT_RULE, UNKNOWN_QUALITY_RULE)
    plan = rule.search_plan() if registry_rule else None
    kinds = [variant_kind(name) for name in reg.names]
    for i, j, level in zip(photo, query_index, levels, strict=True):
        query = QueryHashes(
            pdq=_hex(qs.pdq[j]) if mode in ("both", "pdq") else "",
            phash=_hex(qs.phash[j]) if mode in ("both", "phash") else "",
            pdq_quality=int(qs.quality[j]) if query_quality else None,
            band=qs.band_hex(j) if band else "",
        )
        if registry_rule and rule_for(query) is not rule:
            raise AssertionError("the benchmark measures a rule the engine does not apply")
        matched = False
        for v, name in enumerate(reg.names):
            evidence = rule.evaluate(
                query,
                VariantHashes(
                    name=name,
                    kind=kinds[v],
                    pdq=_hex(reg.pdq[i, v]),
                    pdq_quality=int(reg.quality[i, v]),
                    phash=_hex(reg.phash[i, v]),
                ),
            )
            if evidence.matched and plan is not None:
                _assert_planned(plan, kinds[v], evidence.pdq_distance, evidence.phash_distance)
            matched = matched or evidence.matched
        if matched != (level <= 0):
            raise AssertionError(f"kernel level {level} disagrees with rule.evaluate: {i}, {j}")
    return len(levels)


def _assert_planned(plan, kind: str, pdq: int | None, phash: int | None) -> None:  # type: ignore[no-untyped-def]
    both = pdq is not None and phash is not None
    if kind in BAND_KINDS:
        # Found by the band pHash index (a record's band pHash).
        if not (both and plan.band_phash is not None and phash <= plan.band_phash):
            raise AssertionError(f"a band match at ({pdq}, {phash}) is outside the search plan")
        return
    pdq_alone = (
        phash is None
        and kind in PDQ_INDEXED_KINDS
        and plan.pdq_only is not None
        and pdq is not None
        and pdq <= plan.pdq_only
    )
    if kind in PRIMARY_KINDS:
        found = (
            (both and phash <= plan.primary_phash)
            or (both and plan.primary_pdq is not None and pdq <= plan.primary_pdq)
            or pdq_alone
            or (
                pdq is None
                and plan.phash_only is not None
                and phash is not None
                and phash <= plan.phash_only
            )
        )
    else:
        found = (
            both and plan.derived_phash is not None and phash <= plan.derived_phash
        ) or pdq_alone
    if not found:
        raise AssertionError(f"a {kind} match at ({pdq}, {phash}) is outside the search plan")


def check_cross(
    reg: Registered,
    qs: Queries,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    sample: int = 3000,
    seed: int = 5,
    band: bool = False,
) -> int:
    """``check_exact`` on every cross pair at level <= 1 (the matches and the
    nearest misses) plus ``sample`` random cross pairs."""
    rsrc, qsrc = _source_ids(reg, qs)
    near_i, near_j, near_level = near_pairs(reg, qs, rule, mode, query_quality, 1, band)
    rng = np.random.default_rng(seed)
    ri = rng.integers(0, len(reg.sources), sample)
    qi = rng.integers(0, len(qs.sources), sample)
    keep = rsrc[ri] != qsrc[qi]
    ri, qi = ri[keep], qi[keep]
    sampled = paired_levels(reg, ri, qs.take(qi), rule, mode, query_quality, band)
    return check_exact(
        reg,
        np.concatenate([near_i, ri]),
        qs,
        np.concatenate([near_j, qi]),
        np.concatenate([near_level, sampled]),
        rule,
        mode,
        query_quality,
        band,
    )


def near_pairs(
    reg: Registered,
    qs: Queries,
    rule: MatchRule,
    mode: str = "both",
    query_quality: bool = False,
    kmax: int = 1,
    band: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(registered index, query index, level) of every cross-source pair at
    level <= ``kmax``."""
    bp, bh = box_tables(rule, reg.names, mode)
    rsrc, qsrc = _source_ids(reg, qs)
    return _near_pairs(
        reg.pdq, reg.phash, reg.quality, rsrc, qs.pdq, qs.phash, qs.quality, qsrc, bp, bh,
        query_quality, rule.min_quality, PDQ_STEP, PHASH_STEP, kmax,
        *_band_args(reg, qs, rule, band),
    )  # fmt: skip


@numba.njit(cache=True)
def _near_pairs(  # type: ignore[no-untyped-def]
    rp, rh, rq, rsrc, qp, qh, qq, qsrc, bp, bh, use_qq, minq, pstep, hstep, kmax,
    band, qbp, qbh, qbq, bbp, bbh,
):  # fmt: skip
    """Every cross-source pair at level <= kmax, with its level."""
    out_i, out_j, out_level = [], [], []
    for i in range(rh.shape[0]):
        for j in range(qh.shape[0]):
            if rsrc[i] == qsrc[j]:
                continue
            best, _ = _pair_level(
                rp, rh, rq, i, qp[j], qh[j], qq[j], bp, bh, use_qq, minq, np.int64(kmax + 1),
                pstep, hstep, band, qbp[j], qbh[j], qbq[j], bbp, bbh,
            )  # fmt: skip
            if best <= kmax:
                out_i.append(i)
                out_j.append(j)
                out_level.append(best)
    return (
        np.array(out_i, dtype=np.int64),
        np.array(out_j, dtype=np.int64),
        np.array(out_level, dtype=np.int64),
    )
