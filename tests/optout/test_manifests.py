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


# --- row numbers and repeated fields (fuzzing finds) -----------------------------------

OVERLONG = b"y" * 200_000  # over csv.field_size_limit(): the csv reader gives up on the row


def test_a_csv_row_over_the_field_limit_is_reported_under_its_own_line() -> None:
    manifest = (
        b"id,url\n"
        b"a,https://optedout.example/a\n"
        b"b,https://optedout.example/b\n"
        b"c,https://optedout.example/" + OVERLONG + b"\n"
        b"d,https://optedout.example/d\n"
    )

    rows = list(read_csv(io.BytesIO(manifest)))

    assert rows == [
        (2, {"id": "a", "url": "https://optedout.example/a"}),
        (3, {"id": "b", "url": "https://optedout.example/b"}),
        (4, "malformed CSV: field larger than field limit (131072)"),
        (5, {"id": "d", "url": "https://optedout.example/d"}),
    ]


def test_a_malformed_csv_row_after_a_multiline_field_keeps_its_last_line() -> None:
    manifest = (
        b"id,url\n"
        b'"a\nb\nc",https://a.org/\n'  # lines 2-4: row 4
        b'd,"https://d.org/\n' + OVERLONG + b'"\n'  # lines 5-6, given up on line 6
        b"e,https://e.org/\n"
    )

    rows = list(read_csv(io.BytesIO(manifest)))

    assert rows == [
        (4, {"id": "a\nb\nc", "url": "https://a.org/"}),
        (6, "malformed CSV: field larger than field limit (131072)"),
        (7, {"id": "e", "url": "https://e.org/"}),
    ]


UNCLOSED = (
    "a quoted field opened on line {} is never closed: the rest of the file was read as one field"
)


@pytest.mark.parametrize(("newline", "end"), [("\n", "\n"), ("\r\n", "\r\n"), ("\n", "")])
def test_a_stray_quote_left_open_is_one_invalid_row_naming_its_line_not_a_record(
    newline: str, end: str
) -> None:
    """Not a record with the rest of the file as its caption, the rows there unread."""
    digest = "0" * 64
    lines = [
        "id,sha256,caption",
        f"z,{digest},fine",
        f'a,{digest},"a caption with a stray quote',
        f"b,{digest},ok",
        f"c,{digest},ok",
    ]

    rows = list(read_csv(io.BytesIO((newline.join(lines) + end).encode())))

    assert rows == [(2, {"id": "z", "sha256": digest}), (5, UNCLOSED.format(3))]


def test_a_stray_quote_closed_by_a_later_quoted_field_is_one_invalid_row() -> None:
    manifest = (
        b"id,url,caption\n"
        b'a,https://a.org/,"a caption with a stray quote\n'
        b"b,https://b.org/,ok\n"
        b'c,https://c.org/,"quoted"\n'  # its opening quote closes the stray one
        b"d,https://d.org/,ok\n"
    )

    rows = list(read_csv(io.BytesIO(manifest)))

    assert rows == [
        (4, "malformed CSV: ',' expected after '\"' on line 4 of the record on lines 2 to 4"),
        (5, {"id": "d", "url": "https://d.org/"}),
    ]


def test_a_csv_closing_quote_followed_by_more_is_invalid_and_no_line_of_it_a_record() -> None:
    """``"b"c`` is not guessed to be ``bc``; and the rest of its record, a quoted
    field over two lines here, stays in it (a strict csv reader would drop the
    rest of line 2 and read line 3 as a record)."""
    manifest = (
        b"id,url,caption\n"
        b'a,"https://a.org/"x,"two\n'
        b'z,https://z.org/,lines"\n'
        b'b,"https://b.org/" \n'
        b'c,"https://c.org/","say ""cheese"""\n'
    )

    rows = list(read_csv(io.BytesIO(manifest)))

    assert rows == [
        (3, "malformed CSV: ',' expected after '\"' on line 2 of the record on lines 2 to 3"),
        (4, "malformed CSV: ',' expected after '\"'"),
        (5, {"id": "c", "url": "https://c.org/"}),
    ]


def test_a_csv_header_with_a_stray_quote_left_open_is_refused() -> None:
    with pytest.raises(ManifestInvalid) as error:
        list(read_csv(io.BytesIO(b'id,url,"caption\na,https://a.org/,x\n')))

    assert error.value.code == "malformed"
    assert str(error.value) == f"the CSV header: {UNCLOSED.format(1)}"


@pytest.mark.parametrize(
    ("header", "repeated"),
    [
        (b"id,url,url", "url"),
        (b"ID, sha256 ,caption,id", "id"),  # the same column once spellings are normalised
        (b"key,pdq,key", "key"),
        (b"id\turl\tcolour\tcolour", "colour"),
    ],
)
def test_a_csv_header_naming_a_read_column_twice_is_refused(header: bytes, repeated: str) -> None:
    manifest = header + b"\n" + b"a,https://optedout.example/a,https://fine.example/b,x\n"

    with pytest.raises(ManifestInvalid) as error:
        list(read_csv(io.BytesIO(manifest)))

    assert error.value.code == "malformed"
    assert str(error.value) == f"the CSV header names the column {repeated!r} more than once"


def test_a_csv_column_the_registry_ignores_may_repeat() -> None:
    rows = list(read_csv(io.BytesIO(b"id,caption,caption\na,x,y\n")))

    assert rows == [(2, {"id": "a"})]


def test_a_parquet_file_with_two_columns_of_one_name_is_refused() -> None:
    table = pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["https://optedout.example/a"]), pa.array(["https://b.org/"])],
        names=["id", "url", "url"],
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)

    with pytest.raises(ManifestInvalid) as error:
        list(read_parquet(io.BytesIO(buffer.getvalue())))

    assert error.value.code == "malformed"
    assert str(error.value) == "the Parquet file has more than one column named 'url'"


def test_a_jsonl_object_naming_a_record_field_twice_is_an_invalid_row() -> None:
    manifest = (
        b'{"id": "a", "url": "https://optedout.example/a", "url": "https://fine.example/a"}\n'
        b'{"id": "b", "caption": "x", "caption": "y", "meta": {"url": 1, "url": 2}}\n'
        b'{"id": "c", "key": "k", "key": "k"}\n'
        b'\xef\xbb\xbf{"id": "d", "url": "https://d.org/"}\n'
    )

    rows = list(read_jsonl(io.BytesIO(manifest)))

    assert rows == [
        (1, "the object names 'url' more than once"),
        (2, {"id": "b"}),  # keys it does not read may repeat, nested ones too
        (3, "the object names 'key' more than once"),
        (4, {"id": "d", "url": "https://d.org/"}),
    ]


def test_a_tsv_header_holding_a_comma_is_still_read_at_its_tabs() -> None:
    manifest = b"id\turl\twidth, px\na\thttps://a.org/\t3\nb,c\thttps://b.org/\t4\n"

    assert detect_format("m.tsv", manifest) == "csv"
    assert list(read_csv(io.BytesIO(manifest))) == [
        (2, {"id": "a", "url": "https://a.org/"}),
        (3, {"id": "b,c", "url": "https://b.org/"}),
    ]


def test_a_csv_header_holding_a_tab_is_still_read_at_its_commas() -> None:
    manifest = b"id,url,cap\ttion\na,https://a.org/,x\ty\n"

    assert list(read_csv(io.BytesIO(manifest))) == [(2, {"id": "a", "url": "https://a.org/"})]
