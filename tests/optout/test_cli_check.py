"""`optout check`: the pipeline's command line, end to end against a live
registry (a real HTTP server, a real Celery worker through real Redis, real
PostgreSQL), and the pieces it is made of (filtering a manifest by row)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pytest_django.fixtures import Settings

from optout import check, client, manifest_filter, receipts
from optout.manifest_filter import FilterError
from optout.models import Batch, Organization, OrganizationAPIKey
from optout.services import opt_out_file
from registry import hashing
from registry.models import Channel, Creator
from registry.services import photos_register_from_hashes
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory
from tests.fresh_python import LOADED_FRAMEWORKS, run_python
from tests.images import jpeg_bytes
from tests.optout.batch_helpers import rows_of
from tests.workers import worker_start, worker_stop

OPTOUT = Path(sys.executable).parent / "optout"
REPO = Path(__file__).resolve().parents[2]
# This module's own Redis database (other worker tests use other numbers).
WORKER_REDIS_DB = 5


def optout(*args: str, cwd: Path, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    assert OPTOUT.exists(), f"{OPTOUT} is missing: run `pip install -e '.[dev]'`"
    env = {key: value for key, value in os.environ.items() if key != "OPTOUT_API_KEY"}
    if api_key is not None:
        env["OPTOUT_API_KEY"] = api_key
    return subprocess.run(
        [str(OPTOUT), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=cwd,
        env=env,
    )


def sha(seed: int) -> str:
    return f"{seed:064x}"


# --- filtering a manifest: the registry's row numbers, every format ---------------------


def test_jsonl_filter_drops_the_excluded_lines_and_copies_the_rest_byte_for_byte(
    tmp_path: Path,
) -> None:
    lines = [
        b'{"id": "a", "sha256": "' + sha(1).encode() + b'", "caption": "caf\xc3\xa9"}\n',
        b'{"id": "b", "url": "https://example.org/b.jpg"}\n',
        b"\n",
        b"{not json}\n",
        b'{"id": " c ", "url": "https://example.org/c.jpg"}\n',
        b'{"id": 7, "url": "https://example.org/7.jpg"}',
    ]
    source = tmp_path / "manifest.jsonl"
    source.write_bytes(b"".join(lines))
    target = tmp_path / "filtered.jsonl"

    result = manifest_filter.manifest_filter(source, target, {2: "b", 5: "c", 6: "7"})

    assert rows_of(source)[1] == (2, "b")
    assert target.read_bytes() == lines[0] + lines[2] + lines[3]
    assert result == manifest_filter.FilterResult(kept=2, dropped=3)


def test_csv_filter_numbers_rows_by_line_like_the_registry_and_keeps_quoting_and_bom(
    tmp_path: Path,
) -> None:
    text = (
        "\ufeffid,url,caption\r\n"
        'a,https://example.org/a.jpg,"two\r\nlines"\r\n'
        "b,https://example.org/b.jpg,plain\r\n"
        '"c,1",https://example.org/c.jpg,"say ""cheese"""\r\n'
        "d,https://example.org/d.jpg,last\r\n"
    )
    source = tmp_path / "manifest.csv"
    source.write_bytes(text.encode("utf-8"))
    target = tmp_path / "filtered.csv"
    registry_rows = rows_of(source)

    result = manifest_filter.manifest_filter(source, target, {4: "b", 5: "c,1"})

    assert registry_rows == [(3, "a"), (4, "b"), (5, "c,1"), (6, "d")]
    assert target.read_bytes() == (
        "\ufeffid,url,caption\r\n"
        'a,https://example.org/a.jpg,"two\r\nlines"\r\n'
        "d,https://example.org/d.jpg,last\r\n"
    ).encode("utf-8")
    assert result == manifest_filter.FilterResult(kept=2, dropped=2)


def test_tsv_filter_uses_the_tab_delimiter(tmp_path: Path) -> None:
    source = tmp_path / "manifest.tsv"
    source.write_text("key\turl\nk1\thttps://a.example/1\nk2\thttps://a.example/2\n")
    target = tmp_path / "filtered.tsv"

    manifest_filter.manifest_filter(source, target, {3: "k2"})

    assert rows_of(source) == [(2, "k1"), (3, "k2")]
    assert target.read_text() == "key\turl\nk1\thttps://a.example/1\n"


def img2dataset_table(count: int) -> pa.Table:
    return pa.table(
        {
            "key": [f"{index:09d}" for index in range(count)],
            "url": [f"https://img.example/{index}.jpg" for index in range(count)],
            "sha256": [sha(index) for index in range(count)],
            "caption": [f"photo {index}" for index in range(count)],
            "width": pa.array([640 + index for index in range(count)], pa.int32()),
        },
        metadata={b"origin": b"img2dataset"},
    )


def test_parquet_filter_drops_rows_by_index_and_keeps_the_schema(tmp_path: Path) -> None:
    table = img2dataset_table(25_000)  # more than one read batch of 10 000 rows
    source = tmp_path / "part-00000.parquet"
    pq.write_table(table, source, row_group_size=7_000)
    target = tmp_path / "filtered.parquet"
    excluded = {1: "000000000", 10_001: "000010000", 25_000: "000024999"}

    result = manifest_filter.manifest_filter(source, target, excluded)

    written = pq.read_table(target)
    assert written.schema == table.schema
    assert written.schema.metadata[b"origin"] == b"img2dataset"
    keep = [index for index in range(25_000) if index + 1 not in excluded]
    assert written.equals(table.take(keep))
    assert result == manifest_filter.FilterResult(kept=24_997, dropped=3)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_webdataset_filter_drops_whole_samples(tmp_path: Path) -> None:
    members = [
        ("shard/000001.jpg", jpeg_bytes(1)),
        ("shard/000001.json", b'{"url": "https://a.example/1"}'),
        ("shard/000002.jpg", jpeg_bytes(2)),
        ("shard/000002.json", b'{"url": "https://a.example/2"}'),
        ("shard/000003.jpg", jpeg_bytes(3)),
    ]
    source = tmp_path / "shard.tar"
    source.write_bytes(tar_bytes(members))
    target = tmp_path / "filtered.tar"

    result = manifest_filter.manifest_filter(source, target, {2: "shard/000002"})

    assert rows_of(source) == [(1, "shard/000001"), (2, "shard/000002"), (3, "shard/000003")]
    with tarfile.open(target) as archive:
        kept = [
            (member.name, archive.extractfile(member).read())  # type: ignore[union-attr]
            for member in archive.getmembers()
        ]
    assert kept == [members[0], members[1], members[4]]
    assert result == manifest_filter.FilterResult(kept=2, dropped=1)


def test_a_row_whose_id_is_not_the_excluded_id_stops_the_filter_and_writes_nothing(
    tmp_path: Path,
) -> None:
    source = tmp_path / "manifest.csv"
    source.write_text("id,url\na,https://a.example/a\nb,https://a.example/b\n")
    target = tmp_path / "filtered.csv"

    with pytest.raises(FilterError) as raised:
        # A client counting data rows (header excluded) would say row 2 is "b".
        manifest_filter.manifest_filter(source, target, {2: "b"})

    assert str(raised.value) == (
        "row 2 of the manifest has id 'a', but the registry excluded row 2 as id 'b'; "
        "the filtered manifest was not written"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.csv"]


def test_an_excluded_row_the_manifest_does_not_have_stops_the_filter(tmp_path: Path) -> None:
    source = tmp_path / "manifest.jsonl"
    source.write_text('{"id": "a", "url": "https://a.example/a"}\n')
    target = tmp_path / "filtered.jsonl"

    with pytest.raises(FilterError, match="the registry excluded row 9, which this manifest"):
        manifest_filter.manifest_filter(source, target, {9: "z"})

    assert not target.exists()


# --- usage errors and an unreachable registry: no server needed ----------------------------


@pytest.fixture
def small_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"id": "a", "url": "https://a.example/a"}\n')
    return path


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("args", "api_key", "message"),
    [
        (
            ["{manifest}", "--url", "http://127.0.0.1:9"],
            None,
            "optout check: error: no API key: pass --key or set OPTOUT_API_KEY",
        ),
        (
            ["{manifest}", "--url", "ftp://example.org"],
            "k",
            "optout check: error: argument --url: not an http(s) URL: ftp://example.org",
        ),
        (
            ["{tmp}/missing.jsonl", "--url", "http://127.0.0.1:9"],
            "k",
            "optout check: error: argument MANIFEST: not a file: {tmp}/missing.jsonl",
        ),
        (
            ["{manifest}", "--url", "http://127.0.0.1:9", "--filtered", "{tmp}/out.parquet"],
            "k",
            "optout check: error: --filtered {tmp}/out.parquet: the filtered manifest keeps "
            "the manifest's format (jsonl); give it a matching extension",
        ),
        (
            ["{manifest}", "--url", "http://127.0.0.1:9", "-o", "{manifest}"],
            "k",
            "optout check: error: -o {manifest} would overwrite the manifest",
        ),
        (
            ["{manifest}", "--url", "http://127.0.0.1:9", "--public-key", "{manifest}"],
            "k",
            "optout check: error: --public-key {manifest}: not an Ed25519 public key: "
            "expected PEM, or base64 of the 32 raw bytes or of DER",
        ),
        (
            ["{manifest}", "--url", "http://127.0.0.1:9", "--use", "selling"],
            "k",
            "optout check: error: argument --use: invalid choice: 'selling' (choose from "
            "'data_mining', 'ai_training', 'ai_generative_training', 'ai_inference')",
        ),
    ],
    ids=["no-key", "not-http", "no-manifest", "other-format", "overwrite", "bad-key", "bad-use"],
)
def test_check_usage_errors_exit_2_before_anything_is_sent(
    args: list[str], api_key: str | None, message: str, small_manifest: Path, tmp_path: Path
) -> None:
    values = {"manifest": small_manifest, "tmp": tmp_path}

    result = optout("check", *[arg.format(**values) for arg in args], cwd=tmp_path, api_key=api_key)

    assert result.stderr.splitlines()[-1] == message.format(**values)
    assert result.returncode == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.jsonl"]


def test_check_of_an_unreachable_registry_exits_1_and_imports_no_django(
    small_manifest: Path, tmp_path: Path
) -> None:
    url = closed_port_url()
    snippet = (
        "import sys\n"
        "from optout import cli\n"
        f"code = cli.main(['check', {str(small_manifest)!r}, '--url', {url!r}, '--key', 'k',"
        " '--quiet'])\n"
        f"print(code, {LOADED_FRAMEWORKS})\n"
    )

    result = run_python(snippet, cwd=tmp_path)

    assert result.stdout == "1 []\n"
    assert result.stderr.splitlines()[-1] == (
        f"optout check: cannot reach {url}/api/v1/batches: [Errno 111] Connection refused"
    )


# --- end to end: live registry, real worker ------------------------------------------------


@pytest.fixture
def signing_key(settings: Settings) -> Iterator[receipts.Ed25519PrivateKey]:
    """One registry key for the live server (this process) and the worker."""
    key = receipts.private_key_generate()
    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(key)
    receipts.signing_key_cache_clear()
    yield key
    receipts.signing_key_cache_clear()


@pytest.fixture
def worker(broker: str, tmp_path: Path, signing_key: receipts.Ed25519PrivateKey) -> Iterator[Path]:
    log_path = tmp_path / "worker.log"
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    process = worker_start(
        broker,
        mail_dir,
        log_path,
        extra_env={"OPTOUT_RECEIPT_SIGNING_KEY": receipts.private_key_pem(signing_key)},
    )
    try:
        yield log_path
    finally:
        worker_stop(process)


def photo_register(creator: Creator, seed: int) -> hashing.PhotoHashes:
    hashes = hashing.hash_bytes(jpeg_bytes(seed))
    line = HashLine(sha256=hashes.sha256, pdq=hashes.pdq, phash=hashes.phash)
    [outcome] = photos_register_from_hashes(creator=creator, items=[(1, line)], channel="api")
    assert outcome.status == "registered"
    return hashes


@pytest.fixture
def registry_data() -> tuple[str, list[hashing.PhotoHashes], Organization]:
    """An organization's key, and a creator who refused ai_training for all photos."""
    organization = OrganizationFactory(name="Pipeline Lab")
    _, api_key = OrganizationAPIKey.objects.create_key(
        organization=organization, name="cli", scopes=["lookup", "batches"]
    )
    creator = CreatorFactory()
    photos = [photo_register(creator, seed) for seed in (101, 102)]
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    return api_key, photos, organization


def jsonl_manifest(path: Path, photos: list[hashing.PhotoHashes]) -> list[bytes]:
    lines = [
        json.dumps({"id": "r1", "sha256": photos[0].sha256, "caption": "opted out"}) + "\n",
        json.dumps({"id": "r2", "sha256": sha(7), "url": "https://free.example/2.jpg"}) + "\n",
        json.dumps({"id": "r3", "pdq": photos[1].pdq}) + "\n",
        "{this line is broken\n",
        json.dumps({"id": "r5", "phash": "0" * 16}) + "\n",
    ]
    encoded = [line.encode() for line in lines]
    path.write_bytes(b"".join(encoded))
    return encoded


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The messages on stderr, without the progress bars' redraws."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("checking:", "uploading:"))
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_of_a_jsonl_manifest_writes_exclusions_receipt_and_filtered_manifest(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    signing_key: receipts.Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    api_key, photos, organization = registry_data
    manifest = tmp_path / "manifest.jsonl"
    lines = jsonl_manifest(manifest, photos)
    args = [
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "-o",
        "out/exclusions.jsonl",
        "--filtered",
        "out/clean.jsonl",
        "--receipt",
        "out/receipt.json",
        "--poll-interval",
        "0.2",
    ]
    (tmp_path / "out").mkdir()

    result = optout(*args, cwd=tmp_path, api_key=api_key)

    log = worker.read_text(errors="replace")
    assert result.returncode == 0, result.stderr + log
    batch = Batch.objects.get()
    assert batch.status == Batch.Status.DONE
    assert batch.organization == organization
    exclusions = read_jsonl(tmp_path / "out" / "exclusions.jsonl")
    assert [(item["id"], item["row"]) for item in exclusions] == [("r1", 1), ("r3", 3)]
    assert [match["kind"] for match in exclusions[0]["matches"]] == ["sha256"]
    assert "pdq" in {match["kind"] for match in exclusions[1]["matches"]}
    assert (tmp_path / "out" / "clean.jsonl").read_bytes() == lines[1] + lines[3] + lines[4]
    receipt = json.loads((tmp_path / "out" / "receipt.json").read_text())
    assert receipt == batch.receipt
    receipts.receipt_verify(receipt, signing_key.public_key())
    assert receipt["statement"]["excluded_count"] == 2
    assert receipt["statement"]["invalid_count"] == 1
    key_id = receipts.key_id(signing_key.public_key())
    assert stderr_lines(result) == [
        f"submitted manifest.jsonl for ai_training: batch {batch.public_id}",
        f"batch {batch.public_id} done: 5 records, 2 excluded, 1 invalid, registry version "
        f"{batch.registry_version}",
        "warning: 1 records are invalid and were NOT checked (kept in a filtered manifest):",
        "  row 4: not valid JSON: Expecting property name enclosed in double quotes",
        "exclusions: 2 records written to out/exclusions.jsonl",
        "receipt: saved to out/receipt.json",
        f"trusting the public key fetched from {live_server.url}/api/v1/receipts/public-key "
        f"(key id {key_id}); pass --public-key FILE to pin a key you obtained independently",
        f"receipt verified: signed by key id {key_id}",
        "filtered manifest: out/clean.jsonl (3 records kept, 2 dropped)",
    ]
    assert "checking: 100%" in result.stderr
    assert "5/5" in result.stderr

    # The same command again follows the same batch instead of submitting another.
    again = optout(*args, "--quiet", cwd=tmp_path, api_key=api_key)

    assert again.returncode == 0, again.stderr
    assert Batch.objects.count() == 1
    assert stderr_lines(again)[0].startswith(
        f"batch {batch.public_id} was already submitted with this Idempotency-Key"
    )


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_of_an_img2dataset_parquet_with_a_pinned_key_and_default_paths(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    signing_key: receipts.Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    api_key, photos, _ = registry_data
    table = img2dataset_table(6)
    hashes = table.column("sha256").to_pylist()
    hashes[1], hashes[4] = photos[0].sha256, photos[1].sha256
    table = table.set_column(2, "sha256", pa.array(hashes))
    manifest = tmp_path / "data" / "00000.parquet"
    manifest.parent.mkdir()
    pq.write_table(table, manifest)
    key_file = tmp_path / "registry.pub.pem"
    key_file.write_text(receipts.public_key_to_pem(signing_key.public_key()))
    work = tmp_path / "work"
    work.mkdir()

    result = optout(
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "--public-key",
        str(key_file),
        "--filtered",
        str(tmp_path / "filtered.parquet"),
        "--poll-interval",
        "0.2",
        "--strictness",
        "1",
        "--quiet",
        cwd=work,
        api_key=api_key,
    )

    assert result.returncode == 0, result.stderr + worker.read_text(errors="replace")
    batch = Batch.objects.get()
    # The stricter rule asked for (exact copies match under any) is the batch's.
    assert batch.thresholds["strictness"] == 1
    key_id = receipts.key_id(signing_key.public_key())
    assert stderr_lines(result)[0] == f"trusting the public key in {key_file} (key id {key_id})"
    assert "fetched" not in result.stderr
    assert sorted(path.name for path in work.iterdir()) == sorted(
        [f"{batch.public_id}.receipt.json", "exclusions.jsonl"]
    )
    exclusions = read_jsonl(work / "exclusions.jsonl")
    assert [(item["id"], item["row"]) for item in exclusions] == [
        ("000000001", 2),
        ("000000004", 5),
    ]
    assert pq.read_table(tmp_path / "filtered.parquet").equals(table.take([0, 2, 3, 5]))

    # The saved receipt verifies offline; altered, it does not.
    receipt_path = work / f"{batch.public_id}.receipt.json"
    verified = optout("verify", str(receipt_path), "--public-key", str(key_file), cwd=work)
    receipt = json.loads(receipt_path.read_text())
    assert receipt["statement"]["thresholds"]["strictness"] == 1
    receipt["statement"]["excluded_count"] = 1
    tampered = work / "tampered.json"
    tampered.write_text(json.dumps(receipt))
    refused = optout("verify", str(tampered), "--public-key", str(key_file), cwd=work)

    assert verified.returncode == 0, verified.stderr
    assert f"batch:            {batch.public_id}\n" in verified.stdout
    assert "excluded:         2\n" in verified.stdout
    assert "records:          6\n" in verified.stdout
    assert refused.returncode == 1
    assert refused.stderr == (
        f"optout verify: {tampered} is NOT valid: the signature does not match the "
        "statement: the statement was altered or the signature is damaged\n"
    )


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_with_a_receipt_from_another_key_exits_1_and_writes_no_filtered_manifest(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    tmp_path: Path,
) -> None:
    api_key, photos, _ = registry_data
    manifest = tmp_path / "manifest.jsonl"
    jsonl_manifest(manifest, photos)
    impostor = receipts.private_key_generate()
    key_file = tmp_path / "impostor.pem"
    key_file.write_text(receipts.public_key_to_pem(impostor.public_key()))

    result = optout(
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "--public-key",
        str(key_file),
        "--filtered",
        "clean.jsonl",
        "--poll-interval",
        "0.2",
        "--quiet",
        cwd=tmp_path,
        api_key=api_key,
    )

    assert result.returncode == 1
    assert "optout check: the receipt does NOT verify:\n  signed by another key" in result.stderr
    assert result.stderr.endswith("the filtered manifest was not written\n")
    assert not (tmp_path / "clean.jsonl").exists()
    assert len(read_jsonl(tmp_path / "exclusions.jsonl")) == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("via", ["--key", "environment"])
def test_check_with_a_revoked_key_prints_the_registry_detail_and_exits_1(
    live_server: Any, tmp_path: Path, small_manifest: Path, via: str
) -> None:
    organization = OrganizationFactory()
    key, raw = OrganizationAPIKey.objects.create_key(organization=organization, name="old")
    key.revoked = True
    key.save()
    # Sent either way, the key reaches the registry (without one it would answer
    # "Authentication credentials were not provided.").
    key_args = ["--key", raw] if via == "--key" else []

    result = optout(
        "check",
        str(small_manifest),
        "--url",
        live_server.url,
        "-q",
        *key_args,
        cwd=tmp_path,
        api_key=None if key_args else raw,
    )

    assert result.stderr == (
        f"optout check: POST {live_server.url}/api/v1/batches: HTTP 401: "
        "Invalid or revoked API key.\n"
    )
    assert result.returncode == 1
    assert Batch.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        (
            "notes.txt",
            b"just some words\n",
            "HTTP 415: unknown manifest format; send JSONL, CSV, Parquet or a webdataset .tar",
        ),
        (
            "manifest.csv",
            b"caption,width\nsunset,640\n",
            "HTTP 400: the CSV header names none of id, sha256, pdq, phash, url (or key)",
        ),
    ],
    ids=["unknown-format", "csv-without-record-columns"],
)
def test_check_of_a_manifest_the_registry_refuses_prints_its_detail_and_exits_1(
    live_server: Any, tmp_path: Path, name: str, content: bytes, detail: str
) -> None:
    _, raw = OrganizationAPIKey.objects.create_key(
        organization=OrganizationFactory(), name="cli", scopes=["batches"]
    )
    manifest = tmp_path / name
    manifest.write_bytes(content)

    result = optout(
        "check", str(manifest), "--url", live_server.url, "-q", cwd=tmp_path, api_key=raw
    )

    assert result.stderr == f"optout check: POST {live_server.url}/api/v1/batches: {detail}\n"
    assert result.returncode == 1
    assert Batch.objects.count() == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_bytes_under_another_name_explain_the_refused_default_idempotency_key(
    live_server: Any, tmp_path: Path
) -> None:
    _, raw = OrganizationAPIKey.objects.create_key(
        organization=OrganizationFactory(), name="cli", scopes=["batches"]
    )
    content = b"id,sha256\na," + b"ab" * 32 + b"\n"
    as_jsonl, as_csv = tmp_path / "x.jsonl", tmp_path / "x.csv"
    as_jsonl.write_bytes(content)
    as_csv.write_bytes(content)
    default_key = check.manifest_digests(as_jsonl, "ai_training")[1]
    # The first run (here without waiting for its batch): the bytes as JSONL.
    status, _ = client.Registry(live_server.url, raw).batch_submit(
        as_jsonl, use="ai_training", idempotency_key=default_key, on_read=lambda size: None
    )

    result = optout("check", str(as_csv), "--url", live_server.url, "-q", cwd=tmp_path, api_key=raw)

    assert status == 202
    assert result.stderr == (
        f"optout check: the registry refused the default Idempotency-Key ({default_key[:16]}…): "
        "this manifest's bytes were already submitted for ai_training as another request "
        "(another file name or format?): pass --idempotency-key to check it again\n"
    )
    assert result.returncode == 1
    assert Batch.objects.count() == 1


def test_check_help_documents_the_exit_status_and_the_defaults() -> None:
    result = optout("check", "--help", cwd=REPO)

    assert "Exit status:\n  0  batch done, receipt verified, files written\n" in result.stdout
    assert "  2  usage error (bad arguments, unreadable files, no API key)\n" in result.stdout
    assert "default: exclusions.jsonl in the current folder" in result.stdout
    assert result.returncode == 0


def test_receipt_problems_name_every_statement_field_that_does_not_match_the_run() -> None:
    key = receipts.private_key_generate()
    statement = {
        "type": "optout-registry.batch-receipt",
        "batch": "b-1",
        "use": "ai_training",
        "manifest_sha256": sha(1),
        "excluded_count": 2,
        "excluded_ids_sha256": receipts.excluded_ids_digest(["r1", "r3"]),
    }
    receipt = receipts.receipt_sign(statement, key)
    downloaded = check.Exclusions(
        rows={1: "r1", 3: "r3"}, ids_sha256=receipts.excluded_ids_digest(["r1", "r3"])
    )
    one_missing = check.Exclusions(rows={1: "r1"}, ids_sha256=receipts.excluded_ids_digest(["r1"]))

    def problems(signed: dict[str, Any], **run: Any) -> list[str]:
        this_run = {
            "batch_id": "b-1",
            "use": "ai_training",
            "manifest_sha256": sha(1),
            "exclusions": downloaded,
        }
        return check.receipt_problems(signed, key.public_key(), **{**this_run, **run})

    matching = problems(receipt)
    mismatching = problems(
        receipt, batch_id="b-2", manifest_sha256=sha(2), exclusions=one_missing, strictness=2
    )
    stricter = receipts.receipt_sign({**statement, "thresholds": {"strictness": 1}}, key)
    stated = problems(stricter, strictness=1)

    assert matching == [] and stated == []
    assert mismatching == [
        "batch is 'b-1', expected 'b-2' (the batch checked)",
        f"manifest_sha256 is '{sha(1)}', expected '{sha(2)}' (the sha256 of the local manifest)",
        "excluded_count is 2, expected 1 (the number of exclusions downloaded)",
        f"excluded_ids_sha256 is '{statement['excluded_ids_sha256']}', expected "
        f"'{one_missing.ids_sha256}' (the sha256 of the downloaded ids)",
        "thresholds.strictness is 0, expected 2 (the strictness asked for)",
    ]


def test_the_default_idempotency_key_is_the_sha256_of_use_and_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(b'{"id": "a"}\n')

    digest, key = check.manifest_digests(manifest, "ai_training")

    assert digest == hashlib.sha256(b'{"id": "a"}\n').hexdigest()
    assert key == hashlib.sha256(b'ai_training{"id": "a"}\n').hexdigest()
    assert check.manifest_digests(manifest, "data_mining")[1] != key
    # A stricter rule is another request: another default key (none asked: the same).
    assert check.manifest_digests(manifest, "ai_training", 0)[1] == key
    assert check.manifest_digests(manifest, "ai_training", 1)[1] != key


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_of_a_csv_manifest_agrees_with_the_registry_on_row_numbers(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    tmp_path: Path,
) -> None:
    api_key, photos, _ = registry_data
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(
        (
            "id,sha256,caption\n"
            f'c1,{sha(5)},"a caption\nover two lines"\n'
            f"c2,{photos[1].sha256},opted out\n"
            f"c3,{sha(6)},free\n"
        ).encode()
    )

    result = optout(
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "--filtered",
        "clean.csv",
        "--poll-interval",
        "0.2",
        "--quiet",
        cwd=tmp_path,
        api_key=api_key,
    )

    assert result.returncode == 0, result.stderr + worker.read_text(errors="replace")
    exclusions = read_jsonl(tmp_path / "exclusions.jsonl")
    assert [(item["id"], item["row"]) for item in exclusions] == [("c2", 4)]
    assert (tmp_path / "clean.csv").read_bytes().decode() == (
        f'id,sha256,caption\nc1,{sha(5)},"a caption\nover two lines"\nc3,{sha(6)},free\n'
    )


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_of_a_csv_with_a_stray_quote_names_the_rows_it_swallowed(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    tmp_path: Path,
) -> None:
    """The rows after the quote were read into one caption: 1 record, 0 invalid,
    and the opted-out photo of row 4 kept unnamed in the filtered manifest."""
    api_key, photos, _ = registry_data
    lines = [
        "id,sha256,caption\n",
        f"c1,{photos[0].sha256},opted out\n",
        f'c2,{sha(5)},"a caption with a stray quote\n',
        f"c3,{photos[1].sha256},opted out too\n",
        f"c4,{sha(6)},free\n",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("".join(lines))

    result = optout(
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "--filtered",
        "clean.csv",
        "--poll-interval",
        "0.2",
        cwd=tmp_path,
        api_key=api_key,
    )

    assert result.returncode == 0, result.stderr + worker.read_text(errors="replace")
    assert [(item["id"], item["row"]) for item in read_jsonl(tmp_path / "exclusions.jsonl")] == [
        ("c1", 2)
    ]
    batch = Batch.objects.get()
    messages = stderr_lines(result)
    assert messages[1] == (
        f"batch {batch.public_id} done: 2 records, 1 excluded, 1 invalid, "
        f"registry version {batch.registry_version}"
    )
    assert messages[2:4] == [
        "warning: 1 records are invalid and were NOT checked (kept in a filtered manifest):",
        "  row 5: a quoted field opened on line 3 is never closed: the rest of the file was "
        "read as one field",
    ]
    assert messages[-1] == "filtered manifest: clean.csv (1 records kept, 1 dropped)"
    assert (tmp_path / "clean.csv").read_text() == "".join(lines[:1] + lines[2:])


@pytest.mark.worker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_of_a_shard_cut_inside_its_last_member_writes_the_filtered_shard(
    live_server: Any,
    worker: Path,
    registry_data: tuple[str, list[hashing.PhotoHashes], Organization],
    tmp_path: Path,
) -> None:
    """It was a traceback (tarfile.ReadError), exit 1 and no filtered shard."""
    api_key, _, _ = registry_data
    images = [jpeg_bytes(101), jpeg_bytes(7), jpeg_bytes(8)]  # the first one opted out
    shard = tar_bytes([(f"shard/{index:06d}.jpg", image) for index, image in enumerate(images, 1)])
    manifest = tmp_path / "shard.tar"
    manifest.write_bytes(shard[: shard.index(images[2]) + len(images[2]) // 2])

    result = optout(
        "check",
        str(manifest),
        "--url",
        live_server.url,
        "--filtered",
        "clean.tar",
        "--poll-interval",
        "0.2",
        cwd=tmp_path,
        api_key=api_key,
    )

    assert result.returncode == 0, result.stderr + worker.read_text(errors="replace")
    assert "Traceback" not in result.stderr
    damaged = "sample 'shard/000003': the tar shard is damaged here: unexpected end of data"
    assert f"  row 3: {damaged}" in stderr_lines(result)
    assert stderr_lines(result)[-1] == "filtered manifest: clean.tar (2 records kept, 1 dropped)"
    assert rows_of(tmp_path / "clean.tar") == [(1, "shard/000002"), (2, damaged)]
