"""The live index behind the matching engine (optout/matching/live.py): memory per
photo, cost of following the registry (catch-up appends, a withdrawal retired,
compaction) and decisions per second of a 10 000-record chunk. Pure: no database.

    .venv/bin/python benchmarks/bench_engine.py                 # 1 M photos
    .venv/bin/python benchmarks/bench_engine.py --photos 200000 --records 2000

Every photo has sha256, PDQ and pHash; 100 photos per creator, every creator
under one all_photos opt-out (refusing ai_training). Records: half near-
duplicates of registered photos (a few bits flipped), half random; every record
has all three hashes and a URL. Times are CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np

from optout.matching import DEFAULT_THRESHOLDS, decide, record_parse
from optout.matching.live import LiveIndex, LiveOptOut, LivePhoto
from optout.matching.snapshot import SnapshotOptOut

PER_CREATOR = 100


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def cpu(action: Any) -> tuple[float, Any]:
    start = time.process_time()
    result = action()
    return time.process_time() - start, result


def photos_random(first: int, count: int, rng: np.random.Generator) -> list[LivePhoto]:
    sha = rng.bytes(32 * count).hex()
    pdq = rng.bytes(32 * count).hex()
    phash = rng.bytes(8 * count).hex()
    return [
        LivePhoto(
            key=first + i,
            creator=(first + i) // PER_CREATOR,
            registered_version=1,
            sha256=sha[64 * i : 64 * i + 64],
            pdq=pdq[64 * i : 64 * i + 64],
            phash=phash[16 * i : 16 * i + 16],
        )
        for i in range(count)
    ]


def opt_out(creator: int, version: int) -> LiveOptOut:
    return LiveOptOut(
        SnapshotOptOut(
            key=creator,
            public_id=f"00000000-0000-0000-0000-{creator:012d}",
            creator=creator,
            uses=("ai_training",),
            scope="all_photos",
        ),
        filed_version=version,
    )


def flip(hex_value: str, bits: int, rng: random.Random) -> str:
    value = int(hex_value, 16)
    for position in rng.sample(range(len(hex_value) * 4), bits):
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def records_build(photos: list[LivePhoto], count: int, rng: random.Random) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        if i % 2:
            records.append(
                {
                    "id": str(i),
                    "sha256": rng.randbytes(32).hex(),
                    "pdq": rng.randbytes(32).hex(),
                    "phash": rng.randbytes(8).hex(),
                    "url": f"https://img{i % 50}.example.net/{i}.jpg",
                }
            )
        else:
            photo = photos[rng.randrange(len(photos))]
            records.append(
                {
                    "id": str(i),
                    "sha256": photo.sha256 if i % 4 == 0 else rng.randbytes(32).hex(),
                    "pdq": flip(photo.pdq, rng.randint(0, 20), rng),
                    "phash": flip(photo.phash, rng.randint(0, 6), rng),
                    "url": f"https://img{i % 50}.example.net/{i}.jpg",
                }
            )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    prng = random.Random(1)

    photos = photos_random(0, args.photos, rng)
    warm = LiveIndex()  # imports and compiled kernels, outside the measurement
    warm.photos_add(photos_random(-1000, 1000, rng))
    warm.view(1).within_many("pdq", [photos[0].pdq], 31)
    del warm
    gc.collect()
    before = rss_bytes()
    tracemalloc.start()
    index = LiveIndex()
    creators = args.photos // PER_CREATOR + 1
    load_s, _ = cpu(
        lambda: (
            index.opt_outs_add(opt_out(c, 1) for c in range(creators)),
            index.photos_add(photos),
        )
    )
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    grown = rss_bytes() - before
    arrays = sum(i.memory_bytes() for i in (index.sha256, index.pdq, index.phash))
    n = args.photos
    print(f"photos                 {n:,} ({creators:,} all_photos opt-outs)")
    print(f"initial load (CPU s)   {load_s:.1f} (traced)")
    print(f"live memory (traced)   {traced / 1e6:,.0f} MB = {traced / n:,.0f} B/photo")
    print(f"  index arrays         {arrays / 1e6:,.0f} MB = {arrays / n:,.0f} B/photo")
    table = index.photos.nbytes()
    print(f"  photo table          {table / 1e6:,.0f} MB = {table / n:,.0f} B/photo")
    arrays += table
    rest = traced - arrays
    print(f"  the rest             {rest / 1e6:,.0f} MB = {rest / n:,.0f} B/photo")
    print(f"RSS growth             {grown / 1e6:,.0f} MB = {grown / n:,.0f} B/photo")

    records = [
        record_parse(r, row=i) for i, r in enumerate(records_build(photos, args.records, prng))
    ]
    view = index.view(2)
    decide_s, decisions = cpu(
        lambda: decide(
            records, view, use="ai_training", organization=None, thresholds=DEFAULT_THRESHOLDS
        )
    )
    excluded = sum(d.decision == "exclude" for d in decisions)
    print(
        f"decide {args.records:,} records   {decide_s:.2f} CPU s = {args.records / decide_s:,.0f} "
        f"records/s ({excluded:,} excluded)"
    )

    version = 2
    for count, repeat in ((1, 21), (100, 11), (10_000, 3)):
        times = []
        for _ in range(repeat):
            new = photos_random(args.photos + version * 100_000, count, rng)
            seconds, _ = cpu(lambda new=new: index.photos_add(new))
            times.append(seconds)
            version += 1
        print(
            f"catch-up: {count:>6,} photos appended   median "
            f"{statistics.median(times) * 1e3:8.2f} ms of {repeat}; "
            f"PDQ segments now {index.pdq.segment_sizes}"
        )
    seconds, _ = cpu(lambda: index.opt_outs_add([opt_out(creators + 1, version)]))
    print(f"catch-up: 1 opt-out filed            {seconds * 1e3:8.2f} ms")
    index.withdraw(5, version)
    seconds, retired = cpu(lambda: index.retire(version))
    print(
        f"retire: 1 withdrawn all_photos opt-out ({retired.photos} photos tombstoned) "
        f"{seconds * 1e3:.2f} ms"
    )
    seconds, _ = cpu(index.compact)
    print(f"compact (full in-memory rebuild)     {seconds:8.2f} s")


if __name__ == "__main__":
    main()
