"""Inner loops of the Hamming index: one compiled (numba) and one pure-numpy
implementation of each, returning exactly the same results.

A segment stores its codes once, ``codes`` (n, words) uint64, plus one bucket
table per substring: ``offsets[base + key] : offsets[base + key + 1]`` is the
range of ``rows[table]`` whose substring key equals ``key``, rows ascending
inside a bucket (a stable counting sort). A key is the top ``kbits`` bits of a
substring, read as ``(codes[:, word] >> shift) & kmask``.

``search`` probes, for each table with a non-negative radius, every bucket whose
key lies within that radius of the query's key (``masks`` lists the XOR masks),
verifies each candidate's full distance, and reports a row once. The compiled
search first filters on ``inline`` (some words of each entry's code copied in
bucket order, so a bucket is one contiguous read) and skips a row found through
table j when an earlier probed table would already have found it; the numpy one
verifies on ``codes`` and deduplicates with ``np.unique``. The numba kernels
compile on first use and are cached on disk next to this module (``cache=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # The compiled kernels are optional: without numba, numpy does the same work.
    import numba
    from llvmlite import ir
    from numba import types as nb_types
    from numba.core import cgutils
    from numba.extending import intrinsic

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    NUMBA_AVAILABLE = False

# Bounds numpy's temporary arrays: distances of a query block against a scanned
# segment, and the candidates of a query block (tens of thousands per query for
# a large registry).
_NUMPY_PAIRS_PER_STEP = 2_000_000
_NUMPY_QUERY_BLOCK = 64
# uint64 items per 64-byte cache line (the compiled search's prefetches).
_ITEMS_PER_LINE = 8


def table_keys(codes: np.ndarray, word: int, shift: int, kmask: int) -> np.ndarray:
    return ((codes[:, word] >> np.uint64(shift)) & np.uint64(kmask)).astype(np.int64)


def build_table_numpy(
    codes: np.ndarray, word: int, shift: int, kmask: int
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int32 of length kmask + 2, rows int32): a stable bucket sort."""
    keys = table_keys(codes, word, shift, kmask)
    counts = np.bincount(keys, minlength=kmask + 1)
    offsets = np.zeros(kmask + 2, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    rows = np.argsort(keys, kind="stable").astype(np.int32)
    return offsets, rows


def _dedupe_pairs(
    qidx: np.ndarray, rows: np.ndarray, dists: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, first = np.unique(qidx * max(n, 1) + rows, return_index=True)
    return qidx[first], rows[first], dists[first]


def search_brute_numpy(
    codes: np.ndarray, alive: np.ndarray, queries: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = codes.shape[0]
    step = max(1, _NUMPY_PAIRS_PER_STEP // max(n, 1))
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, queries.shape[0], step):
        block = queries[start : start + step]
        dists = np.zeros((block.shape[0], n), dtype=np.int64)
        for word in range(codes.shape[1]):
            dists += np.bitwise_count(block[:, word, None] ^ codes[None, :, word])
        q, r = np.nonzero((dists <= radius) & alive[None, :])
        out.append((q.astype(np.int64) + start, r.astype(np.int64), dists[q, r]))
    return _concat(out)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def search_mih_numpy(
    codes: np.ndarray,
    alive: np.ndarray,
    tables: dict[str, np.ndarray],
    masks: list[np.ndarray],
    queries: np.ndarray,
    radius: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised over blocks of queries; the same (query, row, distance) set as
    the compiled kernel, deduplicated with unique() instead of its rule."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for first in range(0, queries.shape[0], _NUMPY_QUERY_BLOCK):
        block = queries[first : first + _NUMPY_QUERY_BLOCK]
        for j, table_masks in enumerate(masks):
            if table_masks.size == 0:
                continue
            word, shift, kmask = (int(tables[k][j]) for k in ("word", "shift", "kmask"))
            qkeys = table_keys(block, word, shift, kmask)
            buckets = (qkeys[:, None] ^ table_masks[None, :]) + int(tables["obase"][j])
            starts = tables["offsets"][buckets].astype(np.int64)
            counts = tables["offsets"][buckets + 1].astype(np.int64) - starts
            found = _probe(codes, alive, tables["rows"][j], starts, counts, block, radius)
            out.append((found[0] + first, found[1], found[2]))
    qidx, rows, dists = _concat(out)
    return _dedupe_pairs(qidx, rows, dists, codes.shape[0])


def _probe(
    codes: np.ndarray,
    alive: np.ndarray,
    rows: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    queries: np.ndarray,
    radius: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verify every entry of the (query, bucket) ranges starts/counts."""
    flat_counts = counts.ravel()
    total = int(flat_counts.sum())
    qidx = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts.sum(axis=1))
    run_start = np.repeat(np.cumsum(flat_counts) - flat_counts, flat_counts)
    positions = np.repeat(starts.ravel(), flat_counts) + (np.arange(total) - run_start)
    found = rows[positions].astype(np.int64)
    dists = np.zeros(total, dtype=np.int64)
    for word in range(codes.shape[1]):
        dists += np.bitwise_count(codes[found, word] ^ queries[qidx, word])
    keep = (dists <= radius) & alive[found]
    return qidx[keep], found[keep], dists[keep]


if NUMBA_AVAILABLE:

    def _popcount_typer(typingctx: Any, value: Any) -> Any:
        """LLVM's ctpop on a 64-bit integer: one POPCNT instruction on the host CPU."""
        if not isinstance(value, nb_types.Integer) or getattr(value, "bitwidth", 0) != 64:
            return None
        signature = nb_types.int64(value)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.ctpop(args[0])

        return signature, codegen

    # Typed as Any: numba's stubs do not describe calling an intrinsic from jitted code.
    _popcount: Any = intrinsic(_popcount_typer)

    def _prefetch_typer(typingctx: Any, array: Any, index: Any) -> Any:
        """Ask the CPU to start loading array.flat[index] (C-contiguous array)."""
        if not isinstance(array, nb_types.Array) or not isinstance(index, nb_types.Integer):
            return None
        signature = nb_types.void(array, index)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            address = builder.gep(data, [args[1]])
            byte_pointer = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
                "llvm.prefetch.p0",
            )
            builder.call(function, [builder.bitcast(address, byte_pointer), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return signature, codegen

    _prefetch: Any = intrinsic(_prefetch_typer)

    @numba.njit(cache=True, nogil=True)
    def _build_table_numba(
        codes: np.ndarray,
        word: int,
        shift: np.uint64,
        kmask: np.uint64,
        offsets: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        # The caller allocates offsets (zeros) and rows with numpy, whose large
        # arrays get transparent huge pages: fewer TLB misses on random reads.
        n = codes.shape[0]
        nbuckets = np.int64(kmask) + 1
        keys = np.empty(n, dtype=np.int64)
        for i in range(n):
            key = np.int64((codes[i, word] >> shift) & kmask)
            keys[i] = key
            offsets[key + 1] += 1
        for b in range(nbuckets):
            offsets[b + 1] += offsets[b]
        fill = offsets[:-1].copy()
        for i in range(n):
            key = keys[i]
            rows[fill[key]] = i
            fill[key] += 1

    @numba.njit(cache=True, nogil=True)
    def _reserve(buffer: np.ndarray, used: int, extra: int) -> np.ndarray:
        """``buffer`` with room for ``extra`` more items after ``used``. Called
        outside the inner loops: reassigning an array inside them would make
        numba count references on every iteration."""
        if used + extra <= buffer.shape[0]:
            return buffer
        bigger = np.empty(max(2 * buffer.shape[0], used + extra), dtype=buffer.dtype)
        bigger[:used] = buffer[:used]
        return bigger

    @numba.njit(cache=True, nogil=True)
    def _search_mih_numba(
        codes: np.ndarray,
        alive: np.ndarray,
        t_word: np.ndarray,
        t_shift: np.ndarray,
        t_kmask: np.ndarray,
        t_obase: np.ndarray,
        t_radius: np.ndarray,
        t_inline: np.ndarray,
        offsets: np.ndarray,
        rows: np.ndarray,
        inline: np.ndarray,
        m_start: np.ndarray,
        masks: np.ndarray,
        queries: np.ndarray,
        radius: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Per query in passes (bucket bounds; the inline words of every entry in
        # those buckets; the full code of the few that pass) so that the random
        # memory reads of a pass do not wait for each other.
        words = codes.shape[1]
        ninline = inline.shape[2]
        nentries = inline.shape[1]
        ntables = t_word.shape[0]
        nprobes = masks.shape[0]
        out_q = np.empty(1024, dtype=np.int64)
        out_r = np.empty(1024, dtype=np.int64)
        out_d = np.empty(1024, dtype=np.int64)
        count = 0
        qkeys = np.empty(ntables, dtype=np.int64)
        qinline = np.empty((ntables, ninline), dtype=np.uint64)
        p_start = np.empty(nprobes, dtype=np.int64)
        p_end = np.empty(nprobes, dtype=np.int64)
        cand_pos = np.empty(256, dtype=np.int64)
        cand_table = np.empty(256, dtype=np.int64)
        cand_dist = np.empty(256, dtype=np.int64)
        for qi in range(queries.shape[0]):
            for j in range(ntables):
                qkeys[j] = np.int64((queries[qi, t_word[j]] >> t_shift[j]) & t_kmask[j])
                for w in range(ninline):
                    qinline[j, w] = queries[qi, t_inline[j, w]]
            for j in range(ntables):
                base = t_obase[j] + 0
                for mi in range(m_start[j], m_start[j + 1]):
                    bucket = base + (qkeys[j] ^ masks[mi])
                    p_start[mi] = offsets[bucket]
                    p_end[mi] = offsets[bucket + 1]
            # Prefetch every cache line of each non-empty bucket, not only its
            # first: a bucket holds ~15 entries (4-5 lines of a 256-bit index's
            # inline words), and leaving the rest to demand misses in the filter
            # loop below stalled it on each line in turn (this halved the time
            # of a PDQ search at radius 32 over 1 M codes).
            total = 0
            for j in range(ntables):
                for mi in range(m_start[j], m_start[j + 1]):
                    if p_end[mi] > p_start[mi]:
                        first = (j * nentries + p_start[mi]) * ninline
                        last = (j * nentries + p_end[mi]) * ninline - 1
                        for item in range(first, last, _ITEMS_PER_LINE):
                            _prefetch(inline, item)
                        _prefetch(inline, last)
                        total += p_end[mi] - p_start[mi]
            cand_pos = _reserve(cand_pos, 0, total)
            cand_table = _reserve(cand_table, 0, total)
            cand_dist = _reserve(cand_dist, 0, total)
            # The filter loop specialised for two and one inline words (the
            # counts HammingSegment uses), the query's words held in registers,
            # the choice made outside the loops: the generic loop over w, which
            # LLVM did not unroll, cost ~40 % more per entry.
            ncand = 0
            for j in range(ntables):
                q0 = qinline[j, 0]
                q1 = qinline[j, ninline - 1]
                if ninline == 2:
                    for mi in range(m_start[j], m_start[j + 1]):
                        for p in range(p_start[mi], p_end[mi]):
                            dist = _popcount(inline[j, p, 0] ^ q0) + _popcount(inline[j, p, 1] ^ q1)
                            if dist <= radius:
                                cand_pos[ncand] = p
                                cand_table[ncand] = j
                                cand_dist[ncand] = dist
                                ncand += 1
                elif ninline == 1:
                    for mi in range(m_start[j], m_start[j + 1]):
                        for p in range(p_start[mi], p_end[mi]):
                            dist = _popcount(inline[j, p, 0] ^ q0)
                            if dist <= radius:
                                cand_pos[ncand] = p
                                cand_table[ncand] = j
                                cand_dist[ncand] = dist
                                ncand += 1
                else:
                    for mi in range(m_start[j], m_start[j + 1]):
                        for p in range(p_start[mi], p_end[mi]):
                            dist = 0
                            for w in range(ninline):
                                dist += _popcount(inline[j, p, w] ^ qinline[j, w])
                            if dist <= radius:
                                cand_pos[ncand] = p
                                cand_table[ncand] = j
                                cand_dist[ncand] = dist
                                ncand += 1
            out_q = _reserve(out_q, count, ncand)
            out_r = _reserve(out_r, count, ncand)
            out_d = _reserve(out_d, count, ncand)
            for c in range(ncand):
                j = cand_table[c]
                row = rows[j, cand_pos[c]]
                dist = cand_dist[c]
                if ninline < words:
                    dist = 0
                    for w in range(words):
                        dist += _popcount(codes[row, w] ^ queries[qi, w])
                if dist > radius or not alive[row]:
                    continue
                seen = False
                for j2 in range(j):
                    if t_radius[j2] < 0:
                        continue
                    key2 = np.int64((codes[row, t_word[j2]] >> t_shift[j2]) & t_kmask[j2])
                    if _popcount(key2 ^ qkeys[j2]) <= t_radius[j2]:
                        seen = True
                        break
                if seen:
                    continue
                out_q[count] = qi
                out_r[count] = row
                out_d[count] = dist
                count += 1
        return out_q[:count].copy(), out_r[:count].copy(), out_d[:count].copy()

    @numba.njit(cache=True, nogil=True)
    def _search_brute_numba(
        codes: np.ndarray, alive: np.ndarray, queries: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        words = codes.shape[1]
        out_q = np.empty(1024, dtype=np.int64)
        out_r = np.empty(1024, dtype=np.int64)
        out_d = np.empty(1024, dtype=np.int64)
        count = 0
        qi = 0
        while qi < queries.shape[0]:
            room = out_q.shape[0] - count
            found = 0
            for row in range(codes.shape[0]):
                dist = 0
                for w in range(words):
                    dist += _popcount(codes[row, w] ^ queries[qi, w])
                if dist <= radius and alive[row]:
                    if found < room:
                        out_q[count + found] = qi
                        out_r[count + found] = row
                        out_d[count + found] = dist
                    found += 1
            if found > room:  # out of room: make some and scan this query again
                out_q = _reserve(out_q, count, found)
                out_r = _reserve(out_r, count, found)
                out_d = _reserve(out_d, count, found)
                continue
            count += found
            qi += 1
        return out_q[:count].copy(), out_r[:count].copy(), out_d[:count].copy()
