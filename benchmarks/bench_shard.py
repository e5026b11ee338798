"""The workers' hashing of a webdataset shard (optout.batches._shard_records)
against the hashing alone, in the same process: what asking the engine which
images have a match the keypoints would check, and computing keypoints for
those only, adds per image.

The shard: N photos of bench_hashing.py (distinct 1024 x 768 JPEGs, half of
them black and white). Measured three ways, CPU time, best of --repeat
passes each:

- hashing alone: ``registry.hashing.hash_bytes_fast_deferred`` over the
  images (the workers' hashes, no keypoints);
- the fast path with keypoints for every image (``hash_bytes(fast=True)``,
  what ``optout hash --fast`` computes);
- the shard as a worker hashes it, against an empty registry, then with R of
  its photos registered (uploads path, full decode, keypoints) and opted
  out: those R images have a match, so they get keypoints. CPU time of this
  process: the engine's search is in it, PostgreSQL's own work (fixing the
  batch's version, reading the candidates' keypoints) is not.

    createdb optout_bench_shard   # a scratch database: this script empties and fills it
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/optout_bench_shard \\
        .venv/bin/python benchmarks/bench_shard.py -n 400 --registered 40

Without DATABASE_URL it runs on the embedded SQLite defaults (a file under
.run/bench_shard.sqlite3, created fresh).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
if not os.environ.get("DATABASE_URL"):
    SQLITE = ROOT / ".run" / "bench_shard.sqlite3"
    SQLITE.parent.mkdir(exist_ok=True)
    SQLITE.unlink(missing_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{SQLITE}"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # opt-out notices

from bench_hashing import photo_files  # noqa: E402
from django.core.management import call_command  # noqa: E402

from optout import batches  # noqa: E402
from optout.engine import engines  # noqa: E402
from optout.matching.thresholds import DEFAULT_THRESHOLDS  # noqa: E402
from optout.models import Batch, Organization  # noqa: E402
from optout.services import opt_out_file  # noqa: E402
from registry import hashing  # noqa: E402
from registry.models import Channel  # noqa: E402
from registry.services import creator_create_confirmed, photos_register_hashed  # noqa: E402
from registry.uploads import hash_files  # noqa: E402


def shard_of(files: Sequence[bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for i, data in enumerate(files):
            info = tarfile.TarInfo(f"s/{i:05d}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def best_cpu(function: Callable[[], object], repeat: int) -> float:
    """The least CPU seconds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def shard_pass(organization: Organization, shard: bytes, label: str) -> Callable[[], int]:
    """One worker's hashing of the shard for a new batch each call (each
    fixes its registry version); the number of records that got keypoints."""
    calls = iter(range(10**6))

    def run() -> int:
        batch = Batch.objects.create(
            organization=organization,
            use="ai_training",
            format=Batch.Format.WEBDATASET,
            manifest_sha256="0" * 64,
            manifest_bytes=len(shard),
            idempotency_key=f"{label}-{next(calls)}",
            request_digest="0" * 64,
            thresholds=DEFAULT_THRESHOLDS.as_dict(),
        )
        records = batches._shard_records(batch, io.BytesIO(shard))
        return sum("keypoints" in record for record in records)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=400, help="images in the shard")
    parser.add_argument("--registered", type=int, default=40, help="of them registered")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the registry's own INFO lines (emails, batches)
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)  # an empty registry to start
    files = photo_files(args.n, args.seed)
    shard = shard_of(files)
    organization = Organization.objects.create(name=f"bench shard {time.time_ns()}")
    engines.reset()

    alone = best_cpu(lambda: [hashing.hash_bytes_fast_deferred(d) for d in files], args.repeat)
    every = best_cpu(lambda: [hashing.hash_bytes(d, fast=True) for d in files], args.repeat)
    empty_run = shard_pass(organization, shard, "empty")
    empty_run()  # loads the engine
    empty = best_cpu(empty_run, args.repeat)
    with_keypoints_empty = empty_run()

    creator = creator_create_confirmed(email=f"bench-{time.time_ns()}@example.org")
    step = max(1, args.n // max(1, args.registered))
    chosen = [(f"{i}.jpg", files[i]) for i in range(0, args.n, step)][: args.registered]
    photos_register_hashed(creator=creator, items=hash_files(chosen), channel=Channel.API)
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.API)
    matched_run = shard_pass(organization, shard, "matched")
    matched_run()  # the engine catches up
    matched = best_cpu(matched_run, args.repeat)
    with_keypoints = matched_run()

    n = args.n
    print(f"## A shard of {n} images, 1024 x 768 ({os.environ['DATABASE_URL'].split(':')[0]})\n")
    print("| path | CPU ms / image | images/s per core | images given keypoints |")
    print("|---|---|---|---|")
    rows = [
        ("hashing alone (hash_bytes_fast_deferred)", alone, "-"),
        ("fast path, keypoints for every image (optout hash --fast)", every, str(n)),
        ("a worker's shard hashing, empty registry", empty, str(with_keypoints_empty)),
        (
            f"a worker's shard hashing, {len(chosen)} of the images registered",
            matched,
            str(with_keypoints),
        ),
    ]
    for label, seconds, given in rows:
        print(f"| {label} | {seconds / n * 1000:.2f} | **{n / seconds:.0f}** | {given} |")
    print(
        f"\nshard hashing / hashing alone: {empty / alone:.2f} x with nothing registered, "
        f"{matched / alone:.2f} x with {len(chosen) / n:.0%} of the images matching "
        "(the shard's reading, the engine's search per 64 images, their keypoints)"
    )


if __name__ == "__main__":
    main()
