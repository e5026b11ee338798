"""Benchmark of the exact indexes (optout.matching.index) against brute force and faiss.

For each hash kind and registry size, on a uniform registry and on a clustered
one (10 % of the codes in clusters of 100 within distance 4 of a centre: the
repost case), half of the queries are near-duplicates of registered codes (up to
threshold + 2 bits flipped; for the clustered registry, half of those from
clusters) and half are random codes. Reports, in the same process and on one
core: build time, memory, queries per second, recall against numpy brute force
on a sample of queries, and faiss IndexBinaryMultiHash (HMA's parameters for
PDQ: 16 tables of 16 bits, nflip = threshold // 16) and IndexBinaryFlat on a
sample of queries. Then SHA-256 membership against Python's set and dict.

    .venv/bin/python benchmarks/bench_index.py                      # everything
    .venv/bin/python benchmarks/bench_index.py --sizes phash:1000000 --queries 10000

Needs the `bench` extra (faiss-cpu): `pip install -e '.[dev,bench]'`; without
faiss the faiss columns are left empty.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optout.matching.index import HammingIndex, Sha256Set

try:
    import faiss
except ImportError:  # the faiss columns stay empty
    faiss = None

KINDS = {"phash": (64, 8), "pdq": (256, 31)}
# faiss IndexBinaryMultiHash (nhash, bits per hash), searched with nflip =
# threshold // nhash (exact: by pigeonhole one hashed substring is within nflip).
# PDQ: HMA's index is IndexBinaryMultiHash(256, 16, 16) (python-threatexchange,
# pdq_faiss_matcher.py); 11x23 is the fastest exact setting we found for faiss
# (of 16x16, 12x21, 11x23, 10x25 at 1 M). pHash (HMA has no pHash index): 4x16
# takes HMA's 16-bit substrings; 3x21 is the fastest we found (of 2x32, 3x21,
# 4x16, 5x12 at 1 M). The first of each pair is the headline comparison.
FAISS_MULTIHASH = {"phash": [(4, 16), (3, 21)], "pdq": [(16, 16), (11, 23)]}
DEFAULT_SIZES = ["phash:1000000", "phash:10000000", "pdq:1000000", "pdq:5000000"]


def flip_random_bits(rng: np.random.Generator, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """codes with up to counts[i] random bits of row i flipped (a position drawn
    twice flips back, so the distance is at most counts[i])."""
    n, words = codes.shape
    out = codes.copy()
    most = int(counts.max(initial=0))
    positions = rng.integers(0, 64 * words, size=(n, most))
    for k in range(most):
        rows = np.nonzero(counts > k)[0]
        word, bit = positions[rows, k] // 64, positions[rows, k] % 64
        out[rows, word] ^= np.left_shift(np.uint64(1), bit.astype(np.uint64))
    return out


def registry(rng: np.random.Generator, n: int, words: int, clustered: bool) -> np.ndarray:
    codes = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    if clustered:
        clusters = n // 10 // 100
        centres = rng.integers(0, 2**64, size=(clusters, words), dtype=np.uint64)
        members = np.repeat(centres, 100, axis=0)
        codes[: clusters * 100] = flip_random_bits(
            rng, members, rng.integers(0, 5, size=clusters * 100)
        )
        codes = codes[rng.permutation(n)]
    return codes


def queries_for(
    rng: np.random.Generator, codes: np.ndarray, count: int, threshold: int, clustered: bool
) -> np.ndarray:
    n, words = codes.shape
    hits = count // 2
    sources = rng.integers(0, n, size=hits)
    if clustered:  # half of the near-duplicates come from clustered codes
        in_clusters = np.nonzero(_cluster_mask(codes))[0]
        half = hits // 2
        sources[:half] = in_clusters[rng.integers(0, len(in_clusters), size=half)]
    near = flip_random_bits(rng, codes[sources], rng.integers(0, threshold + 3, size=hits))
    random = rng.integers(0, 2**64, size=(count - hits, words), dtype=np.uint64)
    both = np.concatenate([near, random])
    return both[rng.permutation(count)]


def _cluster_mask(codes: np.ndarray) -> np.ndarray:
    """Codes that have a neighbour within 8 bits in the first word's top 24 bits'
    bucket: cheap proxy, good enough to pick clustered sources."""
    top = codes[:, 0] >> np.uint64(40)
    _, inverse, counts = np.unique(top, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def brute_force(codes: np.ndarray, queries: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    found = set()
    for qi, query in enumerate(queries):
        distances = np.zeros(codes.shape[0], dtype=np.int64)
        for word in range(codes.shape[1]):
            distances += np.bitwise_count(codes[:, word] ^ query[word])
        for row in np.nonzero(distances <= radius)[0]:
            found.add((qi, int(row), int(distances[row])))
    return found


def as_triples(result: object) -> set[tuple[int, int, int]]:
    offsets, ids, distances = result.offsets, result.ids, result.distances  # type: ignore[attr-defined]
    qidx = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return set(zip(qidx.tolist(), ids.tolist(), distances.tolist(), strict=True))


@dataclass
class Timed:
    wall: float
    cpu: float


def timed(function, *args):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    value = function(*args)
    return value, Timed(time.perf_counter() - wall, time.process_time() - cpu)


def bench_faiss(
    kind: str, codes: np.ndarray, queries: np.ndarray, threshold: int, flat_queries: int
) -> dict[str, float]:
    if faiss is None:
        return {}
    faiss.omp_set_num_threads(1)
    bits = codes.shape[1] * 64
    as_bytes = codes.view(np.uint8).reshape(codes.shape[0], -1)
    q_bytes = np.ascontiguousarray(queries).view(np.uint8).reshape(queries.shape[0], -1)
    row: dict[str, float] = {}
    for k, (nhash, b) in enumerate(FAISS_MULTIHASH[kind]):
        multi = faiss.IndexBinaryMultiHash(bits, nhash, b)
        _, build = timed(multi.add, as_bytes)
        multi.nflip = threshold // nhash
        # faiss range_search keeps distances < radius: HMA passes threshold + 1.
        (lims, _, _), search = timed(multi.range_search, q_bytes, threshold + 1)
        del multi
        suffix = "" if k == 0 else "_alt"
        row[f"multihash{suffix}"] = f"{nhash}x{b}"  # type: ignore[assignment]
        row[f"multihash{suffix}_build_s"] = build.wall
        row[f"multihash{suffix}_qps"] = len(queries) / search.cpu
        row[f"multihash{suffix}_hits"] = int(lims[-1])
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(as_bytes)
    (flims, _, _), flat_search = timed(flat.range_search, q_bytes[:flat_queries], threshold + 1)
    del flat
    row["flat_qps"] = flat_queries / flat_search.cpu
    row["flat_hits"] = int(flims[-1])
    return row


def bench_hamming(kind: str, n: int, clustered: bool, args: argparse.Namespace) -> dict:
    bits, threshold = KINDS[kind]
    words = bits // 64
    rng = np.random.default_rng([n, bits, clustered])
    codes = registry(rng, n, words, clustered)
    queries = queries_for(rng, codes, args.queries, threshold, clustered)
    ids = np.arange(n, dtype=np.int64)

    index = HammingIndex(bits, radius=threshold, backend=args.backend)
    _, build = timed(index.add, codes, ids)
    index.search(queries[:10], threshold)  # compiled kernels loaded (cached on disk)
    result, search = timed(index.search, queries, threshold)

    sample = queries[: args.recall_queries]
    truth, brute = timed(brute_force, codes, sample, threshold)
    found = {t for t in as_triples(result) if t[0] < len(sample)}
    row = {
        "kind": kind, "n": n, "registry": "clustered" if clustered else "uniform",
        "layout": f"{len(index._segments[0].tables)}x{index._segments[0].tables[0].kbits}"
        if index._segments[0].tables else "scan",
        "build_s": build.wall, "memory_mb": index.memory_bytes() / 1e6,
        "qps_wall": len(queries) / search.wall, "qps_cpu": len(queries) / search.cpu,
        "matches": int(result.offsets[-1]), "hit_queries": int((np.diff(result.offsets) > 0).sum()),
        "recall": len(found & truth) / max(len(truth), 1), "extra": len(found - truth),
        "truth": len(truth), "brute_qps": len(sample) / brute.cpu,
    }  # fmt: skip
    if args.numpy_queries:
        fallback = HammingIndex(bits, radius=threshold, backend="numpy")
        fallback.add(codes, ids)
        sub = queries[: args.numpy_queries]
        numpy_result, numpy_search = timed(fallback.search, sub, threshold)
        row["numpy_qps"] = len(sub) / numpy_search.cpu
        row["numpy_identical"] = as_triples(numpy_result) == {
            t for t in as_triples(result) if t[0] < len(sub)
        }
        del fallback
    row["append_ms"], row["remove_ms"] = bench_freshness(index, codes, threshold)
    del index
    row.update(
        bench_faiss(kind, codes, queries[: args.faiss_queries], threshold, args.flat_queries)
    )
    return row


def bench_freshness(index: HammingIndex, codes: np.ndarray, threshold: int) -> tuple[float, float]:
    """Median time for one appended code to be searchable, and for one removal."""
    appends, removals = [], []
    one_bit = np.zeros((1, codes.shape[1]), dtype=np.uint64)
    one_bit[0, 0] = 1
    for i in range(50):
        code = codes[i : i + 1] ^ one_bit
        start = time.perf_counter()
        index.add(code, [10**12 + i])
        assert (10**12 + i, 1) in index.search(codes[i : i + 1], threshold).pairs(0)
        appends.append(time.perf_counter() - start)
        start = time.perf_counter()
        index.remove([10**12 + i])
        removals.append(time.perf_counter() - start)
    return float(np.median(appends) * 1000), float(np.median(removals) * 1000)


def hex_rows(raw: np.ndarray) -> list[str]:
    text = raw.tobytes().hex()
    width = 2 * raw.shape[1]
    return [text[i : i + width] for i in range(0, len(text), width)]


def bench_sha256(n: int, lookups: int) -> dict:
    rng = np.random.default_rng(n)
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    registered = hex_rows(raw)
    picks = rng.integers(0, n, size=lookups // 2)
    fresh = rng.integers(0, 256, size=(lookups - len(picks), 32), dtype=np.uint8)
    q_raw = np.concatenate([raw[picks], fresh])[rng.permutation(lookups)]
    q_hex = hex_rows(q_raw)

    index, build = timed(Sha256Set.from_hex, registered, np.arange(n))
    (offsets, _), hex_time = timed(index.lookup_csr, q_hex)
    _, raw_time = timed(index.lookup_csr, q_raw)
    _, many_time = timed(index.lookup_many, q_hex)
    as_set = set(registered)
    as_dict = {h: [i] for i, h in enumerate(registered)}
    _, set_time = timed(lambda: [h in as_set for h in q_hex])
    _, dict_time = timed(lambda: [as_dict.get(h, ()) for h in q_hex])
    return {
        "n": n, "lookups": lookups, "hits": int((np.diff(offsets) > 0).sum()),
        "build_s": build.wall, "memory_mb": index.memory_bytes() / 1e6,
        "csr_hex": lookups / hex_time.cpu, "csr_raw": lookups / raw_time.cpu,
        "many_hex": lookups / many_time.cpu, "set": lookups / set_time.cpu,
        "dict": lookups / dict_time.cpu,
    }  # fmt: skip


def bench_combined(n: int) -> None:
    """Memory of a pHash and a PDQ index of n codes each, held together."""

    def rss_gb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 1e9

    rng = np.random.default_rng(n)
    indexes = []
    print(f"\n## pHash and PDQ, {n:,} codes each, in one process\n")
    print(
        "| kind | layout | build s | index GB | q/s (CPU), 2 000 queries |\n|---|---|---|---|---|"
    )
    for kind, (bits, threshold) in KINDS.items():
        codes = rng.integers(0, 2**64, size=(n, bits // 64), dtype=np.uint64)
        index = HammingIndex(bits, radius=threshold)
        _, build = timed(index.add, codes, np.arange(n))
        queries = queries_for(rng, codes, 2_000, threshold, clustered=False)
        index.search(queries[:5], threshold)
        _, search = timed(index.search, queries, threshold)
        del codes
        tables = index._segments[0].tables
        print(
            f"| {kind} | {len(tables)}x{tables[0].kbits} | {build.wall:.1f}"
            f" | {index.memory_bytes() / 1e9:.2f} | {2_000 / search.cpu:,.0f} |"
        )
        indexes.append(index)
    total = sum(index.memory_bytes() for index in indexes) / 1e9
    print(f"\nboth: index arrays {total:.2f} GB, process RSS {rss_gb():.2f} GB")


def print_hamming(rows: list[dict]) -> None:
    print(
        "\n| kind | N | registry | layout | build s | index MB | q/s (CPU) | q/s (wall)"
        " | matches | recall (sample) | numpy q/s | faiss MultiHash q/s | x MultiHash"
        " | faiss Flat q/s | x Flat | append ms | remove ms |"
    )
    print("|" + "---|" * 17)
    for r in rows:
        multi, flat = r.get("multihash_qps") or 0, r.get("flat_qps") or 0
        numpy_note = "" if r.get("numpy_identical", True) else " DIFFERENT"
        faiss_note = f" ({r.get('multihash', '')}, build {r.get('multihash_build_s', 0):.0f} s)"
        if "multihash_alt" in r:
            faiss_note += (
                f"; {r['multihash_alt_qps']:,.0f} ({r['multihash_alt']},"
                f" build {r['multihash_alt_build_s']:.0f} s)"
            )
        ratio = f"{r['qps_cpu'] / multi:,.0f}" if multi else ""
        if "multihash_alt" in r:
            ratio += f"; {r['qps_cpu'] / r['multihash_alt_qps']:,.0f}"
        print(
            f"| {r['kind']} | {r['n']:,} | {r['registry']} | {r['layout']} | {r['build_s']:.1f}"
            f" | {r['memory_mb']:.0f} | {r['qps_cpu']:,.0f} | {r['qps_wall']:,.0f}"
            f" | {r['matches']:,} | {r['recall']:.4f} ({r['truth']:,} pairs, {r['extra']} extra)"
            f" | {r.get('numpy_qps', 0):,.0f}{numpy_note} | {multi:,.0f}{faiss_note} | {ratio}"
            f" | {flat:,.0f} | {r['qps_cpu'] / flat if flat else 0:,.0f}"
            f" | {r['append_ms']:.2f} | {r['remove_ms']:.2f} |"
        )


def print_sha256(rows: list[dict]) -> None:
    print(
        "\n| registered | lookups | hits | build s | MB | Sha256Set hex /s | raw bytes /s"
        " | lookup_many hex /s | Python set /s | Python dict /s |"
    )
    print("|" + "---|" * 10)
    for r in rows:
        print(
            f"| {r['n']:,} | {r['lookups']:,} | {r['hits']:,} | {r['build_s']:.1f}"
            f" | {r['memory_mb']:.0f} | {r['csr_hex']:,.0f} | {r['csr_raw']:,.0f}"
            f" | {r['many_hex']:,.0f} | {r['set']:,.0f} | {r['dict']:,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=DEFAULT_SIZES, help="kind:N, kind in phash|pdq"
    )
    parser.add_argument("--registries", nargs="+", default=["uniform", "clustered"])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--recall-queries", type=int, default=1_000)
    parser.add_argument("--faiss-queries", type=int, default=1_000)
    parser.add_argument("--flat-queries", type=int, default=300)
    parser.add_argument("--numpy-queries", type=int, default=2_000)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sha256-sizes", nargs="*", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--sha256-lookups", type=int, default=1_000_000)
    parser.add_argument(
        "--combined", type=int, default=0, help="only: memory of a pHash and a PDQ index of N each"
    )
    args = parser.parse_args()
    if args.combined:
        bench_combined(args.combined)
        return

    started = time.perf_counter()
    rows = []
    for item in args.sizes:
        kind, _, size = item.partition(":")
        for name in args.registries:
            rows.append(bench_hamming(kind, int(size), name == "clustered", args))
            print_hamming(rows[-1:])
            sys.stdout.flush()
    sha_rows = [bench_sha256(n, args.sha256_lookups) for n in args.sha256_sizes]
    print("\n## Hamming range search (one core; faiss on the first --faiss-queries queries)")
    print_hamming(rows)
    if sha_rows:
        print("\n## SHA-256 membership (one core)")
        print_sha256(sha_rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"\ntotal {time.perf_counter() - started:.0f} s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
