"""The live index behind the matching engine (optout/matching/live.py): memory per
photo, cost of following the registry (catch-up appends, a withdrawal retired,
compaction) and decisions per second of a 10 000-record chunk. Pure: no database.

    .venv/bin/python benchmarks/bench_engine.py                 # 1 M photos
    .venv/bin/python benchmarks/bench_engine.py --photos 200000 --records 2000

Every photo has sha256, PDQ, pHash and a PDQ quality, and is registered with
the 16 derived variants every upload gets (``registry.variants.DERIVED_VARIANTS``:
mirror, crops, ±2° rotations, the middle band), packed as in ``Photo.variants``. The variants'
hashes are **random codes** (independent random PDQ and pHash per variant, not
hashes of derived images): the index's cost depends on how many entries it
holds and how they spread, not on how the codes were made. Qualities: 95 % of
the photos and variants 50-100, 5 % below 50 (held back by the quality gate).
Every photo and variant carries a **random colour signature** (registry.colour:
colourfulness 0.020-0.255, random cell a*b*), held raw in the variant blobs (33
bytes a variant), so memory counts them and every accepted candidate goes
through the colour check (``--no-colour``: photos, variants and records
without colour signatures, as registrations made before them).
100 photos per creator, every creator under one all_photos opt-out (refusing
ai_training).

Records: half near-duplicates of a random variant (the original included) of a
random registered photo — 0 to 24 bits of its PDQ and 0 to 6 bits of its pHash
flipped, the variant's PDQ quality stated — a quarter of all records also with
the photo's exact sha256; half random. Every record has sha256, PDQ, pHash, a
PDQ quality (the registry's default rule applies, DEFAULT_RULE), a colour
signature (a near-duplicate the variant's own, a random record a random one),
band hashes (``registry.hashing.band_of``: random, except for a near-duplicate
of the middle band, whose band is 0 to 24 / 0 to 4 bits from it and whose own
hashes are random) and a URL.
Times are CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from optout.matching import DEFAULT_THRESHOLDS, Record, decide, record_parse
from optout.matching.decide import SEARCH_PLAN
from optout.matching.index import hex_words
from optout.matching.live import LiveIndex, LiveOptOut, LivePhoto
from optout.matching.rule import QueryHashes
from optout.matching.snapshot import SnapshotOptOut
from registry.colour import COLOUR_BYTES, COLOUR_HEX_LENGTH
from registry.hashing import band_signature
from registry.variants import DERIVED_VARIANTS, PACKED_SIZE, VARIANT_CODES

PER_CREATOR = 100
LOW_QUALITY_SHARE = 0.05
# --no-colour: no colour signatures anywhere (set in main).
COLOURS = True


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def cpu(action: Any) -> tuple[float, Any]:
    start = time.process_time()
    result = action()
    return time.process_time() - start, result


def qualities(shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """PDQ qualities: mostly 50-100, ``LOW_QUALITY_SHARE`` below 50."""
    low = rng.random(shape) < LOW_QUALITY_SHARE
    return np.where(low, rng.integers(0, 50, shape), rng.integers(50, 101, shape)).astype(np.uint8)


def variants_random(count: int, rng: np.random.Generator) -> bytes:
    """``count`` photos' derived variants packed like ``variants_pack``: the code
    of each of DERIVED_VARIANTS, a PDQ quality, a random pHash and PDQ."""
    packed = rng.integers(0, 256, (count, len(DERIVED_VARIANTS), PACKED_SIZE), dtype=np.uint8)
    packed[:, :, 0] = [VARIANT_CODES[name] for name in DERIVED_VARIANTS]
    packed[:, :, 1] = qualities((count, len(DERIVED_VARIANTS)), rng)
    return packed.tobytes()


def colours_random(count: int, rng: np.random.Generator) -> bytes:
    """``count`` raw colour signatures: colourful (20-255 thousandths, never
    grey), random a*b* cells."""
    colours = rng.integers(0, 256, (count, COLOUR_BYTES), dtype=np.uint8)
    colours[:, 0] = rng.integers(20, 256, count)
    return colours.tobytes()


def photos_random(first: int, count: int, rng: np.random.Generator) -> list[LivePhoto]:
    sha = rng.bytes(32 * count).hex()
    pdq = rng.bytes(32 * count).hex()
    phash = rng.bytes(8 * count).hex()
    quality = qualities(count, rng).tolist()
    variants = variants_random(count, rng)
    size = len(DERIVED_VARIANTS) * PACKED_SIZE
    colours = colours_random(count, rng).hex()
    variant_colours = colours_random(count * len(DERIVED_VARIANTS), rng)
    colour_size = len(DERIVED_VARIANTS) * COLOUR_BYTES
    return [
        LivePhoto(
            key=first + i,
            creator=(first + i) // PER_CREATOR,
            registered_version=1,
            sha256=sha[64 * i : 64 * i + 64],
            pdq=pdq[64 * i : 64 * i + 64],
            phash=phash[16 * i : 16 * i + 16],
            pdq_quality=quality[i],
            variants=variants[size * i : size * i + size],
            colour=colours[COLOUR_HEX_LENGTH * i : COLOUR_HEX_LENGTH * (i + 1)] if COLOURS else "",
            variant_colours=(
                variant_colours[colour_size * i : colour_size * (i + 1)] if COLOURS else b""
            ),
        )
        for i in range(count)
    ]


def variant_of(photo: LivePhoto, position: int) -> tuple[str, str, int, str]:
    """(PDQ, pHash, PDQ quality, colour) of the photo's variant at ``position``
    (0: the photo itself, n: the n-th packed derived variant)."""
    if position == 0:
        assert photo.pdq_quality is not None
        return photo.pdq, photo.phash, photo.pdq_quality, photo.colour
    row = photo.variants[(position - 1) * PACKED_SIZE : position * PACKED_SIZE]
    colour = photo.variant_colours[(position - 1) * COLOUR_BYTES : position * COLOUR_BYTES]
    return row[10:42].hex(), row[2:10].hex(), row[1], colour.hex()


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


BAND_POSITION = 1 + DERIVED_VARIANTS.index("band")


def band_random(rng: random.Random) -> str:
    return band_signature(rng.randbytes(32).hex(), rng.randbytes(8).hex(), rng.randint(50, 100))


def records_build(photos: list[LivePhoto], count: int, rng: random.Random) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        if i % 2:
            # Drawn with or without --no-colour: the same records either way.
            colour = f"{rng.randint(20, 255):02x}" + rng.randbytes(COLOUR_BYTES - 1).hex()
            records.append(
                {
                    "id": str(i),
                    "sha256": rng.randbytes(32).hex(),
                    "pdq": rng.randbytes(32).hex(),
                    "phash": rng.randbytes(8).hex(),
                    "pdq_quality": rng.randint(50, 100),
                    "colour": colour if COLOURS else "",
                    "band": band_random(rng),
                    "url": f"https://img{i % 50}.example.net/{i}.jpg",
                }
            )
        else:
            photo = photos[rng.randrange(len(photos))]
            position = rng.randrange(1 + len(DERIVED_VARIANTS))
            pdq, phash, quality, colour = variant_of(photo, position)
            band = band_random(rng)
            if position == BAND_POSITION:  # a captioned copy: its band is near
                band = band_signature(
                    flip(pdq, rng.randint(0, 24), rng), flip(phash, rng.randint(0, 4), rng), quality
                )
                pdq, phash = rng.randbytes(32).hex(), rng.randbytes(8).hex()
            records.append(
                {
                    "id": str(i),
                    "sha256": photo.sha256 if i % 4 == 0 else rng.randbytes(32).hex(),
                    "pdq": flip(pdq, rng.randint(0, 24), rng),
                    "phash": flip(phash, rng.randint(0, 6), rng),
                    "pdq_quality": quality,
                    "colour": colour if COLOURS else "",
                    "band": band,
                    "url": f"https://img{i % 50}.example.net/{i}.jpg",
                }
            )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument(
        "--no-colour", action="store_true", help="no colour signatures on photos or records"
    )
    args = parser.parse_args()
    global COLOURS
    COLOURS = not args.no_colour
    rng = np.random.default_rng(1)
    prng = random.Random(1)

    photos = photos_random(0, args.photos, rng)
    warm = LiveIndex()  # imports and compiled kernels, outside the measurement
    warm.photos_add(photos_random(-1000, 1000, rng))
    warm.view(1).variant_candidates(
        [QueryHashes(p.pdq, p.phash, p.pdq_quality) for p in photos[:10]], SEARCH_PLAN
    )
    del warm
    gc.collect()
    before = rss_bytes()
    tracemalloc.start()
    index = LiveIndex()
    creators = args.photos // PER_CREATOR + 1

    def load() -> None:
        index.opt_outs_add(opt_out(c, 1) for c in range(creators))
        index.photos_add(photos)

    load_s, _ = cpu(load)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    grown = rss_bytes() - before
    n = args.photos
    sizes = index.sizes()
    print(f"photos                 {n:,} ({creators:,} all_photos opt-outs)")
    print(
        f"indexed entries        sha256 {sizes['sha256']:,}, PDQ {len(index.pdq):,} original + "
        f"{len(index.pdq_single):,} mirror (PDQ-only records), pHash {len(index.phash):,} "
        f"original + {len(index.phash_derived):,} derived + {len(index.phash_band):,} band"
    )
    print(f"initial load (CPU s)   {load_s:.1f} (traced)")
    print(f"live memory (traced)   {traced / 1e6:,.0f} MB = {traced / n:,.0f} B/photo")
    arrays = 0
    for name, part in (
        ("sha256", index.sha256),
        ("PDQ (original)", index.pdq),
        ("PDQ (mirror)", index.pdq_single),
        ("pHash (original)", index.phash),
        ("pHash (derived)", index.phash_derived),
        ("pHash (band)", index.phash_band),
    ):
        size = part.memory_bytes()
        arrays += size
        print(f"  index {name:<16} {size / 1e6:,.0f} MB = {size / n:,.0f} B/photo")
    table = index.photos.nbytes()
    print(f"  photo table            {table / 1e6:,.0f} MB = {table / n:,.0f} B/photo")
    blobs = sys.getsizeof(index.blobs) + sum(sys.getsizeof(b) for b in index.blobs.values())
    print(f"  variant blobs          {blobs / 1e6:,.0f} MB = {blobs / n:,.0f} B/photo (+ dict)")
    arrays += table + blobs
    rest = traced - arrays
    print(f"  the rest               {rest / 1e6:,.0f} MB = {rest / n:,.0f} B/photo")
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
    excluded = [d.decision == "exclude" for d in decisions]
    print(
        f"decide {args.records:,} records   {decide_s:.2f} CPU s = {args.records / decide_s:,.0f} "
        f"records/s ({sum(excluded[0::2]):,} of {len(excluded[0::2]):,} near-duplicates and "
        f"{sum(excluded[1::2]):,} of {len(excluded[1::2]):,} random records excluded)"
    )
    queries = [
        QueryHashes(r.pdq, r.phash, r.pdq_quality, r.colour, r.band)
        for r in records
        if isinstance(r, Record)
    ]
    search_s, candidates = cpu(lambda: view.variant_candidates(queries, SEARCH_PLAN))
    found = sum(len(c) for c in candidates)
    print(
        f"  of which the searches {search_s:.2f} CPU s (variant_candidates alone: "
        f"{found:,} candidate variants for {len(queries):,} records)"
    )
    for name, part, kind, radius in (
        ("pHash, original", index.phash, "phash", SEARCH_PLAN.primary_phash),
        ("PDQ, original", index.pdq, "pdq", SEARCH_PLAN.primary_pdq),
        ("pHash, derived", index.phash_derived, "phash", SEARCH_PLAN.derived_phash),
        ("pHash, band", index.phash_band, "band_phash", SEARCH_PLAN.band_phash),
    ):
        if radius is None:
            continue
        values = [getattr(q, kind) for q in queries if getattr(q, kind)]
        codes = hex_words(values, part.words)
        seconds, result = cpu(
            lambda part=part, codes=codes, radius=radius: part.search(codes, radius)
        )
        print(
            f"    {name:<15} radius {radius:>2} over {len(part):>10,} entries: "
            f"{seconds:.2f} CPU s, {len(result.ids):,} hits"
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
