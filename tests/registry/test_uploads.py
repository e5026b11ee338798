"""registry.uploads: photo files and ZIPs into per-item outcomes; hashes JSONL parsing.

Pure functions: no database. ZIP archives are built in memory with zipfile.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import replace

import pytest
from PIL import ImageOps

from registry import hashing, keypoints, uploads, variants
from registry.uploads import HashedItem, HashLine
from tests.images import encode, generated_photo, jpeg_bytes

SHA = "a" * 64
PDQ = "b" * 64
PHASH = "c" * 16
# Offsets inside ZIP headers (APPNOTE.TXT 4.3.7 and 4.3.12).
LOCAL_FLAGS, LOCAL_SIZE = 6, 22
CENTRAL_FLAGS, CENTRAL_SIZE = 8, 24


def zip_of(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_header(
    data: bytes, *, local_offset: int, central_offset: int, fmt: str, value: int
) -> bytes:
    """Rewrite one field of the (single) member's local and central headers."""
    patched = bytearray(data)
    central = patched.rfind(b"PK\x01\x02")
    struct.pack_into(fmt, patched, local_offset, value)
    struct.pack_into(fmt, patched, central + central_offset, value)
    return bytes(patched)


def ok(name: str, data: bytes) -> HashedItem:
    rgb = hashing.decode(data)
    mirror = keypoints.to_text(keypoints.keypoints_of(ImageOps.mirror(rgb)))
    derived = [
        replace(item, keypoints=mirror) if item.name == "mirror" else item
        for item in variants.variants_compute(rgb, variants.DERIVED_VARIANTS)
    ]
    return HashedItem(name, hashes=hashing.hash_bytes(data), variants=tuple(derived))


# hash_files: plain files


def test_plain_files_are_hashed_each_with_its_own_outcome() -> None:
    good = jpeg_bytes(1)
    png = encode(generated_photo(2), "PNG")

    items = list(uploads.hash_files([("a.jpg", good), ("notes.txt", b"hello"), ("b.png", png)]))

    assert items == [
        ok("a.jpg", good),
        HashedItem(
            "notes.txt", error_code="not_an_image", error="not a JPEG, PNG, WEBP or GIF image"
        ),
        ok("b.png", png),
    ]


def test_plain_file_above_max_bytes_is_too_large() -> None:
    data = jpeg_bytes(1)

    items = list(uploads.hash_files([("a.jpg", data)], max_bytes=1000))

    assert items == [
        HashedItem(
            "a.jpg",
            error_code="too_large",
            error=f"file is {len(data)} bytes; the limit is 1000 bytes",
        )
    ]


# hash_files: ZIP archives


def test_zip_members_are_hashed_with_nested_paths_and_os_junk_skipped() -> None:
    first, second, third = jpeg_bytes(1), jpeg_bytes(2), encode(generated_photo(3), "PNG")
    archive = zip_of(
        [
            ("holiday/", b""),
            ("holiday/beach/1.jpg", first),
            ("holiday/2.JPG", second),
            ("holiday/beach/deep/3.png", third),
            ("holiday/broken.jpg", b"\xff\xd8\xff" + bytes(100)),
            ("holiday/readme.txt", b"my photos"),
            ("__MACOSX/holiday/._2.JPG", b"\x00\x05\x16\x07apple double"),
            ("holiday/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("holiday/Thumbs.db", b"\xd0\xcf\x11\xe0"),
        ]
    )

    items = list(uploads.hash_files([("photos.zip", archive)]))

    assert items == [
        ok("photos.zip/holiday/beach/1.jpg", first),
        ok("photos.zip/holiday/2.JPG", second),
        ok("photos.zip/holiday/beach/deep/3.png", third),
        HashedItem(
            "photos.zip/holiday/broken.jpg",
            error_code="corrupt",
            error="JPEG header is damaged",
        ),
        HashedItem(
            "photos.zip/holiday/readme.txt",
            error_code="not_an_image",
            error="not a JPEG, PNG, WEBP or GIF image",
        ),
    ]


def test_zip_next_to_plain_files_keeps_upload_order() -> None:
    before, inside, after = jpeg_bytes(1), jpeg_bytes(2), jpeg_bytes(3)

    items = list(
        uploads.hash_files(
            [
                ("before.jpg", before),
                ("set.ZIP", zip_of([("in.jpg", inside)])),
                ("after.jpg", after),
            ]
        )
    )

    assert items == [ok("before.jpg", before), ok("set.ZIP/in.jpg", inside), ok("after.jpg", after)]


def test_zip_member_declared_above_max_bytes_is_too_large_without_inflating_it() -> None:
    # 30 MB of zeros deflate to about 30 KB: the declared size gives it away.
    photo = jpeg_bytes(1)
    archive = zip_of([("huge.jpg", bytes(30_000_000)), ("fine.jpg", photo)])
    assert len(archive) < 100_000

    items = list(uploads.hash_files([("bomb.zip", archive)]))

    assert items == [
        HashedItem(
            "bomb.zip/huge.jpg",
            error_code="too_large",
            error=f"file is 30000000 bytes; the limit is {hashing.MAX_BYTES} bytes",
        ),
        ok("bomb.zip/fine.jpg", photo),
    ]


def test_zip_member_whose_header_understates_its_size_stops_at_the_declared_size() -> None:
    # A zip bomb: the header promises 1000 bytes, the stream inflates to 10 MB.
    honest = zip_of([("bomb.jpg", bytes(10_000_000))])
    lying = patch_header(
        honest, local_offset=LOCAL_SIZE, central_offset=CENTRAL_SIZE, fmt="<I", value=1000
    )

    items = list(uploads.hash_files([("bomb.zip", lying)], max_bytes=100_000))

    assert items == [
        HashedItem(
            "bomb.zip/bomb.jpg",
            error_code="corrupt",
            error="cannot extract: Bad CRC-32 for file 'bomb.jpg'",
        )
    ]


def test_zip_member_with_damaged_compressed_data_is_corrupt() -> None:
    photo = jpeg_bytes(1)
    archive = bytearray(zip_of([("a.jpg", photo)]))
    # The compressed stream starts after the 30-byte local header and the name.
    start = 30 + len("a.jpg")
    archive[start : start + 40] = b"\xff" * 40

    items = list(uploads.hash_files([("damaged.zip", bytes(archive))]))

    assert items == [
        HashedItem(
            "damaged.zip/a.jpg",
            error_code="corrupt",
            error="cannot extract: Error -3 while decompressing data: invalid block type",
        )
    ]


def test_encrypted_zip_member_is_refused_with_a_reason() -> None:
    archive = patch_header(
        zip_of([("secret.jpg", jpeg_bytes(1))]),
        local_offset=LOCAL_FLAGS,
        central_offset=CENTRAL_FLAGS,
        fmt="<H",
        value=0x1,
    )

    items = list(uploads.hash_files([("locked.zip", archive)]))

    assert items == [
        HashedItem(
            "locked.zip/secret.jpg",
            error_code="corrupt",
            error="file is encrypted; ZIP passwords are not supported",
        )
    ]


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04 this is not really a zip", zip_of([("a.jpg", jpeg_bytes(1))])[:-30]],
    ids=["garbage", "central-directory-cut"],
)
def test_damaged_zip_is_one_corrupt_outcome(data: bytes) -> None:
    items = list(uploads.hash_files([("photos.zip", data), ("after.jpg", jpeg_bytes(2))]))

    assert items == [
        HashedItem(
            "photos.zip",
            error_code="corrupt",
            error="damaged ZIP archive: File is not a zip file",
        ),
        ok("after.jpg", jpeg_bytes(2)),
    ]


def test_zip_named_zip_that_is_a_jpeg_is_a_damaged_zip() -> None:
    items = list(uploads.hash_files([("photos.zip", jpeg_bytes(1))]))

    assert items == [
        HashedItem(
            "photos.zip",
            error_code="corrupt",
            error="damaged ZIP archive: File is not a zip file",
        )
    ]


def test_zip_without_photos_is_reported_not_dropped() -> None:
    archive = zip_of([("__MACOSX/._a.jpg", b"junk"), ("folder/", b"")])

    items = list(uploads.hash_files([("empty.zip", archive)]))

    assert items == [
        HashedItem("empty.zip", error_code="not_an_image", error="ZIP archive holds no files")
    ]


def test_zip_with_too_many_members_is_refused_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_ZIP_MEMBERS", 2)
    archive = zip_of([(f"{n}.jpg", jpeg_bytes(n)) for n in range(3)])

    items = list(uploads.hash_files([("many.zip", archive)]))

    assert items == [
        HashedItem("many.zip", error_code="too_large", error="ZIP holds 3 files; the limit is 2")
    ]


def test_zip_expanding_beyond_the_total_limit_reports_every_remaining_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photos = [jpeg_bytes(n) for n in range(3)]
    monkeypatch.setattr(uploads, "MAX_ZIP_TOTAL_BYTES", len(photos[0]) + 10)
    archive = zip_of([(f"{n}.jpg", photo) for n, photo in enumerate(photos)])

    items = list(uploads.hash_files([("big.zip", archive)]))

    limit = len(photos[0]) + 10
    assert items == [
        ok("big.zip/0.jpg", photos[0]),
        HashedItem(
            "big.zip/1.jpg",
            error_code="too_large",
            error=f"ZIP expands beyond {limit} bytes; split it",
        ),
        HashedItem(
            "big.zip/2.jpg",
            error_code="too_large",
            error=f"ZIP expands beyond {limit} bytes; split it",
        ),
    ]


# hashes_jsonl_parse


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_jsonl_good_lines_become_hash_lines() -> None:
    data = b"\n".join(
        [
            line(
                path="2024/summer/IMG_1.jpg",
                sha256=SHA,
                pdq=PDQ,
                phash=PHASH,
                pdq_quality=100,
                width=640,
                height=480,
            ),
            line(sha256=SHA.upper(), filename="C:\\Users\\me\\IMG_2.jpg"),
            line(sha256=SHA, pdq="", phash=None),
        ]
    )

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert results == [
        (
            1,
            HashLine(SHA, PDQ, PHASH, pdq_quality=100, width=640, height=480, filename="IMG_1.jpg"),
        ),
        (2, HashLine(SHA, filename="IMG_2.jpg")),
        (3, HashLine(SHA)),
    ]


def test_jsonl_bad_lines_are_reported_with_their_line_numbers() -> None:
    data = b"\n".join(
        [
            line(sha256=SHA),
            b"{not json",
            line(sha256="xyz" + SHA[3:]),
            line(sha256=SHA[:-1]),
            line(sha256=SHA, pdq=PDQ + "00"),
            line(sha256=SHA, phash=PHASH[:8]),
            line(pdq=PDQ, phash=PHASH),
            b'["a list"]',
            line(sha256=SHA, pdq_quality=101),
            line(sha256=SHA, width=True),
            line(sha256=SHA, filename=7),
            line(sha256=123),
        ]
    )

    results = list(uploads.hashes_jsonl_parse(data, max_lines=100))

    assert results == [
        (1, HashLine(SHA)),
        (2, "not valid JSON: Expecting property name enclosed in double quotes"),
        (3, "sha256 must be 64 hexadecimal digits"),
        (4, "sha256 must be 64 hexadecimal digits"),
        (5, "pdq must be 64 hexadecimal digits"),
        (6, "phash must be 16 hexadecimal digits"),
        (7, "sha256 is required"),
        (8, "expected a JSON object"),
        (9, "pdq_quality must be a whole number from 0 to 100"),
        (10, "width must be a whole number from 0 to 1000000"),
        (11, "filename must be a string"),
        (12, "sha256 must be 64 hexadecimal digits"),
    ]


def test_jsonl_blank_lines_crlf_and_bom_keep_editor_line_numbers() -> None:
    data = "\ufeff".encode() + b"\r\n".join(
        [line(sha256=SHA), b"", b"   ", line(sha256="d" * 64), b""]
    )

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert results == [(1, HashLine(SHA)), (4, HashLine("d" * 64))]


def test_jsonl_line_separator_inside_a_string_does_not_split_the_line() -> None:
    data = line(sha256=SHA, filename="a\u2028b.jpg").replace(b"\\u2028", "\u2028".encode()) + (
        b"\n" + line(sha256="d" * 64)
    )

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert results == [(1, HashLine(SHA, filename="a\u2028b.jpg")), (2, HashLine("d" * 64))]


def test_jsonl_stops_after_max_lines_naming_the_first_line_over() -> None:
    data = b"\n".join([line(sha256=SHA), b"", line(sha256=SHA), line(sha256=SHA), line(sha256=SHA)])

    results = list(uploads.hashes_jsonl_parse(data, max_lines=2))

    assert results == [
        (1, HashLine(SHA)),
        (3, HashLine(SHA)),
        (4, "too many lines; the limit is 2, split the file"),
    ]


def test_jsonl_that_is_not_utf8_is_refused_as_a_whole() -> None:
    results = list(uploads.hashes_jsonl_parse(b"\xff\xfe{\x00", max_lines=10))

    assert results == [(0, "file is not UTF-8 text")]


def test_jsonl_nested_too_deeply_is_a_bad_line_not_a_crash() -> None:
    data = b"[" * 100_000 + b"\n" + line(sha256=SHA)

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert results == [(1, "not valid JSON: nested too deeply"), (2, HashLine(SHA))]


def test_jsonl_file_names_are_made_storable() -> None:
    # A lone surrogate is how json.dumps writes a file name that was not UTF-8;
    # PostgreSQL text holds neither it nor NUL.
    data = b"\n".join(
        [
            line(sha256=SHA, path="dir/caf\udce9.jpg"),
            line(sha256=SHA, filename="a\x00b\x1f.jpg"),
            line(sha256=SHA, filename="x" * 300),
        ]
    )

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert results == [
        (1, HashLine(SHA, filename="caf?.jpg")),
        (2, HashLine(SHA, filename="a?b?.jpg")),
        (3, HashLine(SHA, filename="x" * 255)),
    ]


def test_hash_line_validate_accepts_the_api_item_shape() -> None:
    item = {"sha256": SHA, "pdq": PDQ, "phash": PHASH, "filename": "IMG_1.jpg"}

    validated = uploads.hash_line_validate(item)

    assert validated == HashLine(SHA, PDQ, PHASH, filename="IMG_1.jpg")
