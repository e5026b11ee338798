"""The exact indexes against brute force: every entry within the radius is found,
none beyond it, through appends, tombstones and compaction, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optout.matching.index import NUMBA_AVAILABLE, HammingIndex, Sha256Set, hex_words
from optout.matching.snapshot import hex_to_words
from registry.hashing import hamming

BACKENDS = ["numpy", "numba"] if NUMBA_AVAILABLE else ["numpy"]
# (substrings, key bits); None lets the cost model choose, (0, 0) scans.
LAYOUTS = {
    64: [None, (0, 0), (1, 12), (2, 9), (3, 8), (4, 6), (8, 4)],
    256: [None, (0, 0), (4, 10), (8, 8), (12, 6), (16, 5), (32, 3)],
}
RADII = {64: [0, 1, 2, 5, 8, 12], 256: [0, 1, 7, 16, 31, 40]}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_codes(rng: np.random.Generator, n: int, words: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)


def flipped(rng: np.random.Generator, code: np.ndarray, count: int) -> np.ndarray:
    """``code`` with exactly ``count`` distinct bits flipped."""
    out = code.copy()
    for bit in rng.choice(64 * code.shape[0], size=count, replace=False):
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def brute_force(
    entries: list[tuple[np.ndarray, int, bool]], queries: np.ndarray, radius: int
) -> list[list[tuple[int, int]]]:
    answers = []
    for query in queries:
        found = []
        for code, entry_id, alive in entries:
            distance = int(np.bitwise_count(code ^ query).sum())
            if alive and distance <= radius:
                found.append((distance, entry_id))
        answers.append([(entry_id, distance) for distance, entry_id in sorted(found)])
    return answers


def answers(index: HammingIndex, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
    result = index.search(queries, radius)
    assert len(result) == queries.shape[0]
    return [result.pairs(i) for i in range(len(result))]


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    bits = draw(st.sampled_from([64, 256]))
    return {
        "bits": bits,
        "layout": draw(st.sampled_from(LAYOUTS[bits])),
        "radius": draw(st.sampled_from(RADII[bits])),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "sizes": draw(st.lists(st.integers(0, 120), min_size=1, max_size=4)),
        "removed": draw(st.floats(0, 0.5)),
        "compact": draw(st.booleans()),
    }


@SETTINGS
@given(scenario=scenarios())
def test_search_equals_brute_force_through_appends_removals_and_compaction(
    scenario: dict,
) -> None:
    bits, radius = scenario["bits"], scenario["radius"]
    words = bits // 64
    rng = np.random.default_rng(scenario["seed"])
    queries = random_codes(rng, 6, words)
    indexes = [
        HammingIndex(bits, layout=scenario["layout"], backend=backend) for backend in BACKENDS
    ]
    entries: list[tuple[np.ndarray, int, bool]] = []
    next_id = 0
    for batch, size in enumerate(scenario["sizes"]):
        # Each batch: random codes, neighbours of the queries planted at
        # radius - 1, radius (must match) and radius + 1 (must not), duplicates.
        codes = list(random_codes(rng, size, words))
        for query in queries[: 1 + batch]:
            for distance in {max(radius - 1, 0), radius, radius + 1}:
                codes.append(flipped(rng, query, min(distance, bits)))
        if codes:
            codes.append(codes[0].copy())
        ids = list(range(next_id, next_id + len(codes)))
        if len(ids) > 2:
            ids[-2] = ids[-3]  # one id with two codes
        next_id += len(codes)
        array = np.asarray(codes, dtype=np.uint64).reshape(-1, words)
        for index in indexes:
            index.add(array, np.asarray(ids, dtype=np.int64))
        entries += [(code, entry_id, True) for code, entry_id in zip(codes, ids, strict=True)]
        if batch == 0 and entries:
            gone = {e[1] for e in entries if rng.random() < scenario["removed"]}
            for index in indexes:
                assert index.remove(sorted(gone)) == sum(e[1] in gone for e in entries)
            entries = [(c, i, alive and i not in gone) for c, i, alive in entries]
    if scenario["compact"]:
        for index in indexes:
            index.compact()
            assert len(index.segment_sizes) <= 1

    expected = brute_force(entries, queries, radius)
    for index in indexes:
        assert len(index) == sum(alive for _, _, alive in entries)
        assert answers(index, queries, radius) == expected
    # The planted neighbour at exactly the radius is found; the one just beyond
    # is not (the brute-force comparison above implies it; this says it).
    on_edge = [d for found in expected for _, d in found]
    assert all(d <= radius for d in on_edge)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bits", "radius"), [(64, 8), (64, 0), (256, 31), (256, 0)])
def test_auto_layout_on_a_larger_registry_has_full_recall(
    backend: str, bits: int, radius: int
) -> None:
    """Large enough that the cost model picks multi-index hashing, not a scan."""
    words = bits // 64
    rng = np.random.default_rng(bits + radius)
    codes = random_codes(rng, 40_000, words)
    queries = random_codes(rng, 40, words)
    queries[:20] = codes[:20]  # queries that are registered codes themselves
    planted = []
    for query in queries:
        planted.append(flipped(rng, query, radius))  # id 40_000 + 2i: must match
        planted.append(flipped(rng, query, radius + 1))  # id 40_000 + 2i + 1: must not
    index = HammingIndex(bits, backend=backend)
    index.add(codes, np.arange(40_000))
    index.add(np.asarray(planted), np.arange(40_000, 40_000 + len(planted)))
    assert index._segments[0].tables, "expected multi-index hashing, not a scan"

    result = index.search(queries, radius)
    all_codes = np.concatenate([codes, np.asarray(planted)])
    for i in range(len(queries)):
        distances = np.bitwise_count(all_codes ^ queries[i]).sum(axis=1)
        want = sorted((int(d), int(k)) for k, d in enumerate(distances) if d <= radius)
        assert result.pairs(i) == [(k, d) for d, k in want]
        found = set(result[i][0].tolist())
        assert 40_000 + 2 * i in found
        assert 40_000 + 2 * i + 1 not in found


@pytest.mark.skipif(not NUMBA_AVAILABLE, reason="numba is a dependency; absent only by hand")
def test_numba_and_numpy_give_identical_arrays() -> None:
    rng = np.random.default_rng(7)
    codes = random_codes(rng, 30_000, 4)
    codes[1000:1100] = codes[0]  # a cluster of duplicates
    queries = np.concatenate([codes[:50], random_codes(rng, 50, 4)])
    results = []
    for backend in ("numba", "numpy"):
        index = HammingIndex(256, backend=backend)
        index.add(codes, np.arange(30_000) % 7_000)  # ids repeat
        index.remove([3, 5])
        results.append(index.search(queries, 40))
    for a, b in zip(results[0].__dict__.values(), results[1].__dict__.values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_empty_index_and_empty_queries() -> None:
    for bits in (64, 256):
        index = HammingIndex(bits)
        assert len(index) == 0
        assert index.search(np.zeros((3, bits // 64), np.uint64), 8).pairs(2) == []
        assert len(index.search(np.zeros((0, bits // 64), np.uint64), 8)) == 0
        index.add(np.zeros((0, bits // 64), np.uint64), [])
        index.compact()
        assert index.memory_bytes() == 0


def test_hex_helpers_match_the_registry_hex_format() -> None:
    values = ["8f00ff0000000001", "0000000000000000", "ffffffffffffffff"]
    np.testing.assert_array_equal(hex_words(values, 1), hex_to_words(values, 1))
    index = HammingIndex.from_hex(values, [10, 11, 12])
    assert index.bits == 64
    assert index.search_one("8f00ff0000000000", 1) == [(10, 1)]
    query = "0f00000000000000"
    assert index.search_one(query, 64) == sorted(
        ((i, hamming(query, v)) for i, v in zip([10, 11, 12], values, strict=True)),
        key=lambda pair: (pair[1], pair[0]),
    )
    pdq = "a" * 64
    pdq_index = HammingIndex.from_hex([pdq], [1])
    assert pdq_index.bits == 256
    assert pdq_index.search_one("b" + "a" * 63, 31) == [(1, hamming(pdq, "b" + "a" * 63))]
    with pytest.raises(ValueError, match="hex digits"):
        index.search_hex(["abc"], 8)
    with pytest.raises(ValueError, match="radius"):
        index.search_one(values[0], -1)
    with pytest.raises(ValueError, match="ids"):
        index.add(hex_words(values, 1), [1, 2])


def test_removal_appends_and_memory_accounting() -> None:
    rng = np.random.default_rng(3)
    index = HammingIndex(64)
    codes = random_codes(rng, 5_000, 1)
    index.add(codes, np.arange(5_000))
    before = index.memory_bytes()
    for i in range(5):  # single appends: searchable at once, merged in few segments
        index.add(codes[i : i + 1] ^ np.uint64(1), [10_000 + i])
    assert index.memory_bytes() > before
    assert len(index.segment_sizes) <= 4
    assert index.search(codes[:1], 1).pairs(0) == [(0, 0), (10_000, 1)]
    assert index.remove([0, 10_000, 99_999]) == 2
    assert index.remove([0]) == 0
    assert index.search(codes[:1], 1).pairs(0) == []
    assert len(index) == 5_003
    index.add(codes[:1], [0])  # re-registered after a withdrawal
    assert index.search(codes[:1], 0).pairs(0) == [(0, 0)]
    index.compact()
    assert index.segment_sizes == [5_004]
    assert index.search(codes[:1], 1).pairs(0) == [(0, 0)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batches=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    compact=st.booleans(),
)
def test_sha256_set_equals_a_python_dict(seed: int, batches: list[int], compact: bool) -> None:
    rng = np.random.default_rng(seed)
    model: dict[str, list[int]] = {}
    index = Sha256Set()
    pool = [rng.bytes(32).hex() for _ in range(60)]
    pool.append(pool[0][:16] + "0" * 48)  # shares an 8-byte prefix with pool[0]
    next_id = 0
    for size in batches:
        digests = [pool[int(rng.integers(len(pool)))] for _ in range(size)]
        ids = list(range(next_id, next_id + size))
        next_id += size
        index.add(digests, ids)
        for digest, entry_id in zip(digests, ids, strict=True):
            model.setdefault(digest, []).append(entry_id)
        gone = [i for i in range(next_id) if rng.random() < 0.1]
        index.remove(gone)
        model = {d: [i for i in v if i not in gone] for d, v in model.items()}
    if compact:
        index.compact()
    queries = [*pool, rng.bytes(32).hex()]
    want = [sorted(model.get(q, [])) for q in queries]
    assert [ids.tolist() for ids in index.lookup_many(queries)] == want
    raw = np.frombuffer(bytes.fromhex("".join(queries)), np.uint8).reshape(-1, 32)
    assert [ids.tolist() for ids in index.lookup_many(raw)] == want
    assert len(index) == sum(len(v) for v in model.values())
    assert (queries[0] in index) == bool(want[0])


def test_sha256_set_rejects_malformed_digests_and_handles_empty() -> None:
    index = Sha256Set()
    assert index.lookup_many([]) == []
    assert index.lookup_one("0" * 64) == []
    index = Sha256Set.from_hex(["ab" * 32], [5])
    assert index.lookup_one("AB" * 32) == [5]
    with pytest.raises(ValueError, match="64 hex digits"):
        index.lookup_many(["ab" * 31])
    with pytest.raises(ValueError):
        index.lookup_many(["zz" * 32])
