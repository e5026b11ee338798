"""The matching engine against PostgreSQL: a full load, the cost of one
catch-up (a registration, a filing, a withdrawal) on a loaded engine, and the
bytes PostgreSQL stores per photo, per ledger row, per chunk record and per
excluded record.

    createdb optout_bench   # a scratch database: this script fills it
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/optout_bench \\
        .venv/bin/python benchmarks/bench_engine_db.py --photos 300000

Photos are inserted directly (100 per creator, one all_photos opt-out each),
each with a PDQ quality and the 15 derived variants an upload registers
(``Photo.variants``; random codes, not hashes of derived images); the engine
then reads them like in production. Wall-clock seconds; the database runs on
the same machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from optout import engine as engine_module  # noqa: E402
from optout.engine import MatchingEngine, registry_photos_at  # noqa: E402
from optout.matching import record_parse  # noqa: E402
from optout.models import Batch, BatchResult, Chunk, OptOut, Organization  # noqa: E402
from registry.models import Channel, ConsentEvent, Creator, Photo  # noqa: E402
from registry.services import photos_register_from_hashes  # noqa: E402
from registry.uploads import HashLine  # noqa: E402
from registry.variants import DERIVED_VARIANTS, Variant, variants_pack  # noqa: E402

PER_CREATOR = 100


def version_next() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('registry_version_seq')")
        version = int(cursor.fetchone()[0])
    ConsentEvent.objects.create(
        registry_version=version,
        kind="photo_registered",
        creator_public_id=uuid.uuid4(),
        actor="bench",
        channel="api",
        notice_version="bench",
    )
    return version


def variants_random() -> tuple[Variant, ...]:
    """The derived variants of a photo, random codes."""
    return tuple(
        Variant(
            name=name,
            pdq=secrets.token_hex(32),
            pdq_quality=50 + secrets.randbelow(51),
            phash=secrets.token_hex(8),
        )
        for name in DERIVED_VARIANTS
    )


def photo(creator: Creator, version: int) -> Photo:
    return Photo(
        creator=creator,
        sha256=secrets.token_hex(32),
        pdq=secrets.token_hex(32),
        pdq_quality=50 + secrets.randbelow(51),
        phash=secrets.token_hex(8),
        variants=variants_pack(list(variants_random())),
        registered_version=version,
    )


def fill(count: int) -> list[Creator]:
    creators = Creator.objects.bulk_create(
        [Creator() for _ in range(count // PER_CREATOR)], batch_size=10_000
    )
    version = version_next()
    for start in range(0, len(creators), 100):
        Photo.objects.bulk_create(
            [photo(c, version) for c in creators[start : start + 100] for _ in range(PER_CREATOR)],
            batch_size=10_000,
        )
    OptOut.objects.bulk_create(
        [
            OptOut(
                creator=c, uses=["ai_training"], scope="all_photos", channel="web",
                notice_version="bench", filed_version=version,
            )
            for c in creators
        ],
        batch_size=10_000,
    )  # fmt: skip
    return creators


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def follow(engine: MatchingEngine, version: int) -> float:
    """Seconds until the engine answers as of ``version`` (catching up first)."""
    start = time.perf_counter()
    with engine.at(version):
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if Photo.objects.count() < args.photos:
        seconds = timed(lambda: fill(args.photos))
        print(f"inserted {args.photos:,} photos in {seconds:.0f} s")
    creators = list(Creator.objects.order_by("id")[:50])
    total = Photo.objects.count()

    engine = MatchingEngine()
    start = time.perf_counter()
    with engine.current():
        seconds = time.perf_counter() - start
    assert engine.index is not None
    print(
        f"full load: {total:,} photos in {seconds:.1f} s = {total / seconds:,.0f} photos/s "
        f"({engine.index.sizes()})"
    )

    registration, filing, withdrawal = [], [], []
    for creator in creators[:20]:
        version = version_next()
        photo(creator, version).save()
        registration.append(follow(engine, version))
    for creator in creators[20:40]:
        version = version_next()
        OptOut.objects.create(
            creator=creator, uses=["data_mining"], scope="all_photos", channel="web",
            notice_version="bench", filed_version=version,
        )  # fmt: skip
        filing.append(follow(engine, version))
    for opt_out in OptOut.objects.filter(withdrawn_version__isnull=True)[:20]:
        version = version_next()
        OptOut.objects.filter(pk=opt_out.pk).update(
            withdrawn_version=version, withdrawn_at=timezone.now()
        )
        withdrawal.append(follow(engine, version))
    for name, times in (
        ("a photo registered under an all_photos opt-out", registration),
        (f"an all_photos opt-out filed (covering {PER_CREATOR} photos)", filing),
        (f"an all_photos opt-out withdrawn ({PER_CREATOR} photos retired)", withdrawal),
    ):
        print(f"catch-up, {name}: median {statistics.median(times) * 1e3:.1f} ms of {len(times)}")
    assert engine.full_loads == 1
    # Every lookup and every batch counts the registry's photos at its version
    # (engine.registry_photos_at: how far an unconfirmed match is held back);
    # the last version's count is kept, so only a new version pays.
    newest = version_next()
    counting = []
    for _ in range(20):
        engine_module._photos_counted = None
        counting.append(timed(lambda: registry_photos_at(newest)))
    kept = [timed(lambda: registry_photos_at(newest)) for _ in range(20)]
    print(
        f"counting the photos at a new version (registry_photos_at, "
        f"{registry_photos_at(newest):,}): median {statistics.median(counting) * 1e3:.1f} ms "
        f"of {len(counting)}; at the same version again {statistics.median(kept) * 1e6:.1f} µs"
    )
    storage(creators[0])


def relation_bytes(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE " + table)
        cursor.execute("SELECT pg_total_relation_size(%s)", [table])
        return int(cursor.fetchone()[0])


def storage(creator: Creator) -> None:
    """Bytes per row, tables and indexes included (after VACUUM)."""
    photos = Photo.objects.count()
    print(f"registry_photo: {relation_bytes('registry_photo') / photos:,.0f} B/photo")
    lines: list[tuple[int | None, HashLine | str]] = [
        (None, HashLine(sha256=secrets.token_hex(32), pdq=secrets.token_hex(32),
                        phash=secrets.token_hex(8), pdq_quality=80, filename="IMG_0001.jpg",
                        variants=variants_random()))
        for _ in range(20_000)
    ]  # fmt: skip
    before = ConsentEvent.objects.count()
    photos_register_from_hashes(creator=creator, items=lines, channel=Channel.API)
    events = ConsentEvent.objects.count()
    print(f"registry_consentevent: {relation_bytes('registry_consentevent') / events:,.0f} B/row "
          f"({events - before:,} photo registrations among {events:,} rows)")  # fmt: skip
    organization, _ = Organization.objects.get_or_create(name="bench")
    records: list[dict[str, Any]] = [
        {"row": i + 1, "id": f"{i:08d}", "sha256": secrets.token_hex(32),
         "pdq": secrets.token_hex(32), "phash": secrets.token_hex(8), "pdq_quality": 80,
         "url": f"https://images.example.com/{secrets.token_hex(6)}/{i}.jpg"}
        for i in range(10_000)
    ]  # fmt: skip
    batch = Batch.objects.create(
        organization=organization, use="ai_training", format="jsonl", manifest_sha256="0" * 64,
        manifest_bytes=1, idempotency_key=secrets.token_hex(8), request_digest="0" * 64,
    )  # fmt: skip
    chunk = Chunk.objects.create(
        batch=batch, index=0, payload=Chunk.payload_of(records), record_count=10_000
    )
    read = [timed(lambda: Chunk.objects.get(pk=chunk.pk).records) for _ in range(5)]
    print(f"reading a 10 000-record chunk: median {statistics.median(read) * 1e3:.0f} ms")
    parse = timed(lambda: [record_parse(r, r["row"]) for r in records])
    print(f"validating its records (record_parse): {parse * 1e3:.0f} ms")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_size(payload) FROM optout_chunk WHERE id = %s", [chunk.pk])
        print(f"optout_chunk.payload: {cursor.fetchone()[0] / 10_000:,.0f} B/record (JSON, TOAST)")
    match = {"kind": "pdq", "distance": 12, "threshold": 40,
             "opt_out": str(uuid.uuid4()), "uses": ["ai_training"],
             "evidence": {"variant": "crop_centre_90", "basis": "pdq+phash",
                          "pdq_distance": 12, "pdq_threshold": 40, "phash_distance": 4,
                          "phash_threshold": 8, "quality": "ok"}}  # fmt: skip
    BatchResult.objects.bulk_create(
        [
            BatchResult(batch=batch, chunk=chunk, row=r["row"], record_id=r["id"],
                        decision="exclude", matches=[match])
            for r in records
        ]
    )  # fmt: skip
    results = BatchResult.objects.count()
    print(f"optout_batchresult: {relation_bytes('optout_batchresult') / results:,.0f} B/row "
          "(one excluded record, one match with its evidence)")  # fmt: skip


if __name__ == "__main__":
    main()
