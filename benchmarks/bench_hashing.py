"""Benchmark of photo hashing (registry.hashing): the full decode against the fast
path (JPEG draft decoding), on one core and in `optout hash`'s process pool, and
how far the fast path's PDQ and pHash are from the full decode's.

The photos: N distinct 1024 x 768 JPEGs (quality 90, 4:2:0; one in 4 progressive,
one in 8 stored sideways with an EXIF orientation tag), each a random 4:3 window
of a photograph that ships with scikit-image or of the real camera photo in
tests/fixtures/pdq-reference (bridge-1), resized, possibly mirrored, brightness
changed, with light sensor-like grain, so that every file and every hash differs.

Reported:
- images/s on one core, full decode, fast path (`optout hash --fast`, keypoints
  included) and the workers' path (the fast path with the keypoints deferred:
  they compute them only for images with a match they would check), in this
  process: from CPU time (time.process_time; other work on the machine
  inflates wall time, not this) and from wall time; their ratio;
- where the time goes, per stage, for both paths;
- `optout hash`'s process pool (optout.cli.hash_results) over a folder of the
  files, --workers cores: wall images/s, and CPU per image of the workers;
  with --fast --no-variants (what pipelines send), the full decode without
  variants, and --fast with variants (a creator's registration);
- fast vs full: bits of PDQ and pHash that differ (histogram, min, median,
  p95, max), PDQ quality, the pHash fallback rate; and, for contrast, the naive
  draft (pdqhash and imagehash run on the reduced image as is);
- with --edits K: the matching consequence. K photos get edited copies (JPEG
  quality 50, brightness +20 %, 5 % centre crop, text), each compared with the
  photo's full-decode hash (the registered one): distances and recall at the
  registry's thresholds when the copy is hashed by the full decode or fast.

    .venv/bin/python benchmarks/bench_hashing.py                 # N = 400, 2 workers
    .venv/bin/python benchmarks/bench_hashing.py -n 2000 --edits 200
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import imagehash  # noqa: E402
import pdqhash  # noqa: E402

from optout import cli  # noqa: E402
from optout.matching.thresholds import DEFAULT_THRESHOLDS  # noqa: E402
from registry import fast_hashing, hashing, keypoints  # noqa: E402

SIZE = (1024, 768)
QUALITY = 90
# Photographs bundled in the scikit-image wheel (synthetic ones left out) and the
# camera photo of Meta's PDQ test set, which the repository ships.
SKIMAGE_SOURCES = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "page",
    "text",
)
BRIDGE = ROOT / "tests/fixtures/pdq-reference/reg-test-input_dih_bridge-1-original.jpg"
EXIF_ORIENTATION = 0x0112

# Displayed upright -> stored: how a camera held sideways or upside down stores
# the pixels for each orientation tag (the tag says how to turn them back).
STORED_FOR_ORIENTATION = {
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
    3: Image.Transpose.ROTATE_180,
}


# --- the photos ----------------------------------------------------------------


def source_photos() -> list[Image.Image]:
    from skimage import data

    photos = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arrays = [np.asarray(getattr(data, name)()) for name in SKIMAGE_SOURCES]
        arrays.append(np.asarray(data.stereo_motorcycle()[0]))
    for array in arrays:
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos.append(Image.fromarray(array[..., :3].astype(np.uint8)))
    photos.append(Image.open(BRIDGE).convert("RGB"))
    return photos


def variant(source: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random 4:3 window of ``source`` at 1024 x 768, edited a little."""
    width, height = source.size
    window_width = min(width, height * 4 / 3) * rng.uniform(0.6, 1.0)
    window_height = window_width * 3 / 4
    left = rng.uniform(0, width - window_width)
    top = rng.uniform(0, height - window_height)
    box = (left, top, left + window_width, top + window_height)
    image = source.resize(SIZE, Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    grain = rng.normal(0, 2.5, size=(SIZE[1], SIZE[0], 1))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def jpeg(image: Image.Image, quality: int = QUALITY, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **params)
    return buffer.getvalue()


def photo_files(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sources = source_photos()
    files = []
    for i in range(count):
        image = variant(sources[i % len(sources)], rng)
        params: dict[str, object] = {"progressive": i % 4 == 1}
        if i % 8 == 3:
            orientation = (6, 8, 3)[(i // 8) % 3]
            image = image.transpose(STORED_FOR_ORIENTATION[orientation])
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = orientation
            params["exif"] = exif.tobytes()
        files.append(jpeg(image, **params))
    assert len({hashing.sha256_hex(data) for data in files}) == count
    return files


# --- timing --------------------------------------------------------------------


def timed(function: Callable[[bytes], object], files: Sequence[bytes]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one pass over ``files``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for data in files:
        function(data)
    return time.process_time() - cpu, time.perf_counter() - wall


# The workers' shard hashing: the fast path without the keypoints, which they
# compute only for images with a match the keypoints would check
# (optout.batches._shard_keypoints: the "keypoints" stage of the fast path,
# times the share of such images).
WORKER_PATH = "fast, keypoints deferred (workers)"


def single_core(files: Sequence[bytes], repeat: int) -> dict[str, tuple[float, float]]:
    """Best CPU and best wall seconds per image of each path, passes interleaved."""
    paths: dict[str, Callable[[bytes], object]] = {
        "full": hashing.hash_bytes,
        "fast": lambda data: hashing.hash_bytes(data, fast=True),
        WORKER_PATH: hashing.hash_bytes_fast_deferred,
    }
    for function in paths.values():  # imports, caches, first-call costs
        function(files[0])
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(repeat):
        for name, function in paths.items():
            runs[name].append(timed(function, files))
    return {
        name: (min(c for c, _ in r) / len(files), min(w for _, w in r) / len(files))
        for name, r in runs.items()
    }


class Stages:
    """CPU seconds spent in named steps, summed over calls."""

    def __init__(self, *names: str) -> None:
        self.seconds = dict.fromkeys(names, 0.0)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.process_time()
        yield
        self.seconds[name] += time.process_time() - start


def stage_times(files: Sequence[bytes]) -> dict[str, dict[str, float]]:
    """CPU ms per image of each step of both paths (averaged over ``files``)."""
    full = Stages("decode", "pdq", "phash", "colour", "band", "keypoints", "sha256")
    fast = Stages(
        "decode (draft)",
        "luma",
        "pdq",
        "phash",
        "phash fallback",
        "colour",
        "band",
        "keypoints",
        "sha256",
    )
    for data in files:
        with full("decode"):
            rgb = hashing.decode(data)
        with full("pdq"):
            hashing.pdq_of(rgb)
        with full("phash"):
            hashing.phash_of(rgb)
        with full("colour"):
            hashing.colour_of(rgb)
        with full("band"):
            hashing.band_of(rgb)
        with full("keypoints"):
            keypoints.keypoints_of(rgb)
        with full("sha256"):
            hashing.sha256_hex(data)
        with fast("decode (draft)"):
            reduced = hashing.decode_reduced(data, ycbcr=True)
        reversed_ = fast_hashing.ORIENTATION_REVERSED[reduced.orientation]
        size = (reduced.height, reduced.width)
        with fast("luma"):
            luma = hashing.reduced_luma(reduced)
        with fast("pdq"):
            fast_hashing.pdq_from_64(
                fast_hashing.pdq_64_of_luma(luma, size, reduced.scale, reversed_)
            )
        with fast("phash"):
            _, margin = fast_hashing.phash_of_luma(luma, size, reduced.scale, reversed_)
        if reduced.scale > 1 and margin < hashing.PHASH_FAST_MIN_MARGIN:
            with fast("phash fallback"):
                hashing.phash_of_full_decode(data)
        with fast("colour"):
            hashing.colour_of(reduced.rgb)
        with fast("band"):
            if reduced.scale > 1:
                hashing.band_of_luma(luma, size[1], reduced.scale, reversed_[1])
            else:
                hashing.band_of(reduced.rgb)
        with fast("keypoints"):
            keypoints.keypoints_of(hashing.luminance(reduced.rgb))
        with fast("sha256"):
            hashing.sha256_hex(data)
    scale = 1000 / len(files)
    return {
        "full": {k: v * scale for k, v in full.seconds.items()},
        "fast": {k: v * scale for k, v in fast.seconds.items()},
    }


def pool(
    files: Sequence[bytes], workers: int, fast: bool, with_variants: bool
) -> tuple[float, float]:
    """`optout hash`'s pool over a folder of the files: (wall s, workers' CPU s)."""
    with tempfile.TemporaryDirectory(prefix="bench-hashing-") as folder:
        root = Path(folder)
        for i, data in enumerate(files):
            (root / f"{i:05d}.jpg").write_bytes(data)
        paths, _ = cli.photo_paths(root)
        # One worker hashes in this process (cli.hash_results runs no pool).
        who = resource.RUSAGE_SELF if workers <= 1 else resource.RUSAGE_CHILDREN
        before = resource.getrusage(who)
        start = time.perf_counter()
        results = list(
            cli.hash_results(
                root,
                paths,
                workers=workers,
                max_bytes=hashing.MAX_BYTES,
                fast=fast,
                with_variants=with_variants,
            )
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(who)
    assert all(result.line is not None for result in results), "a photo failed to hash"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# --- accuracy ------------------------------------------------------------------


def differences(files: Sequence[bytes]) -> dict[str, list[int] | list[float]]:
    out: dict[str, list] = {
        k: []
        for k in (
            "pdq",
            "phash",
            "quality",
            "phash_raw",
            "margin",
            "pdq_naive",
            "phash_naive",
            "scale",
        )
    }
    for data in files:
        full = hashing.hash_bytes(data)
        fast = hashing.hash_bytes(data, fast=True)
        assert (fast.sha256, fast.width, fast.height) == (full.sha256, full.width, full.height)
        reduced = hashing.decode_reduced(data)
        raw, margin = fast_hashing.phash_of_luma(
            fast_hashing.luma_of(np.asarray(reduced.rgb)),
            (reduced.height, reduced.width),
            reduced.scale,
            fast_hashing.ORIENTATION_REVERSED[reduced.orientation],
        )
        naive_bits, _ = pdqhash.compute(np.asarray(reduced.rgb))
        out["pdq"].append(hashing.hamming(full.pdq, fast.pdq))
        out["phash"].append(hashing.hamming(full.phash, fast.phash))
        out["quality"].append(fast.pdq_quality - full.pdq_quality)
        out["phash_raw"].append(hashing.hamming(full.phash, raw))
        out["margin"].append(margin)
        out["pdq_naive"].append(hashing.hamming(full.pdq, hashing.bits_to_hex(naive_bits)))
        out["phash_naive"].append(hashing.hamming(full.phash, str(imagehash.phash(reduced.rgb))))
        out["scale"].append(reduced.scale)
    return out


def edited_copies(data: bytes, seed: int) -> dict[str, bytes]:
    upright = hashing.decode(data)
    width, height = upright.size
    crop = upright.crop((width * 0.025, height * 0.025, width * 0.975, height * 0.975)).resize(
        upright.size, Image.Resampling.BICUBIC
    )
    texted = upright.copy()
    draw = ImageDraw.Draw(texted)
    font = ImageFont.load_default(size=height // 14)
    draw.text(
        (width * 0.05, height * (0.1 + 0.7 * (seed % 5) / 5)),
        "reposted from @someone",
        fill=(255, 255, 255),
        font=font,
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    return {
        "JPEG quality 50": jpeg(upright, 50),
        "brightness +20 %": jpeg(ImageEnhance.Brightness(upright).enhance(1.2)),
        "centre crop 5 %": jpeg(crop),
        "text overlay": jpeg(texted),
    }


def edits(files: Sequence[bytes]) -> dict[str, dict[str, list[int]]]:
    """Per edit: PDQ and pHash distances of the copy to the registered photo when
    the copy is hashed in full or fast (photo registered in full), and both fast."""
    table: dict[str, dict[str, list[int]]] = {}
    for i, data in enumerate(files):
        registered = hashing.hash_bytes(data)
        registered_fast = hashing.hash_bytes(data, fast=True)
        for edit, copy in edited_copies(data, i).items():
            exact = hashing.hash_bytes(copy)
            fast = hashing.hash_bytes(copy, fast=True)
            row = table.setdefault(edit, {})
            for key, value in (
                ("pdq_exact", hashing.hamming(registered.pdq, exact.pdq)),
                ("pdq_fast", hashing.hamming(registered.pdq, fast.pdq)),
                ("pdq_both_fast", hashing.hamming(registered_fast.pdq, fast.pdq)),
                ("phash_exact", hashing.hamming(registered.phash, exact.phash)),
                ("phash_fast", hashing.hamming(registered.phash, fast.phash)),
                ("phash_both_fast", hashing.hamming(registered_fast.phash, fast.phash)),
            ):
                row.setdefault(key, []).append(value)
    return table


# --- report --------------------------------------------------------------------


def summary(values: Sequence[float]) -> str:
    a = np.asarray(values, dtype=float)
    return (
        f"min {a.min():g}, median {np.median(a):g}, p95 {np.percentile(a, 95):g}, max {a.max():g}"
    )


def histogram(values: Sequence[int]) -> str:
    counts = np.bincount(np.asarray(values, dtype=int) - min(values))
    return ", ".join(f"{min(values) + k}: {c}" for k, c in enumerate(counts) if c)


def report(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    files = photo_files(args.n, args.seed)
    sizes = [len(data) for data in files]
    print(f"## {args.n} photos, {SIZE[0]} x {SIZE[1]}, JPEG quality {QUALITY}")
    print(f"file size: mean {statistics.mean(sizes) / 1024:.0f} KiB ({summary(sizes)} bytes)")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")

    print("### One core, this process (best of", args.repeat, "passes each)\n")
    print("| path | ms/image (CPU) | images/s (CPU) | ms/image (wall) | images/s (wall) |")
    print("|---|---|---|---|---|")
    single = single_core(files, args.repeat)
    for name, (cpu, wall) in single.items():
        cells = f"{cpu * 1000:.2f} | **{1 / cpu:.0f}** | {wall * 1000:.2f} | {1 / wall:.0f}"
        print(f"| {name} | {cells} |")
    print(
        f"\nfast / full: {single['full'][0] / single['fast'][0]:.1f} x (CPU), "
        f"{single['full'][1] / single['fast'][1]:.1f} x (wall); the workers' path / full: "
        f"{single['full'][0] / single[WORKER_PATH][0]:.1f} x (CPU)\n"
    )

    print("### Where the time goes (CPU ms per image)\n")
    stages = stage_times(files)
    for name, table in stages.items():
        parts = ", ".join(f"{stage} {ms:.2f}" for stage, ms in table.items())
        print(f"- {name}: {parts}; total {sum(table.values()):.2f}")
    print()

    print(f"### Process pool (`optout hash`, {args.workers} workers, files on disk)\n")
    print(
        "| command | wall s | images/s | images/s per worker (wall) | worker CPU ms/image "
        "| images per worker CPU-second |"
    )
    print("|---|---|---|---|---|---|")
    for fast, with_variants in ((True, False), (False, False), (True, True)):
        wall, cpu = pool(files, args.workers, fast, with_variants)
        command = "optout hash" + (" --fast" if fast else "")
        command += "" if with_variants else " --no-variants"
        print(
            f"| `{command}` | {wall:.2f} | **{args.n / wall:.0f}** | "
            f"{args.n / wall / args.workers:.0f} | {cpu / args.n * 1000:.2f} | {args.n / cpu:.0f} |"
        )
    print(
        "\n(`--no-variants`: the records pipelines check; with variants: a creator's "
        "hash-only registration, whose variants always come from the full decode.)"
    )
    print()

    print("### Fast path vs full decode (bits that differ)\n")
    diff = differences(files)
    scales = dict(zip(*np.unique(diff["scale"], return_counts=True), strict=True))
    print(f"decoded at scale: {', '.join(f'1/{s}: {c}' for s, c in scales.items())}")
    rows = [
        ("PDQ (256 bits)", diff["pdq"]),
        ("pHash (64 bits)", diff["phash"]),
        ("pHash before the fallback", diff["phash_raw"]),
        ("naive draft: pdqhash on the reduced image", diff["pdq_naive"]),
        ("naive draft: imagehash on the reduced image", diff["phash_naive"]),
        ("PDQ quality (fast - full)", diff["quality"]),
    ]
    print("\n| | min / median / p95 / max | histogram (bits: photos) |")
    print("|---|---|---|")
    for label, values in rows:
        print(f"| {label} | {summary(values)} | {histogram(values)} |")
    margins = np.asarray(diff["margin"])
    raw = np.asarray(diff["phash_raw"])
    drafted = np.asarray(diff["scale"]) > 1
    fallback = drafted & (margins < hashing.PHASH_FAST_MIN_MARGIN)
    print(
        f"\npHash fallback to the full decode (margin < {hashing.PHASH_FAST_MIN_MARGIN:g}): "
        f"{fallback.sum()} of {args.n} ({fallback.mean():.1%}). Margins of the photos "
        f"whose pHash moved by more than 2 bits before the fallback: "
        f"{sorted(round(m) for m in margins[raw > 2].tolist()) or 'none'}; "
        f"moved by 2: median margin {np.median(margins[raw == 2]) if (raw == 2).any() else 0:.0f}; "
        f"all photos: {summary(margins.round())}\n"
    )

    if args.edits:
        thresholds = DEFAULT_THRESHOLDS
        print(
            f"### Matching consequence ({args.edits} photos registered with the full "
            f"decode; thresholds PDQ {thresholds.pdq}, pHash {thresholds.phash})\n"
        )
        print(
            "| edit | PDQ distance: copy hashed in full / fast / both fast "
            "(median, max) | PDQ recall full / fast / both fast | pHash distance "
            "(median, max) | pHash recall full / fast / both fast |"
        )
        print("|---|---|---|---|---|")
        for edit, row in edits(files[: args.edits]).items():
            cells = []
            for kind, threshold in (("pdq", thresholds.pdq), ("phash", thresholds.phash)):
                columns = [np.asarray(row[f"{kind}_{w}"]) for w in ("exact", "fast", "both_fast")]
                cells.append(" / ".join(f"{np.median(c):g}, {c.max()}" for c in columns))
                cells.append(" / ".join(f"{(c <= threshold).mean():.3f}" for c in columns))
            print(f"| {edit} | {' | '.join(cells)} |")
        print()
    print(f"total run time {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=400, help="photos (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per path")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--edits", type=int, default=100, help="photos whose edited copies are hashed (0: none)"
    )
    report(parser.parse_args())


if __name__ == "__main__":
    main()
