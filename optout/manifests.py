"""Streaming readers for batch manifests. Pure: no Django.

Formats: JSONL, CSV (or TSV), Parquet (img2dataset's output as is: ``key`` serves
as the record id), and webdataset ``.tar`` shards (samples grouped by key; their
image members are hashed by the worker, the shard itself deleted afterwards).

Each reader yields ``(row, raw)`` where ``raw`` is a dict with the record's
fields, or a string saying why that row is malformed: one bad row never stops
the others. Row numbers are 1-based: the line number for JSONL and CSV (the CSV
header is line 1; a quoted field spanning lines gives its last line, and so does
a malformed record: the line the reader was on when it gave up; a record breaking
the quoting rules is one malformed record, and a stray quote opening a field that
is never closed makes the rest of the file one), the row index for Parquet, the
sample index for webdataset shards. A row number is never given twice: the batch
keeps one result per row. ManifestInvalid is raised only when the manifest as a
whole cannot be read, or when a column it names twice leaves in doubt which one
holds the record.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, Self

FORMATS = ("jsonl", "csv", "parquet", "webdataset")
RECORD_FIELDS = ("id", "sha256", "pdq", "phash", "url")
# Read when present, never required. ``keypoints`` is the largest value a
# record carries (base64, up to ~5.8 KB a set: registry.keypoints); no reader
# caps a field below that (Python's csv field limit, the tightest, is 128 KiB).
OPTIONAL_FIELDS = ("pdq_quality", "colour", "band", "keypoints")
# Every column or key a record is read from: named twice, it is refused (the
# last one winning would decide on a value nobody chose).
_READ_FIELDS = frozenset((*RECORD_FIELDS, *OPTIONAL_FIELDS, "key"))
# webdataset image members the worker hashes (extension after the sample key).
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif"})
# Parquet rows converted to Python objects at a time: bounds memory whatever the
# file's own row groups are.
_PARQUET_BATCH_ROWS = 10_000
# What json.loads raises on bad input: JSONDecodeError and UnicodeDecodeError are
# ValueErrors; deeply nested arrays ("[[[[…") exhaust the recursion limit.
_JSON_ERRORS = (ValueError, RecursionError)
# What a damaged tar stream raises, depending on where the damage is.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
# The header errors tarfile raises for a block of zeros (the end-of-archive
# marker: no damage), and for no or half a header block (a shard cut short).
# Not in typeshed.
_END_OF_ARCHIVE: type[tarfile.HeaderError] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_CUT_HEADER: tuple[type[tarfile.HeaderError], ...] = (
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)
# Undecodable bytes survive CSV decoding as lone surrogates (surrogateescape), so
# that one bad row is reported on its own instead of failing the whole block of
# text around it.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# The line breaks the CSV text is split into lines at (universal newlines).
_LINE_BREAK = re.compile("\r\n|\r|\n")
_UNKNOWN_FORMAT = "unknown manifest format; send JSONL, CSV, Parquet or a webdataset .tar"

Row = tuple[int, dict[str, Any] | str]


class ManifestInvalid(ValueError):
    """The manifest as a whole cannot be read. ``code``: unsupported_format | empty | malformed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _head_text(head: bytes) -> str | None:
    """The leading bytes as text, or None if they are not UTF-8. The head may end
    in the middle of a multi-byte character: the incremental decoder keeps that
    tail back instead of failing."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        return decoder.decode(head, final=False)
    except UnicodeDecodeError:
        return None


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
    # The name decides for text formats: a stray non-UTF-8 byte is then one bad row.
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    text = _head_text(head)
    if text is None:
        raise ManifestInvalid("unsupported_format", _UNKNOWN_FORMAT)
    if text.lstrip().startswith("{"):
        return "jsonl"
    first_line = text.split("\n", 1)[0]
    if "," in first_line or "\t" in first_line:
        return "csv"
    raise ManifestInvalid("unsupported_format", _UNKNOWN_FORMAT)


def _pick(raw: dict[str, Any]) -> dict[str, Any]:
    """The record fields of a row; other columns (caption, width, md5…) are ignored."""
    record = {
        key: raw[key]
        for key in (*RECORD_FIELDS, *OPTIONAL_FIELDS)
        if raw.get(key) not in (None, "")
    }
    if "id" not in record and raw.get("key") not in (None, ""):
        record["id"] = raw["key"]  # img2dataset and webdataset name it "key"
    return record


class _RepeatedKey(dict[str, Any]):
    """A JSON object that names ``key``, one of the record's fields, twice."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A decoded JSON object; json.loads would silently keep the last of two
    values for one key."""
    decoded = dict(pairs)
    if len(decoded) != len(pairs):
        repeated = _repeated(name for name, _ in pairs)
        if repeated is not None:
            return _RepeatedKey(pairs, repeated)
    return decoded


# Built once: json.loads(…, object_pairs_hook=…) would build a decoder per line.
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_json_object)


def _json_line(line: bytes) -> Any:
    """``json.loads(line)``, but an object naming a record field twice comes back
    as a _RepeatedKey. Bytes are decoded as json.loads decodes them (a UTF-8
    BOM is dropped)."""
    return _JSON_DECODER.decode(line.decode(json.detect_encoding(line), "surrogatepass"))


def read_jsonl(stream: IO[bytes]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            raw = _json_line(line)
        except _JSON_ERRORS as error:
            reason = getattr(error, "msg", None) or type(error).__name__
            if isinstance(error, RecursionError):
                reason = "nested too deeply"
            yield number, f"not valid JSON: {reason}"
            continue
        if not isinstance(raw, dict):
            yield number, "each line must be a JSON object"
            continue
        if isinstance(raw, _RepeatedKey):
            yield number, f"the object names {raw.key!r} more than once"
            continue
        yield number, _pick(raw)


def _repeated(names: Iterable[str]) -> str | None:
    """The first of the fields a record is read from that ``names`` holds twice."""
    seen: set[str] = set()
    for name in names:
        if name in _READ_FIELDS:
            if name in seen:
                return name
            seen.add(name)
    return None


def _csv_columns(header: str, delimiter: str) -> list[str]:
    return [name.strip().lower() for name in header.split(delimiter)]


def _csv_delimiter(header: str) -> str:
    """Tab for a tab-separated header: one without commas, or one that names
    more known columns split at its tabs than at its commas (a TSV column name
    may hold a comma: ``id<TAB>url<TAB>width, px``)."""
    if "\t" not in header:
        return ","
    if "," not in header:
        return "\t"
    by_tab, by_comma = (
        len(_READ_FIELDS.intersection(_csv_columns(header, delimiter))) for delimiter in ("\t", ",")
    )
    return "\t" if by_tab > by_comma else ","


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    """CSV with a header line naming the columns (comma, or tab for TSV).

    Records end where Python's csv reader, lenient about quotes, ends them (as
    ``optout.manifest_filter`` reads them too, to number rows alike); a record
    it could only read by bending the quoting rules is invalid: a quoted field
    never closed (the rest of the file read as one field, where a stray quote
    would hide every later row), or a closing quote followed by anything but the
    delimiter or the line end (``a,"b"c`` could be ``bc`` or ``"b"c``, and a
    stray quote closed by the next quoted field of a later line looks like
    that). The strict reader is not used as such: on such a quote it drops the
    rest of the line, and a quoted field opened there would then have its
    following lines read as records nobody wrote."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    header = text.readline()
    delimiter = _csv_delimiter(header)
    lines = _CsvLines(header, text)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        fields = next(reader, [])
    except csv.Error as error:
        raise ManifestInvalid("malformed", f"cannot read the CSV header: {error}") from None
    if lines.ended and fields:
        raise ManifestInvalid(
            "malformed", f"the CSV header: {_csv_unclosed(fields[-1], reader.line_num)}"
        )
    names = [name.strip().lower() for name in fields]
    known = set(RECORD_FIELDS) | {"key"}
    if not known.intersection(names):
        raise ManifestInvalid(
            "malformed", f"the CSV header names none of {', '.join(RECORD_FIELDS)} (or key)"
        )
    repeated = _repeated(names)
    if repeated is not None:
        raise ManifestInvalid(
            "malformed", f"the CSV header names the column {repeated!r} more than once"
        )
    while True:
        lines.record.clear()
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield reader.line_num, f"malformed CSV: {error}"
            continue
        if not values:
            continue  # a blank line
        row = reader.line_num
        if lines.ended:
            # The input ran out inside a quoted field (the lenient reader then
            # returns what it has): its last field is the rest of the file.
            yield row, _csv_unclosed(values[-1], row)
            continue
        flaw = _csv_quoting_flaw(lines.record, delimiter, row)
        if flaw is not None:
            yield row, flaw
            continue
        if len(values) > len(names):
            yield row, "row has more fields than the header"
            continue
        if any(_UNDECODABLE.search(value) for value in values):
            yield row, "row is not valid UTF-8"
            continue
        yield row, _pick(dict(zip(names, values, strict=False)))


class _CsvLines:
    """The lines of a CSV text for the csv reader, keeping those of the record
    being read in ``record`` (the caller empties it between records); ``ended``
    once the text is read to its end."""

    def __init__(self, header: str, rest: IO[str]) -> None:
        self._lines = _prepend(header, rest)
        self.record: list[str] = []
        self.ended = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> str:
        try:
            line = next(self._lines)
        except StopIteration:
            self.ended = True
            raise
        self.record.append(line)
        return line


def _csv_unclosed(field: str, last_line: int) -> str:
    """Why a record whose last ``field`` is a quoted field never closed is
    invalid, naming the line the quote opened on (the field holds every line
    break after it; ``last_line``, the file's last, holds its end)."""
    opened = last_line - len(_LINE_BREAK.findall(field))
    if field.endswith(("\n", "\r")):
        opened += 1  # the break that ends the last line
    return (
        f"a quoted field opened on line {opened} is never closed: "
        "the rest of the file was read as one field"
    )


def _csv_quoting_flaw(lines: list[str], delimiter: str, last_line: int) -> str | None:
    """Why the record on ``lines`` (its last one ``last_line``) breaks the
    quoting rules the lenient csv reader bent to read it, or None: read again,
    strictly (only a record holding a quote can break them)."""
    if not any('"' in line for line in lines):
        return None
    strict = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        for _ in strict:
            pass
    except csv.Error as error:
        first = last_line - len(lines) + 1
        if first == last_line:
            return f"malformed CSV: {error}"
        return (
            f"malformed CSV: {error} on line {first + strict.line_num - 1} "
            f"of the record on lines {first} to {last_line}"
        )
    return None


def _prepend(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def read_parquet(stream: IO[bytes]) -> Iterator[Row]:
    """Rows of a Parquet file, a record batch at a time and column by column: a
    text value holding NUL, or bytes that are not UTF-8, makes its row invalid
    (checked on whole columns, as nothing else about a Parquet value needs a
    look before the worker validates the record)."""
    import pyarrow.parquet as pq  # heavy import, only where Parquet is read

    try:
        parquet = pq.ParquetFile(stream)
    except Exception as error:  # pyarrow raises several unrelated types
        raise ManifestInvalid("malformed", f"cannot read Parquet: {error}") from None
    columns = [
        name
        for name in parquet.schema_arrow.names
        if name in RECORD_FIELDS or name in OPTIONAL_FIELDS or name == "key"
    ]
    if not columns:
        raise ManifestInvalid(
            "malformed",
            f"the Parquet file has none of the columns {', '.join(RECORD_FIELDS)} (or key)",
        )
    repeated = _repeated(columns)
    if repeated is not None:
        raise ManifestInvalid(
            "malformed", f"the Parquet file has more than one column named {repeated!r}"
        )
    row = 0
    batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as error:  # a damaged row group: nothing after it can be read
            raise ManifestInvalid(
                "malformed", f"cannot read Parquet after row {row}: {error}"
            ) from None
        names = batch.schema.names
        values: list[list[Any]] = []
        flaws: dict[str, dict[int, str]] = {}  # column -> row index in batch -> reason
        for name, column in zip(names, batch.columns, strict=True):
            column_values, column_flaws = _parquet_column(column)
            values.append(column_values)
            if column_flaws:
                flaws[name] = column_flaws
        for index, row_values in enumerate(zip(*values, strict=True)):
            row += 1
            full = dict(zip(names, row_values, strict=True))
            raw = _pick(full)
            if flaws:
                used = set(raw) - {"id"}
                used.add("key" if full.get("id") in (None, "") else "id")
                reasons = (flaws[name].get(index) for name in used if name in flaws)
                reason = next((r for r in reasons if r), None)
                if reason:
                    yield row, reason
                    continue
            yield row, raw


_NUL_REASON = "a value holds a NUL character or invalid Unicode"


def _parquet_column(column: Any) -> tuple[list[Any], dict[int, str]]:
    """A column's Python values and the rows whose value cannot be kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column.to_pylist(), {}
    flaws: dict[int, str] = {}
    as_bytes = column.cast(pa.binary())
    try:
        column.validate(full=True)  # UTF-8 included
    except pa.ArrowInvalid:
        texts = [
            None if value is None else value.decode("utf-8", "surrogateescape")
            for value in as_bytes.to_pylist()
        ]
        flaws = {
            i: "row is not valid UTF-8"
            for i, text in enumerate(texts)
            if text is not None and _UNDECODABLE.search(text)
        }
    else:
        texts = column.to_pylist()
    if pc.any(pc.match_substring(as_bytes, b"\x00")).as_py():
        for i, text in enumerate(texts):
            if text is not None and "\x00" in text:
                flaws.setdefault(i, _NUL_REASON)
    return texts, flaws


def _sample_key(member_name: str) -> tuple[str, str]:
    """webdataset's ``__key__``: the member path up to the first dot of its file
    name; the rest is the extension (``a/b/000001.seg.png`` → ``a/b/000001``)."""
    directory, _, base = member_name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _json_member(data: bytes) -> Any:
    try:
        return json.loads(data)
    except _JSON_ERRORS:
        return None


def _sample_record(key: str, sample: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": key}
    meta = sample.get("json")
    if isinstance(meta, dict):
        record.update({k: meta[k] for k in ("url", "sha256") if meta.get(k) not in (None, "")})
    if sample.get("url") and "url" not in record:
        record["url"] = sample["url"]
    if "image" in sample:
        record["image"] = sample["image"]
    return record


class _ShardHeader(tarfile.TarInfo):
    """A member header of a shard being read. Past the first member, tarfile
    takes any header it cannot read (none left, half of one, a bad checksum) for
    the end of the archive, without a word: the one that ended the shard is kept
    on the _Shard, to tell the end-of-archive marker from damage."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as error:
            if isinstance(archive, _Shard):
                archive.stop = error
            raise


class _Shard(tarfile.TarFile):
    """A tar shard read with _ShardHeader: ``stop``, the header error that ended it."""

    stop: tarfile.HeaderError | None = None

    def damage_at_end(self) -> str | None:
        """Once the members are read: why the shard did not end properly, or None
        if it ends with its end-of-archive marker (two blocks of zeros)."""
        stop = self.stop
        if isinstance(stop, _END_OF_ARCHIVE):
            # tarfile stops at the first block of zeros; the second must follow.
            return None if self.fileobj.read(tarfile.BLOCKSIZE) == _ZERO_BLOCK else _CUT_SHORT
        if stop is None or isinstance(stop, _CUT_HEADER):
            return _CUT_SHORT
        return f"the tar shard is damaged here: {stop}"


_CUT_SHORT = "the tar shard ends here without its end-of-archive marker: it may be cut short"
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


def shard_open(stream: IO[bytes]) -> _Shard:
    """A webdataset shard opened for reading in order (plain or compressed),
    with _ShardHeader telling its end-of-archive marker from damage; a stream
    that is no tar at all is ManifestInvalid."""
    try:
        return _Shard.open(fileobj=stream, mode="r|*", tarinfo=_ShardHeader)
    except _TAR_ERRORS as error:
        raise ManifestInvalid("malformed", f"cannot read the tar shard: {error}") from None


def read_webdataset(stream: IO[bytes]) -> Iterator[Row]:
    """Samples of a webdataset shard: id = the sample key, url from the ``.json``
    (or ``.url``) member, and ``image`` bytes (the first image member) for the
    caller to hash. A damaged shard ends with one row saying where: the sample
    being read then, which may have lost members (a shard cut short between two
    members, so without its end-of-archive marker, included)."""
    archive = shard_open(stream)  # closed below
    current_key: str | None = None
    sample: dict[str, Any] = {}
    row = 0
    try:
        for member in archive:
            if not member.isfile():
                continue
            key, extension = _sample_key(member.name)
            if key != current_key:
                if current_key is not None:
                    yield row, _sample_record(current_key, sample)
                current_key, sample, row = key, {}, row + 1
            handle = archive.extractfile(member)
            if handle is None:
                continue
            if extension in IMAGE_EXTENSIONS and "image" not in sample:
                sample["image"] = handle.read()
            elif extension == "json":
                sample["json"] = _json_member(handle.read())
            elif extension == "url":
                sample["url"] = handle.read().decode("utf-8", "replace").strip()
        damage = archive.damage_at_end()
    except _TAR_ERRORS as error:
        damage = f"the tar shard is damaged here: {error}"
    finally:
        archive.close()
    if current_key is None:
        return
    if damage is not None:
        # The sample being read when the damage showed is incomplete: reported,
        # not decided on whatever part of it was read.
        yield row, f"sample {current_key!r}: {damage}"
        return
    yield row, _sample_record(current_key, sample)


def webdataset_check(stream: IO[bytes]) -> None:
    """Raise ManifestInvalid unless ``stream`` (seekable) starts as a tar shard
    with at least one file; reads headers only, no image bytes."""
    try:
        with tarfile.open(fileobj=stream, mode="r:") as archive:
            member = archive.next()
            while member is not None and not member.isfile():
                member = archive.next()
    except _TAR_ERRORS as error:
        raise ManifestInvalid("malformed", f"cannot read the tar shard: {error}") from None
    finally:
        stream.seek(0)
    if member is None:
        raise ManifestInvalid("empty", "the tar shard holds no files")


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
