"""`optout hash`: the installed console script, run as a subprocess over a real folder.

The script exists once the project is installed in the virtualenv
(`pip install -e '.[dev]'`, which `make test` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from optout import cli
from registry import hashing, keypoints, uploads, variants
from registry.colour import COLOUR_HEX_LENGTH, colour_distance
from tests.fresh_python import LOADED_FRAMEWORKS, run_python
from tests.images import encode, generated_photo, jpeg_bytes, skimage_photo

OPTOUT = Path(sys.executable).parent / "optout"
CORRUPT_JPEG = b"\xff\xd8\xff" + bytes(200)


def optout(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPTOUT.exists(), f"{OPTOUT} is missing: run `pip install -e '.[dev]'`"
    return subprocess.run(
        [str(OPTOUT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def good_folder(tmp_path: Path) -> Path:
    """Photos only: three JPEGs (one with an upper-case extension), PNG and WEBP deeper down."""
    root = tmp_path / "photos"
    write(root / "a.jpg", jpeg_bytes(1))
    write(root / "b.jpeg", jpeg_bytes(2))
    write(root / "Z.JPG", jpeg_bytes(3))
    write(root / "2024" / "summer" / "c.png", encode(generated_photo(4), "PNG"))
    write(root / "2024" / "d.webp", encode(generated_photo(5), "WEBP"))
    return root


@pytest.fixture
def mixed_folder(good_folder: Path) -> Path:
    """The good photos plus a corrupt JPEG, a text file and a hidden folder."""
    write(good_folder / "2024" / "broken.jpg", CORRUPT_JPEG)
    write(good_folder / "notes.txt", b"taken on holiday")
    write(good_folder / ".thumbnails" / "a.jpg", jpeg_bytes(1))
    write(good_folder / "._a.jpg", b"\x00\x05\x16\x07 AppleDouble")
    return good_folder


GOOD_PATHS = ["2024/d.webp", "2024/summer/c.png", "Z.JPG", "a.jpg", "b.jpeg"]


def derived_variants(data: bytes) -> list[variants.Variant]:
    """The derived variants the registry computes from an uploaded photo; the
    mirror variant with the keypoints of the mirror image."""
    rgb = hashing.decode(data)
    mirror = keypoints.to_text(keypoints.keypoints_of(ImageOps.mirror(rgb)))
    return [
        replace(item, keypoints=mirror) if item.name == "mirror" else item
        for item in variants.variants_compute(rgb, variants.DERIVED_VARIANTS)
    ]


def expected_line(root: Path, path: str, *, with_variants: bool = True) -> dict[str, object]:
    data = (root / path).read_bytes()
    line: dict[str, object] = {"path": path, **hashing.hash_bytes(data).as_dict()}
    if with_variants:
        line["variants"] = [variant.as_dict() for variant in derived_variants(data)]
    return line


def test_hash_writes_one_line_per_photo_in_path_order_and_reports_the_bad_file(
    mixed_folder: Path,
) -> None:
    result = optout("hash", str(mixed_folder), "--workers", "2")

    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == GOOD_PATHS
    assert lines == [expected_line(mixed_folder, path) for path in GOOD_PATHS]
    assert list(lines[0]) == [
        "path",
        "sha256",
        "pdq",
        "pdq_quality",
        "phash",
        "width",
        "height",
        "colour",
        "band",
        "keypoints",
        "variants",
    ]
    assert [item["name"] for item in lines[0]["variants"]] == list(variants.DERIVED_VARIANTS)
    assert lines[0]["variants"][0]["name"] == "mirror"
    assert list(lines[0]["variants"][0]) == [
        "name",
        "pdq",
        "pdq_quality",
        "phash",
        "colour",
        "keypoints",
    ]
    assert list(lines[0]["variants"][1]) == ["name", "pdq", "pdq_quality", "phash", "colour"]
    # The colour signature of the photo and of each derived image.
    assert all(hashing.is_hex(line["colour"], COLOUR_HEX_LENGTH) for line in lines)
    assert all(
        hashing.is_hex(item["colour"], COLOUR_HEX_LENGTH)
        for line in lines
        for item in line["variants"]
    )
    assert "failed: 2024/broken.jpg: JPEG header is damaged (corrupt)" in result.stderr.splitlines()
    assert "notes.txt" not in result.stderr
    assert ".thumbnails" not in result.stderr + result.stdout
    assert "hashing: 100%" in result.stderr
    assert "6/6" in result.stderr
    assert result.stderr.splitlines()[-1] == "hashed 5, failed 1"
    assert result.returncode == 1


def test_hash_of_good_photos_writes_the_output_file_and_exits_zero(
    good_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "hashes.jsonl"

    result = optout("hash", str(good_folder), "-o", str(output), "--workers", "2")

    assert result.stdout == ""
    lines = [json.loads(text) for text in output.read_text().splitlines()]
    assert lines == [expected_line(good_folder, path) for path in GOOD_PATHS]
    assert result.stderr.splitlines()[-1] == "hashed 5, failed 0"
    assert result.returncode == 0


def forked_children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` and that run its command line (forked
    pool workers, not helpers it starts with a command of their own)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return set()
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and (entry / "cmdline").read_bytes() == command:
                children.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


@pytest.mark.parametrize(("workers", "pool"), [("1", 0), ("2", 2)])
def test_hash_spreads_the_photos_over_a_pool_of_processes(
    tmp_path: Path, workers: str, pool: int
) -> None:
    root = tmp_path / "photos"
    large = skimage_photo("astronaut").resize((1024, 1024))
    for index in range(24):
        write(root / f"{index:02}.jpg", encode(large.rotate(index), "JPEG", quality=90))
    seen: set[int] = set()

    process = subprocess.Popen(
        [str(OPTOUT), "hash", str(root), "--workers", workers, "--quiet", "-o", os.devnull],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while process.poll() is None:
        seen |= forked_children(process.pid)
        time.sleep(0.01)

    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert len(seen) == pool


def test_hash_output_is_the_same_with_one_worker_and_with_two(mixed_folder: Path) -> None:
    in_process = optout("hash", str(mixed_folder), "--workers", "1", "--quiet")

    pooled = optout("hash", str(mixed_folder), "--workers", "2", "--quiet")

    assert in_process.stdout == pooled.stdout
    assert len(in_process.stdout.splitlines()) == 5
    assert (
        in_process.stderr
        == pooled.stderr
        == ("failed: 2024/broken.jpg: JPEG header is damaged (corrupt)\nhashed 5, failed 1\n")
    )
    assert in_process.returncode == pooled.returncode == 1


@pytest.mark.parametrize("grown", [101, 10_000])
def test_a_file_that_grows_while_it_is_read_is_read_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grown: int
) -> None:
    """The read takes a buffer of the size fstat reported; a file that grew
    since (fstat reporting the old size here) is still read on, up to one
    byte past the cap, so the cap still refuses it."""
    data = bytes(range(256)) * 40
    path = write(tmp_path / "growing.jpg", data)
    real_fstat = cli.os.fstat

    def fstat_before_it_grew(fd: int) -> object:
        result = real_fstat(fd)
        return type("Stat", (), {"st_size": result.st_size - grown})()

    monkeypatch.setattr(cli.os, "fstat", fstat_before_it_grew)

    assert cli._read_capped(path, max_bytes=len(data)) == data
    assert cli._read_capped(path, max_bytes=len(data) - 1) == data
    assert len(cli._read_capped(path, max_bytes=len(data) - 100)) == len(data) - 99


def test_hash_reports_files_above_max_bytes_and_hashes_the_rest(good_folder: Path) -> None:
    big = write(good_folder / "big.png", encode(generated_photo(6, (800, 600)), "PNG"))
    limit = big.stat().st_size - 1

    result = optout("hash", str(good_folder), "--max-bytes", str(limit), "--quiet")

    assert (
        f"failed: big.png: file is {limit + 1} bytes; the limit is {limit} bytes (too_large)"
        in (result.stderr.splitlines())
    )
    assert [json.loads(text)["path"] for text in result.stdout.splitlines()] == GOOD_PATHS
    assert result.returncode == 1


def test_hash_reports_a_photo_it_cannot_read(good_folder: Path) -> None:
    (good_folder / "gone.jpg").symlink_to(good_folder / "deleted-meanwhile.jpg")

    result = optout("hash", str(good_folder), "--quiet")

    assert result.stderr == (
        "failed: gone.jpg: cannot read file: No such file or directory\nhashed 5, failed 1\n"
    )
    assert [json.loads(text)["path"] for text in result.stdout.splitlines()] == GOOD_PATHS
    assert result.returncode == 1


def test_hash_of_a_folder_without_photos_writes_nothing_and_exits_zero(tmp_path: Path) -> None:
    write(tmp_path / "notes.txt", b"no photos here")

    result = optout("hash", str(tmp_path), "--quiet")

    assert result.stdout == ""
    assert result.stderr == "hashed 0, failed 0\n"
    assert result.returncode == 0


def test_hash_output_is_accepted_by_the_registry_upload_parser(
    mixed_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "hashes.jsonl"
    optout("hash", str(mixed_folder), "-o", str(output), "--quiet")

    parsed = list(uploads.hashes_jsonl_parse(output.read_bytes(), max_lines=100))

    assert parsed == [
        (
            number,
            uploads.HashLine(
                sha256=hashes.sha256,
                pdq=hashes.pdq,
                phash=hashes.phash,
                pdq_quality=hashes.pdq_quality,
                width=hashes.width,
                height=hashes.height,
                filename=path.rsplit("/", 1)[-1],
                # The mirror variant's keypoints are in keypoints.
                variants=tuple(
                    variants.variants_compute(
                        hashing.decode((mixed_folder / path).read_bytes()),
                        variants.DERIVED_VARIANTS,
                    )
                ),
                colour=hashes.colour,
                keypoints=keypoints.photo_keypoints_of(
                    hashing.decode((mixed_folder / path).read_bytes())
                ),
            ),
        )
        for number, path in enumerate(GOOD_PATHS, start=1)
        for hashes in [hashing.hash_bytes((mixed_folder / path).read_bytes())]
    ]
    assert all(len(line.variants) == 16 for _, line in parsed if isinstance(line, uploads.HashLine))


def test_hash_no_variants_leaves_them_out(good_folder: Path) -> None:
    result = optout("hash", str(good_folder), "--no-variants", "--workers", "2", "--quiet")

    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert lines == [expected_line(good_folder, path, with_variants=False) for path in GOOD_PATHS]
    assert all("variants" not in line for line in lines)
    assert result.stderr == "hashed 5, failed 0\n"
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["hash", "/no/such/folder"],
            "optout hash: error: argument DIR: not a folder: /no/such/folder",
        ),
        (
            ["hash", ".", "--workers", "0"],
            "optout hash: error: argument --workers: must be at least 1, got 0",
        ),
        (
            ["hash", ".", "--workers", "two"],
            "optout hash: error: argument --workers: not a whole number: 'two'",
        ),
        ([], "optout: error: the following arguments are required: COMMAND"),
    ],
    ids=["missing-folder", "zero-workers", "workers-not-a-number", "no-command"],
)
def test_usage_errors_exit_with_status_2(args: list[str], message: str) -> None:
    result = optout(*args)

    assert result.stderr.splitlines()[-1] == message
    assert result.stdout == ""
    assert result.returncode == 2


def test_hash_into_a_folder_that_does_not_exist_is_a_usage_error(good_folder: Path) -> None:
    result = optout("hash", str(good_folder), "-o", str(good_folder / "missing" / "out.jsonl"))

    assert result.stderr == (
        f"optout hash: cannot write {good_folder / 'missing' / 'out.jsonl'}: "
        "No such file or directory\n"
    )
    assert result.returncode == 2


def test_hash_help_documents_the_exit_status() -> None:
    result = optout("hash", "--help")

    assert "Exit status:\n  0  every photo was hashed\n" in result.stdout
    assert (
        "  1  at least one photo could not be hashed (each is reported on stderr),\n"
        "     or the output could not be written (a full disk)\n" in result.stdout
    )
    assert (
        "  2  usage error (bad arguments, DIR is not a folder, -o cannot be written)\n"
        in result.stdout
    )
    assert result.returncode == 0


def test_hash_imports_no_django(good_folder: Path, tmp_path: Path) -> None:
    # Runs main() in a fresh interpreter, then looks at what got imported. The
    # environment still names a Django settings module: hash must not care.
    output = tmp_path / "hashes.jsonl"
    snippet = (
        "import sys\n"
        "from optout import cli\n"
        f"code = cli.main(['hash', {str(good_folder)!r}, '-o', {str(output)!r}, '--quiet'])\n"
        f"print(code, {LOADED_FRAMEWORKS})\n"
    )

    result = run_python(snippet)

    assert result.stdout == "0 []\n"
    assert len(output.read_text().splitlines()) == 5
    assert result.returncode == 0


def test_hash_fast_decodes_large_jpegs_at_reduced_scale_within_bounds(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    # hubble_deep_field at 1024 x 768: one where the draft decode moves PDQ.
    large = skimage_photo("hubble_deep_field").resize((1024, 768), Image.Resampling.BICUBIC)
    big = write(root / "big.jpg", encode(large, "JPEG", quality=90)).read_bytes()
    write(root / "small.png", encode(generated_photo(4), "PNG"))
    fast = hashing.hash_bytes(big, fast=True)
    exact = hashing.hash_bytes(big)
    assert fast.pdq != exact.pdq

    result = optout("hash", str(root), "--fast", "--workers", "2", "--quiet")

    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert lines == [
        # The photo's own hashes from the reduced decode; its variants from the full one.
        {
            "path": "big.jpg",
            # The keypoints from the full decode too: they are registered.
            **replace(fast, keypoints=exact.keypoints).as_dict(),
            "variants": [variant.as_dict() for variant in derived_variants(big)],
        },
        # Too small to be reduced: the same hashes as without --fast.
        expected_line(root, "small.png"),
    ]
    assert (fast.sha256, fast.width, fast.height) == (exact.sha256, 1024, 768)
    assert hashing.hamming(fast.pdq, exact.pdq) <= 12
    assert hashing.hamming(fast.phash, exact.phash) <= 2
    # The colour from the reduced decode: the same cells, up to rounding.
    assert colour_distance(fast.colour, exact.colour) <= 2
    assert result.stderr == "hashed 2, failed 0\n"
    assert result.returncode == 0
