"""Turning what a creator uploads into hashes, file by file. Pure: no Django.

Photo files and ZIP archives are read in memory, hashed and dropped; a bad file
becomes its own outcome and never stops the others. A hashes JSONL (from
``optout hash``) is parsed line by line, each bad line reported with its number.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from registry import hashing

# A ZIP may hold at most this many photos; a folder export of a phone's camera
# roll fits, a zip of a whole archive should go through `optout hash` instead.
MAX_ZIP_MEMBERS = 2_000
# Uncompressed bytes one ZIP may expand to: bounds memory against zip bombs.
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024
_ZIP_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class HashedItem:
    """One photo candidate: either its hashes or the reason it was rejected."""

    filename: str
    hashes: hashing.PhotoHashes | None = None
    error_code: str = ""
    error: str = ""


def is_zip(name: str, data: bytes) -> bool:
    return data.startswith(_ZIP_SIGNATURE) and name.lower().endswith(".zip")


def _zip_members(name: str, data: bytes, max_bytes: int) -> Iterator[tuple[str, bytes | HashedItem]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and not info.filename.rsplit("/", 1)[-1].startswith(".")
        ]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        yield name, HashedItem(name, error_code="corrupt", error=f"damaged ZIP archive: {error}")
        return
    if len(members) > MAX_ZIP_MEMBERS:
        yield name, HashedItem(
            name,
            error_code="too_large",
            error=f"ZIP holds {len(members)} files; the limit is {MAX_ZIP_MEMBERS}",
        )
        return
    total = 0
    for info in members:
        label = f"{name}/{info.filename}"
        if info.file_size > max_bytes:
            yield label, HashedItem(
                label,
                error_code="too_large",
                error=f"file is {info.file_size} bytes; the limit is {max_bytes} bytes",
            )
            continue
        total += info.file_size
        if total > MAX_ZIP_TOTAL_BYTES:
            yield label, HashedItem(
                label, error_code="too_large", error="ZIP expands beyond the size limit"
            )
            return
        try:
            with archive.open(info) as member:
                # Read one byte past the cap: a header that understates the size
                # (a zip bomb) is caught without inflating the rest.
                content = member.read(max_bytes + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            yield label, HashedItem(label, error_code="corrupt", error=f"cannot extract: {error}")
            continue
        if len(content) > max_bytes:
            yield label, HashedItem(
                label, error_code="too_large", error=f"file is larger than {max_bytes} bytes"
            )
            continue
        yield label, content


def hash_files(
    files: Iterable[tuple[str, bytes]], *, max_bytes: int = hashing.MAX_BYTES
) -> Iterator[HashedItem]:
    """Hash every photo in ``files`` (name, bytes), expanding ZIP archives."""
    for name, data in files:
        sources: Iterable[tuple[str, bytes | HashedItem]]
        sources = _zip_members(name, data, max_bytes) if is_zip(name, data) else [(name, data)]
        for label, content in sources:
            if isinstance(content, HashedItem):
                yield content
                continue
            try:
                yield HashedItem(label, hashes=hashing.hash_bytes(content, max_bytes=max_bytes))
            except hashing.ImageRejected as rejected:
                yield HashedItem(label, error_code=rejected.code, error=rejected.reason)


@dataclass(frozen=True)
class HashLine:
    """A validated line of locally computed hashes."""

    sha256: str
    pdq: str = ""
    phash: str = ""
    pdq_quality: int | None = None
    width: int | None = None
    height: int | None = None
    filename: str = ""


class HashLineInvalid(ValueError):
    pass


def _optional_int(item: dict[str, Any], key: str, upper: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise HashLineInvalid(f"{key} must be a whole number from 0 to {upper}")
    return value


def hash_line_validate(item: Any) -> HashLine:
    """Validate one hashes object (JSON API item or JSONL line)."""
    if not isinstance(item, dict):
        raise HashLineInvalid("expected a JSON object")
    fields = {
        "sha256": hashing.SHA256_HEX_LENGTH,
        "pdq": hashing.PDQ_HEX_LENGTH,
        "phash": hashing.PHASH_HEX_LENGTH,
    }
    values: dict[str, str] = {}
    for key, length in fields.items():
        raw = item.get(key)
        if raw is None or raw == "":
            if key == "sha256":
                raise HashLineInvalid("sha256 is required")
            values[key] = ""
            continue
        if not isinstance(raw, str) or not hashing.is_hex(raw.lower(), length):
            raise HashLineInvalid(f"{key} must be {length} hexadecimal digits")
        values[key] = raw.lower()
    filename = item.get("filename", item.get("path", ""))
    if not isinstance(filename, str):
        raise HashLineInvalid("filename must be a string")
    return HashLine(
        sha256=values["sha256"],
        pdq=values["pdq"],
        phash=values["phash"],
        pdq_quality=_optional_int(item, "pdq_quality", 100),
        width=_optional_int(item, "width", 1_000_000),
        height=_optional_int(item, "height", 1_000_000),
        # Only the base name: a local folder structure is nobody's business.
        filename=filename.replace("\\", "/").rsplit("/", 1)[-1][:255],
    )


def hashes_jsonl_parse(data: bytes, *, max_lines: int) -> Iterator[tuple[int, HashLine | str]]:
    """Yield (line number, HashLine or the reason the line is bad). Blank lines are skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield 0, "file is not UTF-8 text"
        return
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        count += 1
        if count > max_lines:
            yield number, f"too many lines; the limit is {max_lines}, split the file"
            return
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON: {error.msg}"
            continue
        try:
            yield number, hash_line_validate(item)
        except HashLineInvalid as error:
            yield number, str(error)
