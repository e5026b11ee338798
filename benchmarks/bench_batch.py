"""A batch end to end: a Parquet manifest submitted through the real API and
decided by two real Celery worker processes against a registry in PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/optout_bench \\
        .venv/bin/python benchmarks/bench_batch.py --photos 1000000 --records 1000000

The database (default optout_bench, migrated here) is filled once with
``--photos`` photos (100 per creator, one all_photos opt-out each) and a few
thousand domain claims under claims opt-outs, all in SQL (INSERT ... SELECT).
The manifest holds sha256 + pdq + phash + url per record, ~1 % of them planted
matches (exact sha256, PDQ and pHash within threshold, blocked domains).

Two workers (`celery worker --pool=solo --concurrency 1`) run on Redis database
``--redis-db`` (default 10); the manifest is submitted with Django's test
client in this process. Measured: accept time (request to 202), then the time
from 202 to the batch done (every decision stored). The batch is run twice:
cold (the workers load the registry on their first chunk: inside the clock)
and warm (engines loaded: the steady state). Workers are stopped by PID;
nothing is dropped.
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


def env_set(redis_db: int) -> str:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    redis = f"redis://127.0.0.1:6379/{redis_db}"
    os.environ["REDIS_URL"] = redis
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("OPTOUT_RATE_BATCHES", "")
    return redis


# Photo i (1-based) has hashes derived from i, so the manifest can plant matches
# without reading the registry back.
def photo_sha256(i: int) -> str:
    return hashlib.sha256(f"s{i}".encode()).hexdigest()


def photo_pdq(i: int) -> str:
    return hashlib.sha256(f"p{i}".encode()).hexdigest()


def photo_phash(i: int) -> str:
    return hashlib.md5(f"h{i}".encode()).hexdigest()[:16]  # noqa: S324 - test data


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

PHOTOS_SQL = """
INSERT INTO registry_photo (public_id, sha256, pdq, phash, original_filename, channel,
                            registered_version, created_at, updated_at, creator_id)
SELECT gen_random_uuid(), encode(sha256(('s' || i)::bytea), 'hex'),
       encode(sha256(('p' || i)::bytea), 'hex'), left(md5('h' || i), 16), '', 'api',
       %(version)s, now(), now(), %(first)s + (i - 1) / 100
FROM generate_series(%(start)s, %(stop)s) AS i;
"""

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


def fill(photos: int) -> None:
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
        for start in range(1, photos + 1, 200_000):
            stop = min(photos, start + 199_999)
            cursor.execute(
                PHOTOS_SQL, {"version": version, "first": first, "start": start, "stop": stop}
            )
        claims = claims_count(photos)
        cursor.execute(CLAIMS_SQL, {"version": version, "first": first, "claims": claims})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def flip(hex_value: str, bits: int) -> str:
    width = len(hex_value) * 4
    value = int(hex_value, 16)
    for position in secrets.SystemRandom().sample(range(width), bits):
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def manifest_build(records: int, photos: int) -> tuple[bytes, int]:
    """A Parquet manifest and its number of planted matches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = os.urandom(records * 40)
    ids = [f"{i:09d}" for i in range(records)]
    sha = [raw[i * 40 : i * 40 + 32].hex() for i in range(records)]
    pdq = [hashlib.sha256(raw[i * 40 : i * 40 + 32]).hexdigest() for i in range(records)]
    phash = [raw[i * 40 + 32 : i * 40 + 40].hex() for i in range(records)]
    url = [f"https://images.example.com/{sha[i][:12]}/{i}.jpg" for i in range(records)]
    planted = int(records * PLANTED_SHARE)
    step = records // planted if planted else records
    for n, row in enumerate(range(0, records, step)[:planted]):
        i = 1 + (n * 7919) % photos
        kind = n % 4
        if kind == 0:
            sha[row] = photo_sha256(i)
        elif kind == 1:
            pdq[row] = flip(photo_pdq(i), 20)
        elif kind == 2:
            phash[row] = flip(photo_phash(i), 6)
        else:
            url[row] = f"https://c{1 + n % claims_count(photos)}.blocked.example/{row}.jpg"
    table = pa.table({"id": ids, "sha256": sha, "pdq": pdq, "phash": phash, "url": url})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue(), planted


def workers_start(redis_url: str, logs: Path, count: int) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env |= {"REDIS_URL": redis_url, "PYTHONPATH": str(BASE_DIR)}
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


def workers_ready(logs: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("ready." in (logs / f"worker{n}.log").read_text() for n in range(count)):
            return
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
    }


def report(name: str, result: dict) -> None:
    print(
        f"{name}: accept (request -> 202) {result['accept']:.1f} s; 202 -> batch done "
        f"{result['decide']:.1f} s = {result['records'] / result['decide']:,.0f} records/s "
        f"({result['records']:,} records, {result['chunks']} chunks, "
        f"{result['excluded']:,} excluded, {result['invalid']} invalid)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    redis_url = env_set(args.redis_db)

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
        fill(args.photos)
        print(f"inserted {args.photos:,} photos in {time.perf_counter() - start:.0f} s")
    photos = Photo.objects.count()

    start = time.perf_counter()
    manifest, planted = manifest_build(args.records, args.photos)
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
        workers = workers_start(redis_url, logs, args.workers)
        try:
            workers_ready(logs, args.workers)
            print(f"{args.workers} workers up (pids {[w.pid for w in workers]})")
            tag = secrets.token_hex(4)
            report("cold (engines load on the first chunk)",
                   run(client, manifest, f"cold-{tag}", workers))  # fmt: skip
            loads = engine_loads(logs, args.workers)
            print("worker engine first full load (task received -> loaded): "
                  + ", ".join(f"{s:.1f} s" for s in loads))  # fmt: skip
            report("warm (engines loaded before submission)",
                   run(client, manifest, f"warm-{tag}", workers))  # fmt: skip
        finally:
            workers_stop(workers)


if __name__ == "__main__":
    main()
