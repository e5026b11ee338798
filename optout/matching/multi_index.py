"""Multi-index hashing (Norouzi, Punjani and Fleet) for one segment of codes.

A code is split into m disjoint substrings, each with a bucket table. Writing
the radius as r = m * r' + a (0 <= a < m), any code within r of the query is
within r' of it on one of the first a + 1 substrings or within r' - 1 on one of
the others (otherwise its distance would be at least m * r' + a + 1 > r).
Probing every bucket within those radii and verifying the full distance finds
every code within r: 100 % recall by construction. A bucket key may keep only
the top bits of its substring (a coarser bucket, still a superset). m and the
key width come from a cost model for the segment's size; small segments, and
radii where probing would cost more than a scan, are scanned instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from optout.matching import hamming_kernels as kernels
from optout.matching.segments import Segment

_MAX_KEY_BITS = 24  # a bucket table of 2**24 int32 offsets is 64 MB
# Cost model of the compiled search, in units of one random memory read (about
# 20 ns here), fitted on uniform codes at 1 M to 10 M: a probe reads its
# bucket bounds, then, when the bucket is not empty, its entries; an entry costs
# a streamed read of its inline words; a scan costs this much per row and word.
_BUCKET_COST = 1.5
_ENTRY_COST = {1: 0.1, 4: 0.35}
_SCAN_COST_PER_WORD = 0.015


@dataclass(frozen=True)
class _Table:
    word: int
    shift: int  # the key is (code[word] >> shift) & (2**kbits - 1)
    kbits: int


def partition(words: int, tables: int, key_bits: int) -> tuple[_Table, ...]:
    per_word = tables // words
    width, wider = divmod(64, per_word)
    out = []
    for word in range(words):
        offset = 0
        for k in range(per_word):
            bits = width + (k < wider)
            kbits = min(bits, key_bits)
            out.append(_Table(word, 64 - offset - kbits, kbits))
            offset += bits
    return tuple(out)


def _table_radii(tables: int, radius: int) -> list[int]:
    base, extra = divmod(radius, tables)
    return [base if j <= extra else base - 1 for j in range(tables)]


def _keys(kbits: int, radius: int) -> int:
    return sum(comb(kbits, i) for i in range(min(radius, kbits) + 1)) if radius >= 0 else 0


def _probe_cost(tables: tuple[_Table, ...], n: int, words: int, radius: int) -> float:
    cost = 0.0
    for table, r in zip(tables, _table_radii(len(tables), radius), strict=True):
        keys = _keys(table.kbits, r)
        load = n / 2**table.kbits
        cost += keys * (1.0 + _BUCKET_COST * -np.expm1(-load) + _ENTRY_COST[words] * load)
    return cost


def _scan_cost(n: int, words: int) -> float:
    return n * words * _SCAN_COST_PER_WORD


@lru_cache(maxsize=4096)
def _plan(n: int, words: int, radius: int) -> tuple[_Table, ...]:
    """The cheapest table layout for n codes at this radius; () means scan."""
    best: tuple[float, tuple[_Table, ...]] = (_scan_cost(n, words), ())
    for count in range(words, 8 * words + 1, words):
        for key_bits in range(1, _MAX_KEY_BITS + 1):
            tables = partition(words, count, key_bits)
            cost = _probe_cost(tables, n, words, radius)
            best = min(best, (cost, tables), key=lambda pair: pair[0])
    return best[1]


@lru_cache(maxsize=1024)
def _masks(kbits: int, radius: int) -> np.ndarray:
    """Every kbits-wide XOR mask with at most ``radius`` bits set."""
    masks = [
        sum(1 << bit for bit in bits)
        for flips in range(min(radius, kbits) + 1)
        for bits in combinations(range(kbits), flips)
    ]
    return np.asarray(masks, dtype=np.int64)


class HammingSegment(Segment):
    def __init__(
        self,
        codes: np.ndarray,
        ids: np.ndarray,
        radius: int,
        backend: str,
        layout: tuple[int, int] | None,
    ) -> None:
        super().__init__(codes, ids)
        words = codes.shape[1]
        self.planned = layout is None  # a forced layout is never replaced by a scan
        if layout is None:
            self.tables = _plan(ids.shape[0], words, radius)
        else:
            self.tables = partition(words, *layout) if layout[0] else ()
        self.arrays: dict[str, np.ndarray] = {
            "word": np.asarray([t.word for t in self.tables], dtype=np.int64),
            "shift": np.asarray([t.shift for t in self.tables], dtype=np.uint64),
            "kmask": np.asarray([2**t.kbits - 1 for t in self.tables], dtype=np.uint64),
        }
        offsets, rows = [], []
        build = kernels.build_table_numpy if backend == "numpy" else _build_numba
        for table in self.tables:
            table_offsets, table_rows = build(
                self.codes, table.word, table.shift, 2**table.kbits - 1
            )
            offsets.append(table_offsets)
            rows.append(table_rows)
        # The compiled search filters each bucket entry on a copy of some of its
        # code's words kept in bucket order (all of a 64-bit code, two words of
        # a 256-bit one: a 128-bit partial distance rejects random codes), so it
        # reads a candidate's full code only when that partial distance passes.
        ninline = min(2, words)
        inline_words = np.zeros((len(self.tables), ninline), dtype=np.int64)
        for j, table in enumerate(self.tables):
            inline_words[j] = [(table.word + k) % words for k in range(1, ninline + 1)]
        self.arrays["inline_words"] = inline_words
        if backend == "numba" and self.tables:
            # C order: an entry's inline words side by side, in one cache line.
            inline = np.empty((len(rows), ids.shape[0], ninline), dtype=np.uint64)
            for j, (table_rows, table_words) in enumerate(zip(rows, inline_words, strict=True)):
                inline[j] = self.codes[table_rows[:, None], table_words[None, :]]
            self.arrays["inline"] = inline
        else:
            self.arrays["inline"] = np.zeros((0, 0, 1), np.uint64)
        sizes = [o.shape[0] for o in offsets]
        self.arrays["obase"] = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.arrays["offsets"] = np.concatenate(offsets or [np.zeros(0, np.int32)])
        self.arrays["rows"] = np.stack(rows) if rows else np.zeros((0, 0), np.int32)

    def search(
        self, queries: np.ndarray, radius: int, backend: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, words = self.codes.shape
        scan = not self.tables or (
            self.planned and _probe_cost(self.tables, n, words, radius) > _scan_cost(n, words)
        )
        if scan and backend == "numpy":
            return kernels.search_brute_numpy(self.codes, self.alive, queries, radius)
        if scan:
            return kernels._search_brute_numba(self.codes, self.alive, queries, radius)
        radii = _table_radii(len(self.tables), radius)
        masks = [
            _masks(t.kbits, r) if r >= 0 else np.zeros(0, np.int64)
            for t, r in zip(self.tables, radii, strict=True)
        ]
        if backend == "numpy":
            return kernels.search_mih_numpy(
                self.codes, self.alive, self.arrays, masks, queries, radius
            )
        a = self.arrays
        starts = np.cumsum([0, *(m.shape[0] for m in masks)]).astype(np.int64)
        return kernels._search_mih_numba(
            self.codes, self.alive, a["word"], a["shift"], a["kmask"], a["obase"],
            np.asarray(radii, dtype=np.int64), a["inline_words"], a["offsets"], a["rows"],
            a["inline"], starts,
            np.concatenate(masks), queries, radius,
        )  # fmt: skip

    def nbytes(self) -> int:
        return super().nbytes() + sum(a.nbytes for a in self.arrays.values())


def _build_numba(codes: np.ndarray, word: int, shift: int, kmask: int) -> Any:
    offsets = np.zeros(kmask + 2, dtype=np.int32)
    rows = np.empty(codes.shape[0], dtype=np.int32)
    kernels._build_table_numba(codes, word, np.uint64(shift), np.uint64(kmask), offsets, rows)
    return offsets, rows
