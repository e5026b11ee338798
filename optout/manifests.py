"""Streaming readers for batch manifests. Pure: no Django.

Formats: JSONL, CSV, Parquet (img2dataset's output as is: ``key`` serves as the
record id), and webdataset ``.tar`` shards (samples grouped by key; their image
members are hashed by the worker, the shard itself deleted afterwards).

Each reader yields ``(row, raw)`` where ``raw`` is a dict with the record's
fields, or a string saying why that row is malformed. Row numbers are 1-based:
the line number for JSONL and CSV (the CSV header is line 1), the row index for
Parquet, the sample index for webdataset shards.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterator
from typing import IO, Any

FORMATS = ("jsonl", "csv", "parquet", "webdataset")
RECORD_FIELDS = ("id", "sha256", "pdq", "phash", "url")
# webdataset image members the worker hashes (extension after the sample key).
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif"})
# A CSV field may be as long as a URL can be; csv's default (128 KiB) stays.
_PARQUET_BATCH_ROWS = 10_000

Row = tuple[int, dict[str, Any] | str]


class ManifestInvalid(ValueError):
    """The manifest as a whole cannot be read. ``code``: unsupported_format | empty | malformed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def detect_format(name: str, head: bytes) -> str:
    """The manifest format from its leading bytes, falling back on its name."""
    lowered = name.lower()
    if not head.strip():
        raise ManifestInvalid("empty", "the manifest is empty")
    if head.startswith(b"PAR1"):
        return "parquet"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "webdataset"
    if lowered.endswith((".parquet", ".tar")):
        raise ManifestInvalid("malformed", f"{name} does not look like the file its name says")
    try:
        text = head.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        # The head may end in the middle of a multi-byte character.
        try:
            text = head[:-4].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ManifestInvalid(
                "unsupported_format",
                "unknown manifest format; send JSONL, CSV, Parquet or a webdataset .tar",
            ) from None
    if lowered.endswith((".jsonl", ".ndjson", ".json")) or text.lstrip().startswith("{"):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")) or "," in text.split("\n", 1)[0]:
        return "csv"
    raise ManifestInvalid(
        "unsupported_format",
        "unknown manifest format; send JSONL, CSV, Parquet or a webdataset .tar",
    )


def _pick(raw: dict[str, Any]) -> dict[str, Any]:
    record = {key: raw[key] for key in RECORD_FIELDS if raw.get(key) not in (None, "")}
    if "id" not in record and raw.get("key") not in (None, ""):
        record["id"] = raw["key"]  # img2dataset and webdataset name it "key"
    return record


def read_jsonl(stream: IO[bytes]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            yield number, f"not valid JSON: {getattr(error, 'msg', error)}"
            continue
        if not isinstance(raw, dict):
            yield number, "each line must be a JSON object"
            continue
        yield number, _pick(raw)


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(text)
        fields = reader.fieldnames or []
    except (csv.Error, UnicodeDecodeError) as error:
        raise ManifestInvalid("malformed", f"cannot read the CSV header: {error}") from None
    known = set(RECORD_FIELDS) | {"key"}
    if not known & {name.strip().lower() for name in fields}:
        raise ManifestInvalid(
            "malformed", f"the CSV header names none of {', '.join(RECORD_FIELDS)} (or key)"
        )
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as error:
            yield reader.line_num, f"malformed CSV: {error}"
            continue
        if None in raw:
            yield reader.line_num, "row has more fields than the header"
            continue
        yield reader.line_num, _pick({k.strip().lower(): v for k, v in raw.items() if k})


def read_parquet(stream: IO[bytes]) -> Iterator[Row]:
    import pyarrow.parquet as pq  # heavy import, only where Parquet is read

    try:
        parquet = pq.ParquetFile(stream)
    except Exception as error:  # pyarrow raises several unrelated types
        raise ManifestInvalid("malformed", f"cannot read Parquet: {error}") from None
    columns = [
        name for name in parquet.schema_arrow.names if name in RECORD_FIELDS or name == "key"
    ]
    if not columns:
        raise ManifestInvalid(
            "malformed",
            f"the Parquet file has none of the columns {', '.join(RECORD_FIELDS)} (or key)",
        )
    row = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for raw in batch.to_pylist():
            row += 1
            yield row, _pick(raw)


def _sample_key(member_name: str) -> tuple[str, str]:
    directory, _, base = member_name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def read_webdataset(stream: IO[bytes]) -> Iterator[Row]:
    """Samples of a webdataset shard: id from the key (or the json's "key"), url
    from the json, and ``image`` bytes to be hashed by the caller."""
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 (closed below)
    except tarfile.TarError as error:
        raise ManifestInvalid("malformed", f"cannot read the tar shard: {error}") from None
    current_key: str | None = None
    sample: dict[str, Any] = {}
    row = 0

    def finish() -> Row:
        record: dict[str, Any] = {"id": current_key}
        meta = sample.get("json")
        if isinstance(meta, dict):
            record.update({k: meta[k] for k in ("url", "sha256") if meta.get(k) not in (None, "")})
            if meta.get("key") not in (None, ""):
                record["id"] = str(meta["key"])
        if "url" in sample and "url" not in record:
            record["url"] = sample["url"]
        if "image" in sample:
            record["image"] = sample["image"]
        return row, record

    try:
        for member in archive:
            if not member.isfile():
                continue
            key, extension = _sample_key(member.name)
            if key != current_key:
                if current_key is not None:
                    yield finish()
                current_key, sample, row = key, {}, row + 1
            handle = archive.extractfile(member)
            if handle is None:
                continue
            if extension in IMAGE_EXTENSIONS and "image" not in sample:
                sample["image"] = handle.read()
            elif extension == "json":
                try:
                    sample["json"] = json.loads(handle.read())
                except json.JSONDecodeError:
                    sample["json"] = None
            elif extension == "url":
                sample["url"] = handle.read().decode("utf-8", "replace").strip()
    except tarfile.TarError as error:
        if current_key is not None:
            yield finish()
        yield row + 1, f"the tar shard is damaged after this point: {error}"
        return
    finally:
        archive.close()
    if current_key is not None:
        yield finish()


READERS = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
    "webdataset": read_webdataset,
}


def read_manifest(name: str, stream: IO[bytes]) -> tuple[str, Iterator[Row]]:
    """Detect the format of a seekable stream and return (format, rows)."""
    head = stream.read(4096)
    stream.seek(0)
    manifest_format = detect_format(name, head)
    return manifest_format, READERS[manifest_format](stream)
