"""Shared helpers of the batch tests: API clients with keys, manifests in every
format, a registry with opt-outs, and hash perturbations at exact distances."""

from __future__ import annotations

import io
import json
import random
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from optout import manifests, receipts
from optout.engine import engines
from optout.models import Organization, OrganizationAPIKey


def batch_environment(settings: Settings, tmp_path: Path) -> Iterator[None]:
    """The settings of a batch test, for an autouse fixture to ``yield from``: a
    spool folder, a new receipt signing key and no quota on submissions (quotas
    are another test's subject; these tests submit many batches quickly), with
    the matching engines reset before and after."""
    engines.reset()
    for _ in worker_environment(settings, tmp_path):
        yield
    engines.reset()


def worker_environment(
    settings: Settings, tmp_path: Path, *, unthrottled: Iterable[str] = ("batches",)
) -> Iterator[dict[str, str]]:
    """The settings of a test whose batches a real worker (tests.workers)
    decides, for a fixture to ``yield from``: a spool folder, a new receipt
    signing key (its cache cleared before and after) and no quota on the
    ``unthrottled`` scopes; yields the environment that gives the worker
    process the same key and spool folder."""
    pem = receipts.private_key_pem(receipts.private_key_generate())
    settings.OPTOUT_RECEIPT_SIGNING_KEY = pem
    settings.OPTOUT_SPOOL_DIR = tmp_path / "spool"
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(unthrottled),
    }
    receipts.signing_key_cache_clear()
    try:
        yield {"OPTOUT_RECEIPT_SIGNING_KEY": pem, "OPTOUT_SPOOL_DIR": str(tmp_path / "spool")}
    finally:
        receipts.signing_key_cache_clear()


def rows_of(path: Path) -> list[tuple[int, Any]]:
    """(row, record id or reason) as the registry's own reader numbers them."""
    with path.open("rb") as stream:
        _, rows = manifests.read_manifest(path.name, stream)
        return [(row, raw if isinstance(raw, str) else raw.get("id")) for row, raw in rows]


# The evidence of a match by equal SHA-256 (the same file), as every pipeline
# response states it.
SHA256_EVIDENCE = {
    "variant": "original",
    "basis": "sha256",
    "pdq_distance": None,
    "pdq_threshold": None,
    "phash_distance": None,
    "phash_threshold": None,
    "quality": "ok",
    "colour_distance": None,
    "colour_threshold": None,
    "layout_distance": None,
    "layout_threshold": None,
    "keypoint_inliers": None,
    "keypoint_threshold": None,
    "strictness": 0,
}


def pipeline_client(
    organization: Organization, scopes: Iterable[str] = ("lookup", "batches")
) -> APIClient:
    _key, raw = OrganizationAPIKey.objects.create_key(
        name="pipeline", organization=organization, scopes=list(scopes)
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def submit(
    client: APIClient,
    content: bytes,
    *,
    name: str = "manifest.jsonl",
    key: str | None = "key-1",
    use: str = "ai_training",
    **fields: Any,
) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    data = {"manifest": SimpleUploadedFile(name, content), "use": use, **fields}
    return client.post("/api/v1/batches", data, format="multipart", **headers)


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def parquet(columns: dict[str, list[Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def flip_bits(hex_value: str, count: int, rng: random.Random) -> str:
    """``hex_value`` with exactly ``count`` distinct bits flipped."""
    bits = len(hex_value) * 4
    value = int(hex_value, 16)
    for position in rng.sample(range(bits), count):
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def download(client: APIClient, url: str) -> tuple[int, bytes]:
    response = client.get(url)
    if getattr(response, "streaming", False):
        return response.status_code, b"".join(response.streaming_content)
    return response.status_code, response.content


def jsonl_rows(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines()]


# Generous for a loaded 2-core machine; a small batch takes well under a minute.
DONE_WITHIN_SECONDS = 150


def wait_done(client: APIClient, batch_id: str, worker: Any, log_path: Path) -> dict[str, Any]:
    """The batch's detail once a real worker has finished it (done or failed);
    fails with the worker's log if it does not within DONE_WITHIN_SECONDS."""
    deadline = time.monotonic() + DONE_WITHIN_SECONDS
    body: dict[str, Any] = {}
    while time.monotonic() < deadline and worker.poll() is None:
        body = client.get(f"/api/v1/batches/{batch_id}").json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.25)
    log = log_path.read_text(errors="replace")
    raise AssertionError(f"batch not finished: {json.dumps(body)}\nworker log:\n{log[-5000:]}")
