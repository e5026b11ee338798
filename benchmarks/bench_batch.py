"""A batch end to end: a Parquet manifest submitted through the real API and
decided by two real Celery worker processes against a registry in PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/optout_bench \\
        .venv/bin/python benchmarks/bench_batch.py --photos 1000000 --records 1000000

The database (default optout_bench, created if missing and migrated here) is filled once with
``--photos`` photos (100 per creator, one all_photos opt-out each) and a few
thousand domain claims under claims opt-outs, all in SQL (INSERT ... SELECT).
Every photo is registered like an upload is: its own hashes, a PDQ quality and
the 15 derived variants (``registry.variants.DERIVED_VARIANTS``) packed in
``registry_photo.variants``. All of them are derived from the photo's number
in SQL (sha256/md5 of a text, ``photo_variant``), so the manifest can plant
records near any variant without reading the registry back; they are random
codes, not hashes of derived images.

A database filled before photos had variants (rows with empty ``variants``) is
brought up to date in place: ``variants_fill`` derives the variants and the
PDQ quality of those rows with an UPDATE in batches of 100 000 ids (each its
own transaction, so an interrupted run resumes where it stopped). It relies on
photo number n having id ``min(id) + n - 1`` (one INSERT ... SELECT numbers
them in order) and checks it on every row against the stored sha256: a row
that does not fit is left empty and the run stops, asking for a fresh database.

The manifest holds sha256 + pdq + phash + pdq_quality + url per record, ~1 %
of them planted matches, a fifth each: the photo's exact sha256; near the
photo itself, near its mirror image and near one of its 14 other derived
variants (PDQ and pHash both a few bits away, within the registry's rule for
that kind); a URL on a blocked domain. Random records state a PDQ quality too,
so the registry's default rule applies to every record. Without ``--colour``
nothing confirms a planted near-duplicate (no colour, no keypoints), so at
this registry's size it is judged by the rule as many steps stricter as
the size needs (optout/matching/scale.py: four at 10^6 photos), and only
the nearest of them are excluded; with ``--colour`` (what ``optout hash``
and the workers send) every planted match is confirmed by its colours.

Two workers (`celery worker --pool=solo --concurrency 1`) run on Redis database
``--redis-db`` (default 10); the manifest is submitted with Django's test
client in this process. Measured: accept time (request to 202), then the time
from 202 to the batch done (every decision stored). The batch is run twice:
cold (the first batch of freshly started workers: they load their engine
before announcing themselves ready, outside the clock; with ``--no-preload``
they load it on their first chunk, inside the clock) and warm (the second
batch: the steady state). Workers are stopped by PID; nothing is dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/optout_bench"

PER_CREATOR = 100
CLAIMS = 2_000
PLANTED_SHARE = 0.01
# Bits flipped on a planted near-duplicate: inside a box of the registry's rule
# for every registered kind (``plants_check``).
PLANT_PDQ_BITS = 20
PLANT_PHASH_BITS = 6
# ... and a planted captioned copy's band (``--band``), inside the band box.
PLANT_BAND_PDQ_BITS = 20
PLANT_BAND_PHASH_BITS = 4
VARIANTS_FILL_BATCH = 100_000


def env_set(redis_db: int) -> str:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    redis = f"redis://127.0.0.1:6379/{redis_db}"
    os.environ["REDIS_URL"] = redis
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("OPTOUT_RATE_BATCHES", "")
    # A million records with colour signatures are 238 MB of Parquet, above the
    # default limit of 200 MB (a pipeline would split them or raise it).
    for name in ("OPTOUT_MAX_MANIFEST_BYTES", "OPTOUT_MAX_UPLOAD_BYTES"):
        os.environ.setdefault(name, str(512 * 1024 * 1024))
    return redis


# Photo i (1-based) has hashes derived from i, so the manifest can plant matches
# without reading the registry back.
def photo_sha256(i: int) -> str:
    return hashlib.sha256(f"s{i}".encode()).hexdigest()


def photo_pdq(i: int) -> str:
    return hashlib.sha256(f"p{i}".encode()).hexdigest()


def photo_phash(i: int) -> str:
    return hashlib.md5(f"h{i}".encode()).hexdigest()[:16]  # noqa: S324 - test data


def photo_quality(i: int, position: int = 0) -> int:
    """PDQ quality of photo i's variant at ``position`` (0: the photo itself):
    50-100, so the quality gate holds back none of them."""
    return 50 + (i * 7 + position) % 51


def photo_variant(i: int, position: int) -> tuple[str, str, int]:
    """(PDQ, pHash, PDQ quality) of photo i's variant at ``position``: 0 is the
    photo itself, 1-16 its derived variants in the order of DERIVED_VARIANTS
    (the order ``variants_sql`` packs them in)."""
    if position == 0:
        return photo_pdq(i), photo_phash(i), photo_quality(i)
    pdq = hashlib.sha256(f"p{i}.{position}".encode()).hexdigest()
    phash = hashlib.md5(f"h{i}.{position}".encode()).hexdigest()[:16]  # noqa: S324 - test data
    return pdq, phash, photo_quality(i, position)


def photo_colour(i: int, position: int = 0) -> str:
    """The colour signature of photo i's variant at ``position`` under
    ``--colour`` (``colour_sql`` computes the same in SQL): colourful (20-255
    thousandths) and random cells, so distinct photos' colours disagree."""
    head = bytes((20 + (i * 13 + position) % 236,))
    return (head + hashlib.sha256(f"c{i}.{position}".encode()).digest()).hex()


def colour_sql(number: str, position: str) -> str:
    """SQL bytea of ``photo_colour(number, position)`` (SQL expressions)."""
    return (
        f"(set_byte('\\x00'::bytea, 0, (20 + mod({number} * 13 + {position}, 236))::int)"
        f" || sha256(('c' || {number} || '.' || {position})::bytea))"
    )


def photo_variants_packed(i: int) -> bytes:
    """Photo i's ``registry_photo.variants`` as ``variants_sql`` fills it."""
    from registry.variants import DERIVED_VARIANTS, Variant, variants_pack

    items = []
    for position, name in enumerate(DERIVED_VARIANTS, start=1):
        pdq, phash, quality = photo_variant(i, position)
        items.append(Variant(name=name, pdq=pdq, pdq_quality=quality, phash=phash))
    return variants_pack(items)


def variants_sql(number: str) -> str:
    """SQL for the packed variants of the photo numbered ``number`` (an SQL
    expression), like ``variants_pack``: code byte, PDQ quality byte, pHash (8
    bytes), PDQ (32 bytes) per variant, in the order of DERIVED_VARIANTS. The
    codes come as the ``%(codes)s`` parameter (``variant_codes``)."""
    n = number
    return f"""(
  SELECT string_agg(
           set_byte(set_byte('\\x0000'::bytea, 0, (%(codes)s::int[])[v]), 1,
                    (50 + mod({n} * 7 + v, 51))::int)
           || substring(decode(md5('h' || {n} || '.' || v), 'hex') FROM 1 FOR 8)
           || sha256(('p' || {n} || '.' || v)::bytea),
           ''::bytea ORDER BY v)
  FROM generate_series(1, cardinality(%(codes)s::int[])) AS v
)"""  # noqa: S608 - built from this file's constants only


def variant_codes() -> list[int]:
    from registry.variants import DERIVED_VARIANTS, VARIANT_CODES

    return [VARIANT_CODES[name] for name in DERIVED_VARIANTS]


FILL_SQL = """
WITH c AS (
  INSERT INTO registry_creator (public_id, created_at)
  SELECT gen_random_uuid(), now() FROM generate_series(1, %(creators)s)
  RETURNING id
), numbered AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM c)
INSERT INTO optout_optout (public_id, uses, scope, channel, notice_version, effective_at,
                           filed_version, created_at, creator_id)
SELECT gen_random_uuid(), '["ai_training"]', 'all_photos', 'web', 'bench', now(),
       %(version)s, now(), id FROM numbered;
"""


def photos_sql(colour: bool) -> str:
    """INSERT ... SELECT of photos %(start)s to %(stop)s, with their colour
    signatures (``photo_colour``) or without (empty, as registrations made
    before colour signatures)."""
    variants = "FROM generate_series(1, cardinality(%(codes)s::int[])) AS v"
    aggregate = f"SELECT string_agg({colour_sql('i', 'v')}, ''::bytea ORDER BY v) {variants}"
    colours = f"encode({colour_sql('i', '0')}, 'hex'), ({aggregate})" if colour else "'', ''::bytea"
    return f"""
INSERT INTO registry_photo (public_id, sha256, pdq, phash, pdq_quality, variants,
                            colour, variant_colours, original_filename, channel,
                            registered_version, created_at, updated_at, creator_id)
SELECT gen_random_uuid(), encode(sha256(('s' || i)::bytea), 'hex'),
       encode(sha256(('p' || i)::bytea), 'hex'), left(md5('h' || i), 16), 50 + mod(i * 7, 51),
       {variants_sql("i")}, {colours}, '', 'api', %(version)s, now(), now(),
       %(first)s + (i - 1) / 100
FROM generate_series(%(start)s, %(stop)s) AS i
ORDER BY i;
"""  # noqa: S608 - built from this file's constants only


# Rows from before variants: photo number n is id - base + 1 (checked against
# the sha256 it was registered with).
VARIANTS_UPDATE_SQL = f"""
UPDATE registry_photo
SET variants = {variants_sql("(id - %(base)s + 1)")},
    pdq_quality = 50 + mod((id - %(base)s + 1) * 7, 51)
WHERE id >= %(start)s AND id < %(stop)s AND variants = ''::bytea
  AND sha256 = encode(sha256(('s' || (id - %(base)s + 1))::bytea), 'hex');
"""  # noqa: S608 - built from this file's constants only

CLAIMS_SQL = """
WITH cl AS (
  INSERT INTO registry_claim (public_id, kind, value, channel, registered_version, created_at,
                              creator_id)
  SELECT gen_random_uuid(), 'domain', 'c' || k || '.blocked.example', 'web', %(version)s, now(),
         %(first)s + k - 1
  FROM generate_series(1, %(claims)s) AS k
  RETURNING id, creator_id
), o AS (
  INSERT INTO optout_optout (public_id, uses, scope, channel, notice_version, effective_at,
                             filed_version, created_at, creator_id)
  SELECT gen_random_uuid(), '["ai_training"]', 'claims', 'web', 'bench', now(), %(version)s,
         now(), creator_id FROM cl
  RETURNING id, creator_id
)
INSERT INTO optout_optout_claims (optout_id, claim_id)
SELECT o.id, cl.id FROM o JOIN cl USING (creator_id);
"""


def claims_count(photos: int) -> int:
    return min(CLAIMS, photos // PER_CREATOR)


def fill(photos: int, colour: bool = False) -> None:
    from django.db import connection, transaction

    from registry.models import ConsentEvent

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT nextval('registry_version_seq')")
        version = int(cursor.fetchone()[0])
        ConsentEvent.objects.create(
            registry_version=version, kind="photo_registered",
            creator_public_id="00000000-0000-0000-0000-000000000000", actor="bench",
            channel="api", notice_version="bench",
        )  # fmt: skip
        cursor.execute(FILL_SQL, {"creators": photos // PER_CREATOR, "version": version})
        cursor.execute("SELECT min(id) FROM registry_creator")
        first = int(cursor.fetchone()[0])
        codes = variant_codes()
        for start in range(1, photos + 1, 200_000):
            stop = min(photos, start + 199_999)
            cursor.execute(
                photos_sql(colour),
                {"version": version, "first": first, "start": start, "stop": stop, "codes": codes},
            )
        claims = claims_count(photos)
        cursor.execute(CLAIMS_SQL, {"version": version, "first": first, "claims": claims})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def variants_fill() -> int:
    """Fill the variants and PDQ quality of rows registered without them (a
    database filled before photos had variants); how many rows were updated.
    Batches of VARIANTS_FILL_BATCH ids, each committed on its own."""
    from django.db import connection

    from registry.models import Photo

    empty = Photo.objects.filter(variants=b"").count()
    if not empty:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM registry_photo")
        base, last = cursor.fetchone()
    codes = variant_codes()
    updated = 0
    started = time.perf_counter()
    for start in range(base, last + 1, VARIANTS_FILL_BATCH):
        stop = start + VARIANTS_FILL_BATCH
        with connection.cursor() as cursor:  # autocommit: one transaction per batch
            cursor.execute(
                VARIANTS_UPDATE_SQL, {"base": base, "start": start, "stop": stop, "codes": codes}
            )
            updated += cursor.rowcount
        elapsed = time.perf_counter() - started
        print(f"  variants filled: {updated:,} of {empty:,} rows in {elapsed:.0f} s", flush=True)
    left = Photo.objects.filter(variants=b"").count()
    if left:
        raise SystemExit(
            f"{left:,} photos are not numbered like this benchmark fills them; use a fresh database"
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE registry_photo")
    return updated


def variants_check(photos: int) -> None:
    """The variants stored in SQL are the ones Python plants records near."""
    from registry.models import Photo

    for i in (1, photos // 2 + 1, photos):
        photo = Photo.objects.get(sha256=photo_sha256(i))
        if bytes(photo.variants) != photo_variants_packed(i) or photo.pdq_quality != photo_quality(
            i
        ):
            raise SystemExit(f"photo {i}: stored variants differ from photo_variant()")


def flip(hex_value: str, bits: int) -> str:
    width = len(hex_value) * 4
    value = int(hex_value, 16)
    for position in secrets.SystemRandom().sample(range(width), bits):
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


PLANT_KINDS = ("sha256", "original", "mirror", "derived", "domain")
# With --band: a record whose own hashes are far but whose band is near the
# photo's band variant (a captioned copy).
BAND_PLANT = "band"


def plants_check() -> None:
    """Planted near-duplicates are matches under the registry's rule, whatever
    kind of variant they are planted near."""
    from optout.matching.rule import BAND_KINDS, DEFAULT_RULE
    from registry.variants import DEFAULT_VARIANTS, variant_kind

    if not any(
        box.contains(PLANT_BAND_PDQ_BITS, PLANT_BAND_PHASH_BITS) for box in DEFAULT_RULE.band
    ):
        raise SystemExit("PLANT_BAND_PDQ_BITS / PLANT_BAND_PHASH_BITS are no band match")
    for kind in {variant_kind(name) for name in DEFAULT_VARIANTS} - BAND_KINDS:
        boxes = DEFAULT_RULE.boxes(kind, has_pdq=True, has_phash=True, low_quality=False)
        if not any(box.contains(PLANT_PDQ_BITS, PLANT_PHASH_BITS) for box in boxes):
            raise SystemExit(
                f"PDQ {PLANT_PDQ_BITS} / pHash {PLANT_PHASH_BITS} bits is no match for a {kind} "
                "variant under the registry's rule: change PLANT_PDQ_BITS / PLANT_PHASH_BITS"
            )


def manifest_build(
    records: int, photos: int, colour: bool = False, band: bool = False
) -> tuple[bytes, dict[str, list[str]]]:
    """A Parquet manifest and the ids of its planted matches by kind (PLANT_KINDS);
    with ``colour`` every record carries a colour signature: a planted
    near-duplicate its variant's, the others random colourful ones; with
    ``band`` every record carries band hashes (random ones, a planted captioned
    copy's near its photo's band variant: kind BAND_PLANT)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optout.matching.rule import BAND_KINDS
    from registry.hashing import band_signature
    from registry.variants import DERIVED_VARIANTS, variant_kind

    plants_check()
    raw = os.urandom(records * 41)
    ids = [f"{i:09d}" for i in range(records)]
    sha = [raw[i * 41 : i * 41 + 32].hex() for i in range(records)]
    pdq = [hashlib.sha256(raw[i * 41 : i * 41 + 32]).hexdigest() for i in range(records)]
    phash = [raw[i * 41 + 32 : i * 41 + 40].hex() for i in range(records)]
    quality = [50 + raw[i * 41 + 40] % 51 for i in range(records)]
    url = [f"https://images.example.com/{sha[i][:12]}/{i}.jpg" for i in range(records)]
    colours = [photo_colour(-1 - i) for i in range(records)] if colour else []
    bands = [band_signature(*photo_variant(-1 - i, 1)) for i in range(records)] if band else []
    planted = int(records * PLANTED_SHARE)
    step = records // planted if planted else records
    kinds = (*PLANT_KINDS, BAND_PLANT) if band else PLANT_KINDS
    # Every derived variant but the mirror image and the middle band.
    derived = [
        position
        for position, name in enumerate(DERIVED_VARIANTS, start=1)
        if variant_kind(name) not in BAND_KINDS | {"mirror"}
    ]
    [band_position] = [
        position
        for position, name in enumerate(DERIVED_VARIANTS, start=1)
        if variant_kind(name) in BAND_KINDS
    ]
    plants: dict[str, list[str]] = {kind: [] for kind in kinds}
    for n, row in enumerate(range(0, records, step)[:planted]):
        i = 1 + (n * 7919) % photos
        kind = n % len(kinds)
        plants[kinds[kind]].append(ids[row])
        if kinds[kind] == BAND_PLANT:
            band_pdq, band_phash, band_quality = photo_variant(i, band_position)
            bands[row] = band_signature(
                flip(band_pdq, PLANT_BAND_PDQ_BITS),
                flip(band_phash, PLANT_BAND_PHASH_BITS),
                band_quality,
            )
        elif kind == 0:
            sha[row] = photo_sha256(i)
        elif kind in (1, 2, 3):
            # 1: the photo itself, 2: its mirror image, 3: one of the others
            position = kind - 1 if kind < 3 else derived[(n // len(kinds)) % len(derived)]
            variant_pdq, variant_phash, quality[row] = photo_variant(i, position)
            if colour:
                colours[row] = photo_colour(i, position)
            pdq[row] = flip(variant_pdq, PLANT_PDQ_BITS)
            phash[row] = flip(variant_phash, PLANT_PHASH_BITS)
        else:
            url[row] = f"https://c{1 + n % claims_count(photos)}.blocked.example/{row}.jpg"
    table = pa.table(
        {
            "id": ids,
            "sha256": sha,
            "pdq": pdq,
            "phash": phash,
            "pdq_quality": pa.array(quality, type=pa.int8()),
            "url": url,
            **({"colour": colours} if colour else {}),
            **({"band": bands} if band else {}),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue(), plants


def workers_start(
    redis_url: str, logs: Path, count: int, preload: bool = True
) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env |= {
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(BASE_DIR),
        "OPTOUT_ENGINE_PRELOAD": "1" if preload else "0",
    }
    celery = Path(sys.executable).parent / "celery"
    workers = []
    for n in range(count):
        command = [
            str(celery), "-A", "config", "worker", "--pool=solo", "-Q", "default",
            "--concurrency", "1", "--loglevel=INFO", "--without-mingle", "--without-gossip",
            "-n", f"bench{n}@%h",
        ]  # fmt: skip
        with (logs / f"worker{n}.log").open("wb") as log:
            workers.append(subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=log))
    return workers


def workers_ready(logs: Path, count: int, timeout: float = 180) -> float:
    """Seconds until every worker announced itself ready (with its engine
    loaded, unless preloading is off)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if all("ready." in (logs / f"worker{n}.log").read_text() for n in range(count)):
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit("workers did not start")


def workers_stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def engine_loads(logs: Path, count: int) -> list[float]:
    """Per worker: seconds from its first task received to its engine loaded (log stamps)."""
    seconds = []
    for n in range(count):
        received = loaded = None
        for line in (logs / f"worker{n}.log").read_text().splitlines():
            match = _STAMP.match(line)
            if not match:
                continue
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            if received is None and "received" in line:
                received = stamp
            if loaded is None and "matching engine" in line and "loaded version" in line:
                loaded = stamp
        if received and loaded:
            seconds.append((loaded - received).total_seconds())
    return seconds


def run(client: object, manifest: bytes, key: str, workers: list[subprocess.Popen[bytes]]) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from optout.models import Batch

    upload = SimpleUploadedFile("part-00000.parquet", manifest)
    start = time.perf_counter()
    response = client.post(  # type: ignore[attr-defined]
        "/api/v1/batches", {"manifest": upload, "use": "ai_training"},
        format="multipart", HTTP_IDEMPOTENCY_KEY=key, SERVER_NAME="localhost",
    )  # fmt: skip
    accepted = time.perf_counter()
    assert response.status_code == 202, response.content[:500]
    public_id = response.json()["id"]
    while True:
        batch = Batch.objects.get(public_id=public_id)
        if batch.status in ("done", "failed"):
            break
        if any(w.poll() is not None for w in workers):
            raise SystemExit("a worker died")
        time.sleep(0.1)
    done = time.perf_counter()
    assert batch.status == "done", batch.status
    return {
        "accept": accepted - start,
        "decide": done - accepted,
        "records": batch.record_count,
        "chunks": batch.chunk_count,
        "excluded": batch.excluded_count,
        "invalid": batch.invalid_count,
        "batch": batch.pk,
    }


def report(name: str, result: dict) -> None:
    print(
        f"{name}: accept (request -> 202) {result['accept']:.1f} s; 202 -> batch done "
        f"{result['decide']:.1f} s = {result['records'] / result['decide']:,.0f} records/s "
        f"({result['records']:,} records, {result['chunks']} chunks, "
        f"{result['excluded']:,} excluded, {result['invalid']} invalid)"
    )


def plants_report(batch: int, plants: dict[str, list[str]]) -> None:
    """How many planted matches of each kind the batch excluded."""
    from optout.models import BatchResult

    found = []
    for kind, ids in plants.items():
        excluded = BatchResult.objects.filter(
            batch_id=batch, decision="exclude", record_id__in=ids
        ).count()
        found.append(f"{kind} {excluded:,}/{len(ids):,}")
    print("  planted matches excluded: " + ", ".join(found))


def ensure_database(url: str) -> None:
    """Create the scratch database named in ``url`` when the server lacks it."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="workers load their engine on the first chunk (inside the cold clock)",
    )
    parser.add_argument(
        "--colour",
        action="store_true",
        help="photos, variants and records carry colour signatures (registry.colour), as "
        "uploads and `optout hash` give them; fill a database of its own",
    )
    parser.add_argument(
        "--band",
        action="store_true",
        help="records carry the hashes of their middle band (registry.hashing.band_of), as "
        "`optout hash` and the workers give them; planted captioned copies among them",
    )
    args = parser.parse_args()
    redis_url = env_set(args.redis_db)
    ensure_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from config.celery import app
    from optout.engine import MatchingEngine
    from optout.models import Organization, OrganizationAPIKey
    from registry.models import Photo

    call_command("migrate", verbosity=0)
    have = Photo.objects.count()
    if have < args.photos:
        if have:
            raise SystemExit(f"{have:,} photos already; use a fresh database for {args.photos:,}")
        start = time.perf_counter()
        fill(args.photos, colour=args.colour)
        print(
            f"inserted {args.photos:,} photos with {len(variant_codes())} variants each "
            f"in {time.perf_counter() - start:.0f} s"
        )
    start = time.perf_counter()
    updated = variants_fill()
    if updated:
        seconds = time.perf_counter() - start
        print(
            f"filled the variants of {updated:,} photos registered without them in {seconds:.0f} s "
            f"({seconds / updated * 1e5:.1f} s per 100 000, VACUUM ANALYZE included)"
        )
    variants_check(args.photos)
    photos = Photo.objects.count()
    coloured = Photo.objects.exclude(colour="").count()
    if coloured != (photos if args.colour else 0):
        raise SystemExit(
            f"{coloured:,} of {photos:,} photos carry colours: "
            + ("fill a fresh database with --colour" if args.colour else "run with --colour")
        )
    if args.colour:
        from registry.variants import DERIVED_VARIANTS

        seventh = Photo.objects.filter(sha256=photo_sha256(7)).get()
        expected = "".join(photo_colour(7, p) for p in range(1, len(DERIVED_VARIANTS) + 1))
        if (seventh.colour, bytes(seventh.variant_colours)) != (
            photo_colour(7),
            bytes.fromhex(expected),
        ):
            raise SystemExit("the stored colour signatures are not photo_colour's")

    start = time.perf_counter()
    manifest, plants = manifest_build(args.records, args.photos, colour=args.colour, band=args.band)
    planted = sum(len(ids) for ids in plants.values())
    print(f"manifest: {args.records:,} records, {len(manifest) / 1e6:.0f} MB Parquet, "
          f"{planted:,} planted matches, built in {time.perf_counter() - start:.0f} s")  # fmt: skip

    engine = MatchingEngine()
    start = time.perf_counter()
    with engine.current():
        seconds = time.perf_counter() - start
    print(f"engine full load in this process: {photos:,} photos in {seconds:.1f} s")
    del engine

    organization, _ = Organization.objects.get_or_create(name="bench")
    _key, raw = OrganizationAPIKey.objects.create_key(
        name="bench", organization=organization, scopes=["lookup", "batches"]
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")

    app.control.purge()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        logs = Path(tmp)
        workers = workers_start(redis_url, logs, args.workers, preload=not args.no_preload)
        try:
            ready = workers_ready(logs, args.workers)
            print(
                f"{args.workers} workers up (pids {[w.pid for w in workers]}) in {ready:.1f} s"
                + ("" if args.no_preload else ", engines loaded before ready")
            )
            tag = secrets.token_hex(4)
            result = run(client, manifest, f"cold-{tag}", workers)
            cold = "engines load on the first chunk" if args.no_preload else "first batch"
            report(f"cold ({cold})", result)
            plants_report(result["batch"], plants)
            if args.no_preload:
                loads = engine_loads(logs, args.workers)
                print("worker engine first full load (task received -> loaded): "
                      + ", ".join(f"{s:.1f} s" for s in loads))  # fmt: skip
            result = run(client, manifest, f"warm-{tag}", workers)
            report("warm (engines loaded before submission)", result)
            plants_report(result["batch"], plants)
        finally:
            workers_stop(workers)


if __name__ == "__main__":
    main()
