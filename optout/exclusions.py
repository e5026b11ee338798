"""A finished batch's excluded (or invalid) records as JSONL, CSV or Parquet,
produced piece by piece for a streamed download: memory stays bounded by one
row group whatever the size of the batch.

Rows: excluded ``{"id", "row", "matches": [...]}``; invalid ``{"id", "row",
"reason"}``. ``row`` is the record's manifest row (line) number. CSV carries the
matches as a JSON-encoded column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from optout.models import BatchResult

FORMATS = ("jsonl", "csv", "parquet")
DECISIONS = (BatchResult.Decision.EXCLUDE.value, BatchResult.Decision.INVALID.value)
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
# Rows per Parquet row group (and per yielded piece of text): large enough for
# Parquet's columnar compression to pay off, small enough to stream.
ROWS_PER_PIECE = 10_000


def exclusion_row(result: BatchResult) -> dict[str, Any]:
    if result.decision == BatchResult.Decision.INVALID:
        return {"id": result.record_id or None, "row": result.row, "reason": result.reason}
    return {"id": result.record_id, "row": result.row, "matches": result.matches}


def _pieces(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    piece: list[dict[str, Any]] = []
    for row in rows:
        piece.append(row)
        if len(piece) >= ROWS_PER_PIECE:
            yield piece
            piece = []
    if piece:
        yield piece


def jsonl_stream(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for piece in _pieces(rows):
        yield "".join(
            json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in piece
        ).encode("utf-8")


def csv_stream(rows: Iterable[dict[str, Any]], decision: str) -> Iterator[bytes]:
    last = "matches" if decision == BatchResult.Decision.EXCLUDE else "reason"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "row", last])
    for piece in _pieces(rows):
        for row in piece:
            value = row[last]
            if last == "matches":
                value = json.dumps(value, separators=(",", ":"))
            writer.writerow([row["id"] if row["id"] is not None else "", row["row"], value])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


class _Drain(io.RawIOBase):
    """A write-only sink that hands out what was written since the last take.
    ``tell`` counts every byte ever written: Parquet's footer records offsets."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        return data


def parquet_schema(decision: str) -> Any:
    import pyarrow as pa

    if decision == BatchResult.Decision.INVALID:
        return pa.schema([("id", pa.string()), ("row", pa.int64()), ("reason", pa.string())])
    evidence = pa.struct(
        [
            ("variant", pa.string()),
            ("basis", pa.string()),
            ("pdq_distance", pa.int64()),
            ("pdq_threshold", pa.int64()),
            ("phash_distance", pa.int64()),
            ("phash_threshold", pa.int64()),
            ("quality", pa.string()),
            ("colour_distance", pa.float64()),  # null when the colours were not compared
            ("colour_threshold", pa.float64()),
            ("layout_distance", pa.float64()),  # null when the layouts were not compared
            ("layout_threshold", pa.float64()),
            ("keypoint_inliers", pa.int64()),
            ("keypoint_threshold", pa.int64()),
            ("strictness", pa.int64()),
        ]
    )
    match = pa.struct(
        [
            ("kind", pa.string()),
            ("distance", pa.int64()),
            ("threshold", pa.int64()),
            ("opt_out", pa.string()),
            ("uses", pa.list_(pa.string())),
            ("evidence", evidence),  # null for claim matches
        ]
    )
    return pa.schema([("id", pa.string()), ("row", pa.int64()), ("matches", pa.list_(match))])


def parquet_stream(rows: Iterable[dict[str, Any]], decision: str) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(decision)
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for piece in _pieces(rows):
            writer.write_table(pa.Table.from_pylist(piece, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def exclusions_stream(
    results: Iterable[BatchResult], *, output_format: str, decision: str
) -> Iterator[bytes]:
    rows = (exclusion_row(result) for result in results)
    if output_format == "csv":
        return csv_stream(rows, decision)
    if output_format == "parquet":
        return parquet_stream(rows, decision)
    return jsonl_stream(rows)
