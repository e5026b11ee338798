"""The manifest readers: one bad row never stops the others, row numbers are
the manifest's own, and only an unreadable whole raises ManifestInvalid."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optout.manifests import (
    ManifestInvalid,
    detect_format,
    read_csv,
    read_jsonl,
    read_parquet,
    read_webdataset,
    webdataset_check,
)
from tests.optout.batch_helpers import parquet, tar


def test_jsonl_reports_malformed_lines_with_their_numbers_and_reads_the_rest() -> None:
    manifest = (
        b'{"id": "a", "url": "https://a.org/", "caption": "ignored"}\n'
        b"\n"
        b'{"id": "b", \n'
        b"[1, 2]\n"
        + b"[" * 100_000
        + b"\n"
        + b'{"id": "c\xff"}\n'
        + b'\xef\xbb\xbf{"key": "k", "sha256": null}\n'
    )

    rows = list(read_jsonl(io.BytesIO(manifest)))

    assert rows == [
        (1, {"id": "a", "url": "https://a.org/"}),
        (3, "not valid JSON: Expecting property name enclosed in double quotes"),
        (4, "each line must be a JSON object"),
        (5, "not valid JSON: nested too deeply"),
        (6, "not valid JSON: UnicodeDecodeError"),
        (7, {"id": "k"}),
    ]


def test_csv_reports_bad_rows_on_their_own_lines() -> None:
    manifest = (
        b"ID, sha256 ,url,width\n"
        b"a,ab,https://a.org/,1\n"
        b'"multi\nline",,https://b.org/,2\n'
        b"c\xff,,https://c.org/,3\n"
        b"d,,https://d.org/,4,extra\n"
        b"e,,,\n"
    )

    rows = list(read_csv(io.BytesIO(manifest)))

    assert rows == [
        (2, {"id": "a", "sha256": "ab", "url": "https://a.org/"}),
        (4, {"id": "multi\nline", "url": "https://b.org/"}),
        (5, "row is not valid UTF-8"),
        (6, "row has more fields than the header"),
        (7, {"id": "e"}),
    ]


def test_csv_without_a_known_column_is_refused_as_a_whole() -> None:
    with pytest.raises(ManifestInvalid, match="names none of id, sha256, pdq, phash, url"):
        list(read_csv(io.BytesIO(b"name,size\nx,1\n")))


def test_parquet_reads_id_or_key_and_ignores_other_columns() -> None:
    data = parquet({"key": ["k1", "k2"], "id": ["i1", None], "md5": ["x", "y"], "width": [1, 2]})

    assert list(read_parquet(io.BytesIO(data))) == [(1, {"id": "i1"}), (2, {"id": "k2"})]


def _parquet_with_raw_text(column: str, values: list[bytes], **others: list[Any]) -> bytes:
    """A Parquet file whose string column holds these exact bytes (pyarrow
    would refuse to build such a column from Python strings)."""
    raw = pa.array(values, type=pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(values), raw.buffers())
    buffer = io.BytesIO()
    pq.write_table(pa.table({column: text, **others}), buffer)
    return buffer.getvalue()


def test_parquet_rows_with_nul_or_bytes_that_are_not_utf8_are_invalid_alone() -> None:
    nul = parquet({"id": ["a", "b\x00", "c"], "url": ["https://a.org/", None, "x\x00y"]})
    undecodable = _parquet_with_raw_text(
        "url", [b"https://a.org/1", b"https://a.org/\xff", b"\x00"], id=["a", "b", "c"]
    )
    # An img2dataset key is only the id when there is no id: its flaws count then.
    keyed = parquet({"id": ["a", None], "key": ["k\x00", "k\x00"]})

    assert list(read_parquet(io.BytesIO(nul))) == [
        (1, {"id": "a", "url": "https://a.org/"}),
        (2, "a value holds a NUL character or invalid Unicode"),
        (3, "a value holds a NUL character or invalid Unicode"),
    ]
    assert list(read_parquet(io.BytesIO(undecodable))) == [
        (1, {"id": "a", "url": "https://a.org/1"}),
        (2, "row is not valid UTF-8"),
        (3, "a value holds a NUL character or invalid Unicode"),
    ]
    assert list(read_parquet(io.BytesIO(keyed))) == [
        (1, {"id": "a"}),
        (2, "a value holds a NUL character or invalid Unicode"),
    ]


def test_damaged_parquet_is_refused_as_a_whole() -> None:
    data = parquet({"id": [str(i) for i in range(100)]})

    with pytest.raises(ManifestInvalid) as error:
        list(read_parquet(io.BytesIO(data[:-20])))

    assert error.value.code == "malformed"


def test_webdataset_groups_members_by_key_and_survives_bad_json() -> None:
    shard = tar(
        [
            ("dir/0001.jpg", b"jpeg bytes"),
            ("dir/0001.json", b'{"url": "https://a.org/1.jpg", "key": "other"}'),
            ("dir/0002.seg.png", b"not the image"),
            ("dir/0002.json", b"\xff not json"),
            ("dir/0002.url", b" https://b.org/2 \n"),
            ("0003.webp", b"webp bytes"),
            ("0003.json", b"[" * 50_000),
        ]
    )

    rows = list(read_webdataset(io.BytesIO(shard)))

    assert rows == [
        (1, {"id": "dir/0001", "url": "https://a.org/1.jpg", "image": b"jpeg bytes"}),
        (2, {"id": "dir/0002", "url": "https://b.org/2"}),
        (3, {"id": "0003", "image": b"webp bytes"}),
    ]


def test_a_truncated_shard_reports_the_damaged_sample() -> None:
    shard = tar([("a.jpg", b"x" * 5000), ("b.jpg", b"y" * 5000)])

    rows = list(read_webdataset(io.BytesIO(shard[: 512 + 6000])))

    assert rows[0] == (1, {"id": "a", "image": b"x" * 5000})
    assert rows[1][0] == 2 and isinstance(rows[1][1], str)
    assert rows[1][1].startswith("sample 'b': the tar shard is damaged here")


def test_webdataset_check_needs_a_tar_with_a_file() -> None:
    webdataset_check(io.BytesIO(tar([("a.jpg", b"x")])))
    with pytest.raises(ManifestInvalid) as empty:
        webdataset_check(io.BytesIO(tar([])))
    with pytest.raises(ManifestInvalid) as garbage:
        webdataset_check(io.BytesIO(b"not a tar" * 100))

    assert (empty.value.code, garbage.value.code) == ("empty", "malformed")


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("m.bin", b"PAR1\x15\x04", "parquet"),
        ("upload", tar([("a.jpg", b"x")])[:4096], "webdataset"),
        ("upload", b'{"id": "a"}\n', "jsonl"),
        ("upload", b"id,url\n", "csv"),
        ("upload", b"id\turl\n", "csv"),
        ("m.csv", b"id,url\nb\xff,x\n", "csv"),
        ("upload", '{"id": "é'.encode()[:-1], "jsonl"),
    ],
)
def test_detect_format(name: str, head: bytes, expected: str) -> None:
    assert detect_format(name, head) == expected


@pytest.mark.parametrize(
    ("name", "head", "code"),
    [
        ("m.jsonl", b"  \n", "empty"),
        ("m.parquet", b'{"id": 1}', "malformed"),
        ("upload", b"\x89PNG\r\n\x1a\n\xff\xfe", "unsupported_format"),
        ("upload", b"just words", "unsupported_format"),
    ],
)
def test_detect_format_refuses(name: str, head: bytes, code: str) -> None:
    with pytest.raises(ManifestInvalid) as error:
        detect_format(name, head)

    assert error.value.code == code
