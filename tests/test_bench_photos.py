"""The benchmarks' ``--photos DIR``: recall and precision measured on a folder
of one's own photographs instead of the package ones (benchmarks/corpus.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from benchmarks import corpus, outside_photos
from benchmarks import edits as bench_edits

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, array: np.ndarray, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    _save(folder / "a-astronaut.jpg", data.astronaut(), quality=90)
    _save(folder / "b-coffee.png", data.coffee())
    # Stored on its side, upright by its EXIF orientation (6: turn 90 degrees clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = np.ascontiguousarray(np.rot90(data.chelsea(), 1))
    _save(folder / "nested" / "c-chelsea.jpg", sideways, quality=90, exif=exif.tobytes())
    _save(folder / "d-camera.webp", data.camera())
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture
def directory_corpus(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name in ("SOURCES", "CALIBRATION", "VALIDATION", "TAG"):
        monkeypatch.setattr(corpus, name, getattr(corpus, name))
    monkeypatch.setenv(corpus.PHOTOS_ENV, "")
    return corpus


def test_every_image_under_the_folder_is_a_source(directory_corpus, photos: Path) -> None:  # type: ignore[no-untyped-def]
    directory_corpus.use_directory(str(photos))
    names = ["a-astronaut.jpg", "b-coffee.png", "d-camera.webp", "nested/c-chelsea.jpg"]
    assert list(directory_corpus.SOURCES) == names
    # Disjoint halves, by file order.
    assert directory_corpus.CALIBRATION == ("a-astronaut.jpg", "d-camera.webp")
    assert directory_corpus.VALIDATION == ("b-coffee.png", "nested/c-chelsea.jpg")
    assert directory_corpus.available(tuple(names)) == names
    assert os.environ[corpus.PHOTOS_ENV] == str(photos.resolve())
    tag = directory_corpus.TAG
    assert tag.startswith("_dir") and tag != ""
    # Upright: the EXIF orientation is applied (chelsea is 451 x 300 upright).
    chelsea = directory_corpus.source_image("nested/c-chelsea.jpg")
    assert chelsea.size == (451, 300)
    assert directory_corpus.source_image("d-camera.webp").mode == "RGB"
    # A different folder content is a different cache key.
    (photos / "e-extra.png").write_bytes((photos / "b-coffee.png").read_bytes())
    directory_corpus.use_directory(str(photos))
    assert tag != directory_corpus.TAG


def test_a_folder_with_fewer_than_two_photos_is_refused(directory_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _save(tmp_path / "only.png", data.coffee())
    with pytest.raises(SystemExit, match="at least two image files"):
        directory_corpus.use_directory(str(tmp_path))


def test_bench_robust_runs_on_a_folder(photos: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != corpus.PHOTOS_ENV}
    result = subprocess.run(
        [
            *(sys.executable, "benchmarks/bench_robust.py", "--photos", str(photos)),
            *("--windows", "0", "--workers", "1"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Four photos, each once (no extra windows), each edit a row of recall.
    assert "4 photos" in result.stdout, result.stdout[:2000]
    mirror = next(line for line in result.stdout.splitlines() if line.startswith("| **mirror** |"))
    assert mirror.count("|") > 4
    # Four distinct photographs: no edited copy of one matches another.
    edits = len(bench_edits.EDITS) + len(bench_edits.STRETCH_EDITS)
    assert (
        f"Distinct photos: {4 * 3 * edits} (photo, edited copy of a photo of another source) "
        f"pairs over {edits} edits, records with quality; matched by the rule: 0;"
    ) in result.stdout, result.stdout[-2000:]


def test_bundled_images_finds_each_webp_and_jpeg_between_other_bytes() -> None:
    """outside_photos.py's gcompris folder: the photographs inside a Qt resource
    bundle are found by their signatures, whole, in file order; bytes that only
    look like a start are skipped."""

    def encoded(array: np.ndarray, fmt: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, fmt, quality=90)
        return buffer.getvalue()

    webp = encoded(data.astronaut()[:300, :400], "WEBP")
    jpeg = encoded(data.coffee()[:280, :260], "JPEG")
    bundle = (
        b"qres\0\0\0\3" + webp + b"\0" * 7 + b"RIFF\0\0\0\0WEBPjunk" + jpeg + b"\xff\xd8\xff\xe0x"
    )
    found = list(outside_photos.bundled_images(bundle))
    assert [(image.format, image.size) for image in found] == [
        ("WEBP", (400, 300)),
        ("JPEG", (260, 280)),
    ]


def test_a_crop_of_a_photograph_already_written_is_left_out_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """outside_photos.py's screen: two crops of one scene are not a false pair
    (GCompris ships its crocodile twice), so the later is left out; distinct
    photographs of similar subject stay."""
    astronaut = data.astronaut()
    written = []
    for name, array in (
        ("astronaut.jpg", astronaut),
        ("coffee.jpg", data.coffee()),
        ("astronaut-crop.jpg", astronaut[40:460, 60:500]),
        ("chelsea.jpg", data.chelsea()),
    ):
        _save(tmp_path / name, array, quality=92)
        written.append(tmp_path / name)

    kept = outside_photos.drop_same_scenes(written)

    assert [path.name for path in kept] == ["astronaut.jpg", "coffee.jpg", "chelsea.jpg"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
    ]
    assert "left out astronaut-crop.jpg: the scene of astronaut.jpg" in capsys.readouterr().out
