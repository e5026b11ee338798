"""Filtering damaged manifests: the rows are numbered as the registry numbers
them, the rows it reported invalid are kept as they are, and a damaged shard
is written up to its damage, never a traceback."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from optout import manifest_filter, manifests
from optout.manifest_filter import FilterResult
from tests.optout.batch_helpers import rows_of, tar

UNCLOSED = (
    "a quoted field opened on line 3 is never closed: the rest of the file was read as one field"
)
CUT_SHORT = "the tar shard ends here without its end-of-archive marker: it may be cut short"


# --- CSV: a stray quote ---------------------------------------------------------


def test_a_csv_stray_quote_closed_by_a_later_field_filters_to_the_registry_s_rows(
    tmp_path: Path,
) -> None:
    lines = [
        b"id,url,caption\n",
        b"a,https://a.org/,fine\n",
        b'b,https://b.org/,"a caption with a stray quote\n',
        b'c,https://c.org/,"quoted"\n',  # its opening quote closes the stray one
        b"d,https://d.org/,ok\n",
        b"e,https://e.org/,ok\n",
    ]
    source = tmp_path / "manifest.csv"
    source.write_bytes(b"".join(lines))
    target = tmp_path / "filtered.csv"

    result = manifest_filter.manifest_filter(source, target, {2: "a", 5: "d"})

    reason = "malformed CSV: ',' expected after '\"' on line {} of the record on lines {} to {}"
    assert rows_of(source) == [(2, "a"), (4, reason.format(4, 3, 4)), (5, "d"), (6, "e")]
    assert target.read_bytes() == b"".join(lines[0:1] + lines[2:4] + lines[5:])
    assert rows_of(target) == [(3, reason.format(3, 2, 3)), (4, "e")]
    assert result == FilterResult(kept=2, dropped=2)


def test_a_csv_stray_quote_at_the_end_filters_to_the_rows_the_registry_keeps(
    tmp_path: Path,
) -> None:
    """The issue's case: the swallowed rows were kept (unchecked, so never
    dropped) while the registry reported nothing invalid."""
    digest = "0" * 64
    text = (
        "id,sha256,caption\n"
        f"z,{'1' * 64},opted out\n"
        f'a,{digest},"a caption with a stray quote\n'
        f"b,{digest},ok\n"
        f"c,{digest},ok\n"
    )
    source = tmp_path / "manifest.csv"
    source.write_text(text)
    target = tmp_path / "filtered.csv"

    result = manifest_filter.manifest_filter(source, target, {2: "z"})

    assert rows_of(source) == [(2, "z"), (5, UNCLOSED)]
    assert target.read_text() == "id,sha256,caption\n" + text.split("\n", 2)[2]
    assert rows_of(target) == [(4, UNCLOSED.replace("line 3", "line 2"))]
    assert result == FilterResult(kept=1, dropped=1)


# --- webdataset .tar: a shard cut short or damaged ------------------------------------


def samples(count: int) -> list[tuple[str, bytes]]:
    members = []
    for index in range(1, count + 1):
        members.append((f"shard/{index:06d}.jpg", bytes([index]) * (700 + 300 * index)))
        members.append((f"shard/{index:06d}.json", b'{"url": "https://a.org/%d.jpg"}' % index))
    return members


def samples_kept(rows: list[tuple[int, Any]], excluded: dict[int, str]) -> list[tuple[int, Any]]:
    """The rows of a shard left once ``excluded`` is dropped, numbered again."""
    return list(enumerate((raw for row, raw in rows if row not in excluded), start=1))


def filtered_members(path: Path) -> list[tuple[str, bytes]]:
    """The members of a filtered shard as far as they can be read."""
    found = []
    with tarfile.open(path, "r|") as archive:
        try:
            for member in archive:
                handle = archive.extractfile(member)
                found.append((member.name, handle.read() if handle else b""))
        except tarfile.ReadError:
            pass
    return found


def test_a_shard_cut_inside_its_last_member_keeps_what_was_read_of_it(tmp_path: Path) -> None:
    members = samples(3)
    shard = tar(members)
    cut = shard.index(bytes([3]) * 1000) + 1000  # in the third image's data
    source = tmp_path / "shard.tar"
    source.write_bytes(shard[:cut])
    target = tmp_path / "filtered.tar"

    result = manifest_filter.manifest_filter(source, target, {1: "shard/000001"})

    damaged = "sample 'shard/000003': the tar shard is damaged here: unexpected end of data"
    assert rows_of(source) == [(1, "shard/000001"), (2, "shard/000002"), (3, damaged)]
    assert rows_of(target) == [(1, "shard/000002"), (2, damaged)]
    # The image cut short is there as far as the shard holds it, cut where it was.
    written = target.read_bytes()
    assert written.endswith(bytes([3]) * 1000)
    assert not written.endswith(bytes([3]) * 1001)
    assert filtered_members(target) == members[2:4]
    assert result == FilterResult(kept=2, dropped=1)


@pytest.mark.parametrize("extra", [0, 200])
def test_a_shard_cut_at_or_in_a_member_header_stays_cut_short(tmp_path: Path, extra: int) -> None:
    """tarfile reads such a shard to a quiet end: filtered, it used to end
    properly, its last sample (invalid at the registry) now looking whole."""
    members = samples(2)
    shard = tar(members)
    second = shard.index(b"shard/000002.jpg")  # the second sample's first header
    source = tmp_path / "shard.tar"
    source.write_bytes(shard[: second + extra])
    target = tmp_path / "filtered.tar"

    result = manifest_filter.manifest_filter(source, target, {})

    assert rows_of(source) == [(1, f"sample 'shard/000001': {CUT_SHORT}")]
    assert rows_of(target) == rows_of(source)
    assert filtered_members(target) == members[:2]
    assert result == FilterResult(kept=1, dropped=0)


def test_a_shard_with_a_bad_header_is_filtered_up_to_the_damage(tmp_path: Path) -> None:
    members = samples(3)
    garbled = bytearray(tar(members))
    garbled[garbled.index(b"shard/000002.jpg") + 100] ^= 0xFF  # fails its checksum
    source = tmp_path / "shard.tar"
    source.write_bytes(bytes(garbled))
    target = tmp_path / "filtered.tar"

    manifest_filter.manifest_filter(source, target, {})

    damaged = "sample 'shard/000001': the tar shard is damaged here: bad checksum"
    assert rows_of(source) == [(1, damaged)]
    assert rows_of(target) == [(1, f"sample 'shard/000001': {CUT_SHORT}")]
    assert filtered_members(target) == members[:2]


def test_a_shard_cut_anywhere_is_filtered_to_the_rows_the_registry_keeps(
    tmp_path: Path,
) -> None:
    """Cut at every 64th byte, the first sample excluded when the registry read
    it: the filtered shard reads as the registry's rows without it, the damaged
    last one (if any) still damaged."""
    shard = tar(samples(3))
    source = tmp_path / "shard.tar"
    target = tmp_path / "filtered.tar"

    for cut in range(512, len(shard) + 1, 64):
        source.write_bytes(shard[:cut])
        registry_rows = rows_of(source)
        excluded = {1: "shard/000001"} if registry_rows[0][1] == "shard/000001" else {}

        result = manifest_filter.manifest_filter(source, target, excluded)

        expected = samples_kept(registry_rows, excluded)
        found = rows_of(target)
        # Damaged stays damaged, in the same sample (the reason may differ: a
        # cut in a member's padding reads as a shard cut short once filtered).
        assert [(row, raw.split(":")[0]) for row, raw in found] == [
            (row, raw.split(":")[0]) for row, raw in expected
        ], cut
        assert result == FilterResult(kept=len(expected), dropped=len(excluded)), cut


def test_a_shard_cut_in_its_first_header_is_refused_as_the_registry_refuses_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "shard.tar"
    source.write_bytes(tar(samples(1))[:300])

    with pytest.raises(manifests.ManifestInvalid, match="cannot read the tar shard"):
        manifest_filter.manifest_filter(source, tmp_path / "filtered.tar", {})

    assert [path.name for path in tmp_path.iterdir()] == ["shard.tar"]
