"""Damaged manifests: every reader gives each row its own number (the batch
keeps one result per row, so a number given twice loses a row), a shard cut
short anywhere says so, and a column named twice is refused, not guessed."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from optout.manifests import (
    Row,
    read_csv,
    read_jsonl,
    read_parquet,
    read_webdataset,
)
from optout.models import Batch, BatchResult, Chunk
from optout.services import opt_out_file
from optout.tasks import batch_chunk_decide_task, batch_shard_hash_task
from registry.models import Channel, Claim
from tests.factories import CreatorFactory, OrganizationFactory
from tests.images import jpeg_bytes
from tests.optout.batch_helpers import batch_environment, parquet, pipeline_client, submit, tar

OVERLONG = b"y" * 200_000  # over csv.field_size_limit(): the csv reader gives up on the row
CUT_SHORT = "the tar shard ends here without its end-of-archive marker: it may be cut short"

DAMAGED: list[tuple[Callable[[IO[bytes]], Iterator[Row]], bytes]] = [
    (read_csv, b"id,url\na,u\nb,u/" + OVERLONG + b"\nc,u\n"),
    (read_csv, b'id,url\n"a\nb",u\nc,"' + OVERLONG + b'"\nd,u\n'),
    (read_csv, b'id,url\n"a\nb",u\nc,"x\n' + OVERLONG + b'\ny",u\nd,u\n'),
    (read_csv, b"id,url\n" + OVERLONG + b",u\n" + OVERLONG + b"\n" + OVERLONG + b",\nd,u\n"),
    (read_csv, b'id,url\na,u,extra\n\nb\n,\nc\xff,u\n"d,u\n,,,,\ne,u\n'),
    (read_csv, b'id,url\r\na,u\rb,u\r\n"c\r\nd",u\r' + OVERLONG + b"\r\ne,u"),
    (read_jsonl, b'{"id": "a"}\n\n{"id": \n[1]\n{"id": "b", "id": "c"}\n\xff\n{"id": "d"}'),
    (read_parquet, parquet({"id": ["a", "b\x00", None, "d"], "url": [None, "u", "x\x00", "u"]})),
]


@pytest.mark.parametrize(("reader", "manifest"), DAMAGED)
def test_row_numbers_stay_unique_and_increasing_on_damaged_manifests(
    reader: Callable[[IO[bytes]], Iterator[Row]], manifest: bytes
) -> None:
    numbers = [row for row, _ in reader(io.BytesIO(manifest))]

    assert numbers == sorted(set(numbers)), numbers
    assert numbers and numbers[0] >= 1


def _samples(count: int) -> list[tuple[str, bytes]]:
    members = []
    for index in range(1, count + 1):
        members.append((f"{index:06d}.jpg", bytes([index]) * (700 + 300 * index)))
        members.append((f"{index:06d}.json", b'{"url": "https://a.org/%d.jpg"}' % index))
    return members


def test_a_shard_cut_anywhere_ends_with_a_row_saying_so() -> None:
    """Cut at every 64th byte, plain and gzipped: rows numbered 1, 2, 3… and,
    unless the whole end-of-archive marker is there, the last one reports the
    damage instead of deciding on what was read of its sample."""
    shard = tar(_samples(3))
    end = shard.rindex(b"https://a.org/3.jpg") // 512 * 512 + 512  # after the last member

    for cut in range(512, len(shard) + 1, 64):
        for data in (shard[:cut], gzip.compress(shard[:cut])):
            rows = list(read_webdataset(io.BytesIO(data)))

            assert [row for row, _ in rows] == list(range(1, len(rows) + 1)), cut
            damaged = isinstance(rows[-1][1], str)
            assert damaged == (cut < end + 1024), (cut, rows[-1])
            assert all(isinstance(raw, dict) for _, raw in rows[:-1]), cut
    assert len(list(read_webdataset(io.BytesIO(shard)))) == 3


@pytest.mark.parametrize("extra", [0, 200, 512, 513])
def test_a_shard_cut_at_or_in_a_member_header_reports_the_sample_before(extra: int) -> None:
    shard = tar([("000001.jpg", b"x" * 5000), ("000002.jpg", b"y" * 5000)])
    first = 512 + 5120  # the first member's header and padded data

    rows = list(read_webdataset(io.BytesIO(shard[: first + extra])))

    if extra < 512:  # no whole header left: tarfile itself would end quietly
        assert rows == [(1, f"sample '000001': {CUT_SHORT}")]
    else:  # in the second member's data
        assert rows == [
            (1, {"id": "000001", "image": b"x" * 5000}),
            (2, "sample '000002': the tar shard is damaged here: unexpected end of data"),
        ]


def test_a_shard_with_half_its_end_marker_or_a_bad_header_is_damaged() -> None:
    shard = tar([("000001.jpg", b"x" * 5000), ("000002.jpg", b"y" * 5000)])
    end = 2 * (512 + 5120)
    garbled = bytearray(shard)
    garbled[512 + 5120 + 100] ^= 0xFF  # the second member's header fails its checksum

    half = list(read_webdataset(io.BytesIO(shard[: end + 512])))
    whole = list(read_webdataset(io.BytesIO(shard[: end + 1024])))
    bad = list(read_webdataset(io.BytesIO(bytes(garbled))))

    assert half[-1] == (2, f"sample '000002': {CUT_SHORT}")
    assert whole[-1] == (2, {"id": "000002", "image": b"y" * 5000})
    assert bad == [(1, "sample '000001': the tar shard is damaged here: bad checksum")]


def test_a_shard_that_ends_properly_after_folders_is_not_damaged() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
        folder = tarfile.TarInfo("later")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)

    assert list(read_webdataset(io.BytesIO(buffer.getvalue()))) == [
        (1, {"id": "a", "image": b"abc"})
    ]


# --- through the API: no row lost, nothing guessed ---------------------------------


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[APIClient]:
    for _ in batch_environment(settings, tmp_path):
        yield pipeline_client(OrganizationFactory(name="Lab D"))


def _decided(batch: Batch) -> list[tuple[int, str, str, str]]:
    for chunk_id in Chunk.objects.filter(batch=batch).values_list("pk", flat=True):
        batch_chunk_decide_task(chunk_id)
    return list(
        BatchResult.objects.filter(batch=batch)
        .order_by("row")
        .values_list("row", "record_id", "decision", "reason")
    )


def _opted_out_domain(domain: str) -> None:
    creator = CreatorFactory()
    claim = Claim.objects.create(creator=creator, kind="domain", value=domain, registered_version=0)
    opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="claims",
        claims=[claim.public_id],
        channel=Channel.WEB,
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_an_excluded_row_before_a_row_over_the_field_limit_is_not_lost(
    client: APIClient,
) -> None:
    """The malformed row used to share the excluded row's number: one result
    per row kept the first, the exclusion or the invalid row vanished."""
    _opted_out_domain("optedout.example")
    manifest = (
        b"id,url\n"
        b"a,https://fine.example/a\n"
        b"b,https://optedout.example/b\n"
        b"c,https://optedout.example/" + OVERLONG + b"\n"
        b"d,https://optedout.example/d\n"
    )

    response = submit(client, manifest, name="m.csv")
    batch = Batch.objects.get(public_id=response.json()["id"])
    results = _decided(batch)
    batch.refresh_from_db()

    assert response.status_code == 202
    assert [(row, record_id, decision) for row, record_id, decision, _ in results] == [
        (3, "b", "exclude"),
        (4, "", "invalid"),
        (5, "d", "exclude"),
    ]
    assert results[1][3] == "malformed CSV: field larger than field limit (131072)"
    assert (batch.status, batch.record_count, batch.excluded_count, batch.invalid_count) == (
        "done",
        4,
        2,
        1,
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_rows_a_stray_csv_quote_swallows_are_an_invalid_result_not_lost(
    client: APIClient,
) -> None:
    """The quote opened on line 3 is never closed: rows c and d were read into b's
    caption, and b decided on (1 record, 0 invalid: c and d silently unchecked)."""
    _opted_out_domain("optedout.example")
    manifest = (
        b"id,url,caption\n"
        b"a,https://optedout.example/a,fine\n"
        b'b,https://fine.example/b,"a caption with a stray quote\n'
        b"c,https://optedout.example/c,ok\n"
        b"d,https://optedout.example/d,ok\n"
    )

    response = submit(client, manifest, name="m.csv")
    batch = Batch.objects.get(public_id=response.json()["id"])
    results = _decided(batch)
    batch.refresh_from_db()

    assert response.status_code == 202
    assert results == [
        (2, "a", "exclude", ""),
        (
            5,
            "",
            "invalid",
            "a quoted field opened on line 3 is never closed: "
            "the rest of the file was read as one field",
        ),
    ]
    assert (batch.status, batch.record_count, batch.excluded_count, batch.invalid_count) == (
        "done",
        2,
        1,
        1,
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_shard_cut_after_a_member_ends_with_an_invalid_result(client: APIClient) -> None:
    shard = tar([(f"{index:06d}.jpg", jpeg_bytes(index)) for index in (1, 2, 3)])
    first = 512 + (len(jpeg_bytes(1)) + 511) // 512 * 512

    for cut, key in ((first, "1"), (first + 200, "2")):
        response = submit(client, shard[:cut], name="shard.tar", key=key)
        batch = Batch.objects.get(public_id=response.json()["id"])
        batch_shard_hash_task(batch.pk)
        results = _decided(batch)
        batch.refresh_from_db()

        assert response.status_code == 202
        assert results == [(1, "", "invalid", f"sample '000001': {CUT_SHORT}")]
        assert (batch.status, batch.record_count) == ("done", 1)


def _parquet_with_names(names: list[str], values: list[str]) -> bytes:
    """One row of text columns; ``names`` may repeat (pa.table would refuse)."""
    table = pa.Table.from_arrays([pa.array([value]) for value in values], names=names)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "manifest", "detail"),
    [
        (
            "m.csv",
            b"id,url,url\na,https://optedout.example/a,https://fine.example/a\n",
            "the CSV header names the column 'url' more than once",
        ),
        (
            "m.parquet",
            _parquet_with_names(
                ["id", "url", "url"], ["a", "https://optedout.example/a", "https://fine.example/a"]
            ),
            "the Parquet file has more than one column named 'url'",
        ),
    ],
)
def test_a_column_named_twice_is_a_400_naming_it(
    client: APIClient, name: str, manifest: bytes, detail: str
) -> None:
    response = submit(client, manifest, name=name)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert not Batch.objects.exists()
