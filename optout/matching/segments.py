"""Entries (code, id) kept in immutable segments, with tombstones.

``add`` builds a new segment from the appended entries and merges it with the
previous one while that one is no larger, so n appends leave about log2(n)
segments and each entry is rebuilt about log2(n) times; ``remove`` tombstones;
``compact`` rebuilds everything live into one segment.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def as_ids(ids: Iterable[int] | np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(ids, dtype=np.int64).reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"{n} codes but {array.shape[0]} ids")
    return array


class Segment:
    """Entries (codes, ids) with a tombstone per row."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        self.ids = ids
        self.alive = np.ones(ids.shape[0], dtype=bool)
        self.n_alive = ids.shape[0]
        self.id_order = np.argsort(ids, kind="stable")

    def remove(self, ids: np.ndarray) -> int:
        lo = np.searchsorted(self.ids, ids, "left", sorter=self.id_order)
        hi = np.searchsorted(self.ids, ids, "right", sorter=self.id_order)
        counts = hi - lo
        runs = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        rows = self.id_order[runs + np.arange(int(counts.sum()))]
        newly = int(self.alive[rows].sum())
        self.alive[rows] = False
        self.n_alive -= newly
        return newly

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.codes, self.ids, self.alive, self.id_order))


class Segmented:
    """Append, tombstone and compact over a list of segments."""

    words: int

    def __init__(self) -> None:
        self._segments: list[Segment] = []

    def _segment(self, codes: np.ndarray, ids: np.ndarray) -> Segment:
        raise NotImplementedError

    def _append(self, codes: np.ndarray, ids: np.ndarray) -> None:
        if ids.shape[0] == 0:
            return
        self._segments.append(self._segment(codes, ids))
        segments = self._segments
        while len(segments) >= 2 and segments[-2].ids.shape[0] <= segments[-1].ids.shape[0]:
            last, previous = segments.pop(), segments.pop()
            self._rebuild([previous, last])

    def _rebuild(self, segments: list[Segment]) -> None:
        codes = np.concatenate([s.codes[s.alive] for s in segments] or [self._no_codes()])
        ids = np.concatenate([s.ids[s.alive] for s in segments] or [np.zeros(0, np.int64)])
        if ids.shape[0]:
            self._segments.append(self._segment(codes, ids))

    def _no_codes(self) -> np.ndarray:
        return np.zeros((0, self.words), dtype=np.uint64)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Tombstone every entry with one of ``ids``; returns how many were live."""
        wanted = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        return sum(segment.remove(wanted) for segment in self._segments)

    def compact(self) -> None:
        """Rebuild all live entries into one segment."""
        segments, self._segments = self._segments, []
        self._rebuild(segments)

    def __len__(self) -> int:
        return sum(segment.n_alive for segment in self._segments)

    @property
    def segment_sizes(self) -> list[int]:
        return [segment.ids.shape[0] for segment in self._segments]

    def memory_bytes(self) -> int:
        return sum(segment.nbytes() for segment in self._segments)
