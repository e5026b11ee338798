"""A manifest minus the records the registry excluded, in the manifest's own
format. Pure: no Django.

Rows are numbered exactly as ``optout.manifests`` numbers them, which is how the
registry's exclusions name them: the line number for JSONL and CSV (the CSV
header is line 1, so the first record is row 2; a quoted field spanning lines
makes a record's row its last line, and records are read by the same lenient csv
reader: a stray quote's record, invalid there, is copied here as it is), the
1-based row index for Parquet, the 1-based sample index for a webdataset .tar
(whose record id is the sample key). Each dropped row's id is compared with the
id the exclusion names, so a numbering mismatch stops the run instead of
dropping the wrong records. Everything else (malformed rows, blank lines,
columns the registry ignores, the damaged end of a .tar) is copied unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from optout import manifests
from optout.matching.records import record_parse

FILTERABLE_FORMATS = ("jsonl", "csv", "parquet", "webdataset")
# Extensions that name a format: --filtered must not name another one.
EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".tar": "webdataset",
}
_UTF8_BOM = b"\xef\xbb\xbf"


class FilterError(ValueError):
    """The exclusions do not fit the manifest; nothing was written."""


@dataclass(frozen=True)
class FilterResult:
    kept: int
    dropped: int


def manifest_format(path: Path) -> str:
    """The manifest's format, detected as the registry detects it."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    return manifests.detect_format(path.name, head)


def manifest_filter(source: Path, target: Path, excluded: Mapping[int, str]) -> FilterResult:
    """Write ``source`` without the rows in ``excluded`` (row -> record id) to
    ``target``, atomically: on FilterError no file is left behind."""
    writer = _WRITERS[manifest_format(source)]
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        kept, seen = writer(source, temporary, excluded)
        missing = sorted(set(excluded) - seen)
        if missing:
            raise FilterError(
                f"the registry excluded row {missing[0]}, which this manifest does not have "
                f"({len(missing)} such rows); is it the manifest that was checked?"
            )
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return FilterResult(kept=kept, dropped=len(excluded))


def _record_id(raw: Mapping[str, Any]) -> str:
    """The id the registry gives this row's record (the same parsing, so the same
    string: stripped, ``key`` when there is no ``id``, bytes as hex)."""
    return record_parse(manifests._pick(dict(raw))).id or ""


def _check_id(row: int, found: str, excluded: Mapping[int, str]) -> None:
    expected = excluded[row]
    if found != expected:
        raise FilterError(
            f"row {row} of the manifest has id {found!r}, but the registry excluded row {row} "
            f"as id {expected!r}; the filtered manifest was not written"
        )


# --- JSONL ---------------------------------------------------------------------


def _filter_jsonl(source: Path, target: Path, excluded: Mapping[int, str]) -> tuple[int, set[int]]:
    kept = 0
    seen: set[int] = set()
    with source.open("rb") as reader, target.open("wb") as writer:
        for number, line in enumerate(reader, start=1):
            if number not in excluded:
                writer.write(line)
                kept += bool(line.strip())
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                raw = None
            _check_id(number, _record_id(raw) if isinstance(raw, dict) else "", excluded)
            seen.add(number)
    return kept, seen


# --- CSV -----------------------------------------------------------------------


def _filter_csv(source: Path, target: Path, excluded: Mapping[int, str]) -> tuple[int, set[int]]:
    with source.open("rb") as probe:
        encoding = "utf-8-sig" if probe.read(3) == _UTF8_BOM else "utf-8"
    kept = 0
    seen: set[int] = set()
    # surrogateescape: bytes that are not UTF-8 are copied back unchanged.
    text = {"encoding": encoding, "errors": "surrogateescape", "newline": ""}
    with source.open("r", **text) as reader, target.open("w", **text) as writer:  # type: ignore[call-overload]
        header_line = reader.readline()
        writer.write(header_line)
        buffered: list[str] = []
        # Lenient about quotes, as manifests.read_csv reads records: they end
        # where they end there (one breaking the quoting rules is invalid: kept).
        rows = csv.reader(
            _buffering(_prepend(header_line, reader), buffered),
            delimiter=manifests._csv_delimiter(header_line),
        )
        header: list[str] | None = None
        while True:
            try:
                values = next(rows)
            except StopIteration:
                break
            except csv.Error:
                values = None  # the registry reports this row as invalid: kept
            number = rows.line_num
            if header is None:
                header = [name.strip().lower() for name in values or []]
                buffered.clear()  # the header line, already written
                continue
            if values and number in excluded:
                _check_id(number, _record_id(dict(zip(header, values, strict=False))), excluded)
                seen.add(number)
            else:
                kept += bool(values)
                writer.writelines(buffered)
            buffered.clear()
        writer.writelines(buffered)
    return kept, seen


def _prepend(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def _buffering(lines: Iterable[str], buffered: list[str]) -> Iterator[str]:
    """The lines of ``lines``, each also kept in ``buffered`` until the caller
    has decided whether the record they belong to is copied."""
    for line in lines:
        buffered.append(line)
        yield line


# --- Parquet -------------------------------------------------------------------


def _filter_parquet(
    source: Path, target: Path, excluded: Mapping[int, str]
) -> tuple[int, set[int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    id_columns = [name for name in parquet.schema_arrow.names if name in ("id", "key")]
    kept = 0
    seen: set[int] = set()
    first_row = 1
    with pq.ParquetWriter(target, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches(batch_size=10_000):
            rows = range(first_row, first_row + batch.num_rows)
            dropped = [row for row in rows if row in excluded]
            ids = batch.select(id_columns)
            for row in dropped:
                _check_id(row, _record_id(ids.slice(row - first_row, 1).to_pylist()[0]), excluded)
            seen.update(dropped)
            mask = pa.array([row not in excluded for row in rows], type=pa.bool_())
            remaining = batch.filter(mask)
            kept += remaining.num_rows
            writer.write_batch(remaining)
            first_row += batch.num_rows
    return kept, seen


# --- webdataset .tar -------------------------------------------------------------


def _filter_tar(source: Path, target: Path, excluded: Mapping[int, str]) -> tuple[int, set[int]]:
    """Samples are copied member by member (folders and links as they come). A
    damaged shard is read as the registry reads it (``manifests._Shard``): the
    sample being read when the damage showed is an invalid row there, so it is
    kept here as far as it could be read, and the filtered shard ends as the
    source does, damaged: without its end-of-archive marker, and with the member
    that was cut short, if one was, cut where it was. A tar reader then finds
    the damage where it was, instead of a sample that silently lost a member or
    part of one."""
    kept = 0
    seen: set[int] = set()
    with (
        source.open("rb") as stream,
        manifests.shard_open(stream) as shard,
        target.open("wb") as output,
    ):
        # Closed (its end-of-archive marker written) only if the source ends properly.
        writer = tarfile.TarFile(fileobj=output, mode="w")
        members = _ShardMembers(shard)
        sample: list[tuple[tarfile.TarInfo, bytes]] = []
        key: str | None = None
        row = 0

        def flush() -> None:
            nonlocal kept
            if key is None:
                return
            if row in excluded:
                _check_id(row, _record_id({"id": key}), excluded)
                seen.add(row)
                return
            kept += 1
            for member, data in sample:
                writer.addfile(member, io.BytesIO(data))

        for member, data in members:
            if data is None:
                # Folders and links are no part of a sample (the registry skips
                # them too): copied as they come.
                writer.addfile(member)
                continue
            member_key, _ = manifests._sample_key(member.name)
            if member_key != key:
                flush()
                sample, key, row = [], member_key, row + 1
            sample.append((member, data))
        if not members.damaged:
            flush()
            writer.close()
        elif key is not None:
            kept += 1  # the registry's invalid row
            for member, data in sample:
                if len(data) == member.size:
                    writer.addfile(member, io.BytesIO(data))
                else:  # its header, and the data as far as it goes
                    output.write(member.tobuf(writer.format, writer.encoding, writer.errors))
                    output.write(data)
    return kept, seen


class _ShardMembers:
    """The members of a shard with their data (None for folders and links), as
    far as they can be read; then ``damaged``: whether the shard does not end
    properly, as ``manifests.read_webdataset`` tells (damage, or a shard cut
    short anywhere, at a member header too). A member cut short comes with the
    part of its data the shard holds, shorter than its size."""

    def __init__(self, shard: manifests._Shard) -> None:
        self.shard = shard
        self.damaged = False

    def __iter__(self) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        # Only the shard's reads are in the try: the caller's writes are not.
        try:
            for member in self.shard:
                yield member, (_member_data(self.shard, member) if member.isfile() else None)
            self.damaged = self.shard.damage_at_end() is not None
        except manifests._TAR_ERRORS:
            self.damaged = True


def _member_data(shard: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A file member's data, or what the shard holds of it when it is cut short
    there: read from the shard's stream, where tarfile's own file object would
    raise and give none of it (tarfile finds the damage when it moves on to the
    next member). A sparse member is stored in pieces only tarfile puts together."""
    if member.sparse is not None:
        handle = shard.extractfile(member)
        return handle.read() if handle is not None else b""
    stream = shard.fileobj
    assert stream is not None  # an open shard has its stream
    stream.seek(member.offset_data)
    return stream.read(member.size)


_WRITERS = {
    "jsonl": _filter_jsonl,
    "csv": _filter_csv,
    "parquet": _filter_parquet,
    "webdataset": _filter_tar,
}
