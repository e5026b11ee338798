"""Exact indexes over registered hashes: SHA-256 membership and Hamming range search.

Pure (numpy, optionally numba), no Django. Both indexes hold (code, id) entries
in a few immutable segments (segments.py): appends and removals are seen by the
next search, without a rebuild. Not safe for concurrent writes and reads from
several threads.

``Sha256Set``: sorted 8-byte prefixes, binary search, full digest confirmed.
``HammingIndex``: multi-index hashing (multi_index.py), 100 % recall by
construction; compiled kernels (numba) with a numpy fallback giving identical
results (hamming_kernels.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from optout.matching import hamming_kernels as kernels
from optout.matching.hamming_kernels import NUMBA_AVAILABLE
from optout.matching.multi_index import HammingSegment
from optout.matching.segments import Segment, Segmented, as_ids

__all__ = ["NUMBA_AVAILABLE", "HammingIndex", "SearchResult", "Sha256Set", "hex_words"]

WORDS = {64: 1, 256: 4}
DEFAULT_RADIUS = {64: 8, 256: 31}  # the registry's thresholds (thresholds.py)


def _backend(name: str) -> str:
    if name == "auto":
        return "numba" if NUMBA_AVAILABLE else "numpy"
    if name == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("the numba backend needs the numba package")
    if name not in ("numba", "numpy"):
        raise ValueError(f"unknown backend {name!r}")
    return name


def hex_words(values: Sequence[str], words: int) -> np.ndarray:
    """Hex strings as an (n, words) uint64 array, most significant word first."""
    if any(len(value) != 16 * words for value in values):
        raise ValueError(f"every hash must have {16 * words} hex digits")
    raw = np.frombuffer(bytes.fromhex("".join(values)), dtype=">u8")
    return raw.astype(np.uint64).reshape(len(values), words)


# --- SHA-256 -----------------------------------------------------------------


class _DigestSegment(Segment):
    """Digests as four native-endian uint64 words, sorted by (words, id): any
    total order serves equality, and native words need no byte swapping."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray) -> None:
        order = np.lexsort((ids, *codes.T[::-1]))
        super().__init__(codes[order], ids[order])
        self.prefix = np.ascontiguousarray(self.codes[:, 0])

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, id) of every live match; queries sorted by first word."""
        n = self.prefix.shape[0]
        lo = np.searchsorted(self.prefix, queries[:, 0], "left")
        hit = np.nonzero(self.prefix[np.minimum(lo, n - 1)] == queries[:, 0])[0]
        lo = lo[hit]
        counts = np.searchsorted(self.prefix, queries[hit, 0], "right") - lo
        qidx = np.repeat(hit, counts)
        rows = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        keep = np.all(self.codes[rows] == queries[qidx], axis=1) & self.alive[rows]
        return qidx[keep], self.ids[rows[keep]]

    def nbytes(self) -> int:
        return super().nbytes() + self.prefix.nbytes


class Sha256Set(Segmented):
    """Exact membership of SHA-256 digests: sorted 8-byte prefixes, binary search,
    then the full 32 bytes confirmed. A digest may carry several ids."""

    words = 4

    def _segment(self, codes: np.ndarray, ids: np.ndarray) -> Segment:
        return _DigestSegment(codes, ids)

    @classmethod
    def from_hex(cls, values: Sequence[str], ids: Iterable[int] | np.ndarray) -> Sha256Set:
        index = cls()
        index.add(values, ids)
        return index

    def add(self, digests: Sequence[str] | np.ndarray, ids: Iterable[int] | np.ndarray) -> None:
        codes = self._digests(digests)
        self._append(codes, as_ids(ids, codes.shape[0]))

    @staticmethod
    def _digests(digests: Sequence[str] | np.ndarray) -> np.ndarray:
        """Hex strings, or raw digests as an (n, 32) uint8 array."""
        if isinstance(digests, np.ndarray) and digests.dtype == np.uint8:
            raw = np.ascontiguousarray(digests).reshape(-1, 32)
            return raw.view(np.uint64).reshape(-1, 4)
        if any(len(value) != 64 for value in digests):
            raise ValueError("every sha256 must have 64 hex digits")
        raw_bytes = bytes.fromhex("".join(digests))  # type: ignore[arg-type]
        return np.frombuffer(raw_bytes, dtype=np.uint64).reshape(-1, 4)

    def lookup_csr(self, digests: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, ids): the ids of digest i are ids[offsets[i]:offsets[i + 1]], ascending."""
        queries = self._digests(digests)
        order = np.argsort(queries[:, 0])  # sorted needles make the binary searches cache-friendly
        ordered = queries[order]
        segments = [s for s in self._segments if isinstance(s, _DigestSegment) and s.n_alive]
        parts = [segment.lookup(ordered) for segment in segments]
        qidx = np.concatenate([order[p[0]] for p in parts] or [np.zeros(0, np.int64)])
        ids = np.concatenate([p[1] for p in parts] or [np.zeros(0, np.int64)])
        # One segment already lists a digest's ids ascending; several need merging.
        by_query = np.argsort(qidx, kind="stable") if len(parts) == 1 else np.lexsort((ids, qidx))
        offsets = np.zeros(queries.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(qidx, minlength=queries.shape[0]), out=offsets[1:])
        return offsets, ids[by_query]

    def lookup_many(self, digests: Sequence[str] | np.ndarray) -> list[np.ndarray]:
        offsets, ids = self.lookup_csr(digests)
        bounds = offsets.tolist()
        return [ids[lo:hi] for lo, hi in pairwise(bounds)]

    def lookup_one(self, digest: str) -> list[int]:
        return self.lookup_many([digest])[0].tolist()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and bool(self.lookup_one(digest))


@dataclass(frozen=True)
class SearchResult:
    """Range-search answers in CSR form: query i matched ids[offsets[i]:offsets[i + 1]]
    at distances[...], one row per matching entry, closest first, then by id."""

    offsets: np.ndarray
    ids: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.ids[lo:hi], self.distances[lo:hi]

    def pairs(self, i: int) -> list[tuple[int, int]]:
        ids, distances = self[i]
        return list(zip(ids.tolist(), distances.tolist(), strict=True))


class HammingIndex(Segmented):
    """Exact Hamming range search over 64-bit (pHash) or 256-bit (PDQ) codes.

    ``radius`` is the largest radius searches are planned for (the registry's
    threshold); any radius gives exact results, larger ones more slowly.
    ``backend`` is "auto" (numba when installed), "numba" or "numpy": all give
    identical results. ``layout`` = (substrings, key bits) overrides the cost
    model's choice for every segment, (0, 0) meaning a scan: for tests and
    benchmarks; substrings must be a multiple of bits / 64, at most 8 per word."""

    def __init__(
        self,
        bits: int,
        *,
        radius: int | None = None,
        backend: str = "auto",
        layout: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if bits not in WORDS:
            raise ValueError("bits must be 64 or 256")
        self.bits = bits
        self.words = WORDS[bits]
        self.radius = DEFAULT_RADIUS[bits] if radius is None else radius
        self.backend = _backend(backend)
        if (
            layout is not None
            and layout[0]
            and not (
                layout[0] % self.words == 0 and 1 <= layout[0] // self.words <= 8 and layout[1] >= 1
            )
        ):
            raise ValueError(f"layout {layout} does not fit {bits}-bit codes")
        self.layout = layout

    @classmethod
    def from_hex(
        cls,
        values: Sequence[str],
        ids: Iterable[int] | np.ndarray,
        *,
        bits: int | None = None,
        radius: int | None = None,
        backend: str = "auto",
    ) -> HammingIndex:
        """An index of hex hashes (16 digits: 64 bits, 64 digits: 256 bits)."""
        if bits is None:
            bits = 4 * len(values[0]) if values else 64
        index = cls(bits, radius=radius, backend=backend)
        index.add(hex_words(values, WORDS[bits]), ids)
        return index

    def _segment(self, codes: np.ndarray, ids: np.ndarray) -> Segment:
        return HammingSegment(codes, ids, self.radius, self.backend, self.layout)

    def _codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint64:
            raise ValueError("codes must be a uint64 array")
        codes = codes.reshape(-1, self.words) if codes.ndim == 1 else codes
        if codes.ndim != 2 or codes.shape[1] != self.words:
            raise ValueError(f"codes must have shape (n, {self.words})")
        return np.ascontiguousarray(codes)

    def add(self, codes: np.ndarray, ids: Iterable[int] | np.ndarray) -> None:
        codes = self._codes(codes)
        self._append(codes, as_ids(ids, codes.shape[0]))

    def search(self, queries: np.ndarray, radius: int) -> SearchResult:
        """Every live entry within ``radius`` bits of each query."""
        if radius < 0:
            raise ValueError("radius must be >= 0")
        queries = self._codes(queries)
        parts = []
        for segment in self._segments:
            if segment.n_alive:
                assert isinstance(segment, HammingSegment)
                qidx, rows, dists = segment.search(queries, radius, self.backend)
                parts.append((qidx, segment.ids[rows], dists))
        qidx, ids, dists = kernels._concat(parts)
        order = np.lexsort((ids, dists, qidx))
        offsets = np.searchsorted(qidx[order], np.arange(queries.shape[0] + 1))
        return SearchResult(offsets, ids[order], dists[order])

    def search_hex(self, values: Sequence[str], radius: int) -> SearchResult:
        return self.search(hex_words(values, self.words), radius)

    def search_one(self, value: str, radius: int) -> list[tuple[int, int]]:
        """(id, distance) of every live entry within ``radius`` of one hex hash."""
        return self.search_hex([value], radius).pairs(0)
