"""Turning what a creator uploads into hashes, file by file. Pure: no Django.

Photo files and ZIP archives are read in memory, hashed (with the derived
variants of ``registry.variants``) and dropped; a bad file
becomes its own outcome and never stops the others. A hashes JSONL (from
``optout hash``) is parsed line by line, each bad line reported with its number.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from config.messages import listing, unknown_field_message
from registry import hashing, keypoints, variants
from registry.colour import COLOUR_HEX_LENGTH
from registry.variants import Variant

# A ZIP may hold at most this many photos; a folder export of a phone's camera
# roll fits, a zip of a whole archive should go through `optout hash` instead.
MAX_ZIP_MEMBERS = 2_000
# Uncompressed bytes one ZIP may expand to: bounds memory against zip bombs.
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Files an operating system adds to folders and archives on its own; never photos.
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class HashedItem:
    """One photo candidate: either its hashes (and its derived variants) or the
    reason it was rejected."""

    filename: str
    hashes: hashing.PhotoHashes | None = None
    error_code: str = ""
    error: str = ""
    # Derived variants (registry.variants.DERIVED_VARIANTS) of a hashed photo.
    variants: tuple[Variant, ...] = ()


def is_zip(name: str, data: bytes) -> bool:
    """A ZIP by its name or its signature (an empty ZIP starts with PK 05 06)."""
    return data[:4] in _ZIP_SIGNATURES or name.lower().endswith(".zip")


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return "__MACOSX" in parts or parts[-1].startswith(".") or parts[-1].lower() in _JUNK_NAMES


def _zip_members(
    name: str, data: bytes, max_bytes: int
) -> Iterator[tuple[str, bytes | HashedItem]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [
            info for info in archive.infolist() if not info.is_dir() and not _is_junk(info.filename)
        ]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        yield name, HashedItem(name, error_code="corrupt", error=f"damaged ZIP archive: {error}")
        return
    if not members:
        yield name, HashedItem(name, error_code="not_an_image", error="ZIP archive holds no files")
        return
    if len(members) > MAX_ZIP_MEMBERS:
        yield (
            name,
            HashedItem(
                name,
                error_code="too_large",
                error=f"ZIP holds {len(members)} files; the limit is {MAX_ZIP_MEMBERS}",
            ),
        )
        return
    total = 0
    for info in members:
        label = f"{name}/{info.filename}"
        if info.file_size > max_bytes:
            yield (
                label,
                HashedItem(
                    label,
                    error_code="too_large",
                    error=f"file is {info.file_size} bytes; the limit is {max_bytes} bytes",
                ),
            )
            continue
        total += info.file_size
        if total > MAX_ZIP_TOTAL_BYTES:
            # Every remaining member gets its own outcome: none vanishes silently.
            yield (
                label,
                HashedItem(
                    label,
                    error_code="too_large",
                    error=f"ZIP expands beyond {MAX_ZIP_TOTAL_BYTES} bytes; split it",
                ),
            )
            continue
        yield label, _zip_member_read(archive, info, label, max_bytes)


def _zip_member_read(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, max_bytes: int
) -> bytes | HashedItem:
    if info.flag_bits & 0x1:
        return HashedItem(
            label, error_code="corrupt", error="file is encrypted; ZIP passwords are not supported"
        )
    try:
        with archive.open(info) as member:
            # zipfile stops at the declared size and then checks the CRC, so a
            # header that understates the size (a zip bomb) inflates no further;
            # one byte past the cap is read to catch any size the check missed.
            content = member.read(max_bytes + 1)
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        # An unsupported compression method (deflate64, …).
        NotImplementedError,
    ) as error:
        return HashedItem(label, error_code="corrupt", error=f"cannot extract: {error}")
    if len(content) > max_bytes:
        return HashedItem(
            label, error_code="too_large", error=f"file is larger than {max_bytes} bytes"
        )
    return content


def hash_files(
    files: Iterable[tuple[str, bytes]], *, max_bytes: int = hashing.MAX_BYTES
) -> Iterator[HashedItem]:
    """Hash every photo in ``files`` (name, bytes), expanding ZIP archives: its
    hashes and derived variants, from one decode."""
    for name, data in files:
        sources: Iterable[tuple[str, bytes | HashedItem]]
        sources = _zip_members(name, data, max_bytes) if is_zip(name, data) else [(name, data)]
        for label, content in sources:
            if isinstance(content, HashedItem):
                yield content
                continue
            try:
                hashes, derived = variants.hash_bytes_with_variants(content, max_bytes=max_bytes)
                yield HashedItem(label, hashes=hashes, variants=tuple(derived))
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
    # Derived variants (registry.variants.DERIVED_VARIANTS), without keypoints;
    # empty: none known.
    variants: tuple[Variant, ...] = ()
    # The photo's colour signature (registry.colour, 66 hex digits); "": unknown.
    colour: str = ""
    # What Photo.keypoints stores (variants.photo_keypoints): the keypoints of
    # the photo and of its mirror image, the photo's own only, or b"": unknown.
    keypoints: bytes = field(default=b"", repr=False)


class HashLineInvalid(ValueError):
    pass


def _optional_int(item: dict[str, Any], key: str, upper: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise HashLineInvalid(f"{key} must be a whole number from 0 to {upper}")
    return value


# The keys of a hashes object and of each of its variants, as `optout hash`
# writes them (``path``: the photo's path, read as ``filename``; ``band``: the
# middle band's hashes, written for lookups; ``keypoints``: the photo's own,
# the mirror variant's next to its hashes). Any other key is refused.
HASH_LINE_KEYS = (
    "sha256",
    "pdq",
    "phash",
    "filename",
    "path",
    "pdq_quality",
    "width",
    "height",
    "colour",
    "band",
    "keypoints",
    "variants",
)
VARIANT_KEYS = ("name", "pdq", "pdq_quality", "phash", "colour", "keypoints")


def _unknown_keys(item: dict[Any, Any]) -> str | None:
    """Why a hashes object cannot be registered as sent, if it or one of its
    variants holds a key that is not a field: a misspelt ``pdq_qualty`` would
    otherwise be dropped and the photo registered without it."""
    problems = [
        unknown_field_message(str(key), HASH_LINE_KEYS) for key in item if key not in HASH_LINE_KEYS
    ]
    derived = item.get("variants")
    for position, variant in enumerate(derived if isinstance(derived, list) else []):
        if isinstance(variant, dict):
            problems.extend(
                f"variants[{position}]: {unknown_field_message(str(key), VARIANT_KEYS)}"
                for key in variant
                if key not in VARIANT_KEYS
            )
    return listing(problems, separator=" ") if problems else None


def hash_line_validate(item: Any) -> HashLine:
    """Validate one hashes object (JSON API item or JSONL line)."""
    if not isinstance(item, dict):
        raise HashLineInvalid("expected a JSON object")
    unknown = _unknown_keys(item)
    if unknown is not None:
        raise HashLineInvalid(unknown)
    fields = {
        "sha256": hashing.SHA256_HEX_LENGTH,
        "pdq": hashing.PDQ_HEX_LENGTH,
        "phash": hashing.PHASH_HEX_LENGTH,
        "colour": COLOUR_HEX_LENGTH,
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
    filename = item.get("filename", item.get("path")) or ""
    if not isinstance(filename, str):
        raise HashLineInvalid("filename must be a string")
    try:
        derived = variants.variants_parse(item.get("variants"))
    except ValueError as error:
        raise HashLineInvalid(str(error)) from None
    own = item.get("keypoints")
    if own is not None and not isinstance(own, str):
        raise HashLineInvalid(keypoints.NOT_TEXT)
    try:
        stored_keypoints = variants.photo_keypoints((own or "").strip(), derived)
    except ValueError as error:
        raise HashLineInvalid(str(error)) from None
    return HashLine(
        sha256=values["sha256"],
        pdq=values["pdq"],
        phash=values["phash"],
        pdq_quality=_optional_int(item, "pdq_quality", 100),
        width=_optional_int(item, "width", 1_000_000),
        height=_optional_int(item, "height", 1_000_000),
        filename=_base_name(filename),
        # The mirror variant's keypoints are in ``keypoints`` now.
        variants=variants.keypoints_dropped(derived),
        colour=values["colour"],
        keypoints=stored_keypoints,
    )


def _base_name(path: str) -> str:
    """The file's own name, storable as PostgreSQL text.

    Only the base name: a local folder structure is nobody's business. Control
    characters (PostgreSQL text cannot hold NUL) and lone surrogates (a JSON
    escape of a file name that was not UTF-8) are replaced.
    """
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in name)
    return name.encode("utf-8", "replace").decode("utf-8")[:255]


def hashes_jsonl_parse(data: bytes, *, max_lines: int) -> Iterator[tuple[int, HashLine | str]]:
    """Yield (line number, HashLine or the reason the line is bad). Blank lines are skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield 0, "file is not UTF-8 text"
        return
    count = 0
    # Split on "\n" only: str.splitlines() also breaks at form feeds and U+2028,
    # which JSON allows inside strings, and the line numbers would drift from
    # what an editor shows.
    for number, line in enumerate(text.split("\n"), start=1):
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
        except RecursionError:
            yield number, "not valid JSON: nested too deeply"
            continue
        except ValueError:
            # The one other thing json.loads raises on a str: an integer longer
            # than Python converts (sys.get_int_max_str_digits(), 4300 digits).
            limit = sys.get_int_max_str_digits()
            yield number, f"not valid JSON: a number has more than {limit} digits"
            continue
        try:
            yield number, hash_line_validate(item)
        except HashLineInvalid as error:
            yield number, str(error)
