"""Calibration photos that ship inside installed packages (no download).

Sources: the photographs bundled in the scikit-image wheel and scikit-learn's two
sample images (``china.jpg``, ``flower.jpg``; scikit-learn is in the ``bench``
extra — without it those two are skipped). Synthetic images of those packages
(colour wheel, logo, checkerboard, phantoms, binary masks) are not photos and are
left out; the stereo motorcycle pair is one scene, so only its left view is used.

The sources are split in two disjoint halves, each mixing colour scenes, grey
scenes, textures and scientific imagery:

- ``CALIBRATION`` — thresholds and variants were chosen on these;
- ``VALIDATION`` — never looked at while choosing; the benchmark reports both.

Two kinds of derived content:

- ``recall_photos``: per source, the photo itself (longest side at most 768 px)
  and a few large windows of it at other positions, scales and aspect ratios:
  more photos to edit for the recall table.
- ``patches``: many smaller windows at several scales (16 % to 60 % of the
  shorter side), resized to at most 256 px: distinct pieces of real-image content
  for the precision corpus. Patches of the same source overlap, so pairs are
  only ever formed between patches of different sources.

**Your own photographs** instead of the package ones: ``--photos DIR`` on
``bench_robust.py``, ``bench_precision.py`` and ``bench_colour.py`` (or the
environment variable ``OPTOUT_BENCH_PHOTOS``; worker processes inherit it).
Every image file under DIR (JPEG, PNG, WEBP, TIFF, BMP; EXIF orientation
applied) is one source; none was seen while the thresholds were chosen, so the
two halves are only a split by file order (even positions, odd positions), kept
to show how much the numbers move between two disjoint sets of photographs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MAX_SIDE = 768
PATCH_MAX_SIDE = 256


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "motorcycle":
                return np.asarray(data.stereo_motorcycle()[0])
            return np.asarray(getattr(data, name)())

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name))

    return load


SOURCES: dict[str, Callable[[], np.ndarray]] = {
    # colour scenes
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    # grey scenes
    "camera": _skimage("camera"),
    "moon": _skimage("moon"),
    "coins": _skimage("coins"),
    "clock": _skimage("clock"),
    # textures
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    # scientific and documents
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "cell": _skimage("cell"),
    "page": _skimage("page"),
    "text": _skimage("text"),
}

CALIBRATION = (
    "astronaut",
    "coffee",
    "motorcycle",
    "china",
    "camera",
    "moon",
    "brick",
    "grass",
    "hubble_deep_field",
    "cell",
)
VALIDATION = (
    "chelsea",
    "rocket",
    "flower",
    "coins",
    "clock",
    "gravel",
    "retina",
    "immunohistochemistry",
    "page",
    "text",
)


PHOTOS_ENV = "OPTOUT_BENCH_PHOTOS"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
# What the corpus is made of: "" for the package photographs, else a short
# digest of the directory's file names and sizes (benchmark caches key on it).
TAG = ""


def _file(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))

    return load


def use_directory(directory: str) -> None:
    """Use every image file under ``directory`` as a source instead of the
    package photographs (see the module's docstring)."""
    global SOURCES, CALIBRATION, VALIDATION, TAG
    root = Path(directory).resolve()
    paths = sorted(
        path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if len(paths) < 2:
        raise SystemExit(f"{root}: at least two image files are needed, found {len(paths)}")
    SOURCES = {str(path.relative_to(root)): _file(path) for path in paths}
    names = tuple(SOURCES)
    CALIBRATION, VALIDATION = names[0::2], names[1::2]
    digest = hashlib.sha256()
    for name, path in zip(names, paths, strict=True):
        digest.update(f"{name}\0{path.stat().st_size}\n".encode())
    TAG = f"_dir{digest.hexdigest()[:10]}"
    os.environ[PHOTOS_ENV] = str(root)


def add_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--photos DIR`` option of the benchmarks."""
    parser.add_argument(
        "--photos",
        metavar="DIR",
        default=os.environ.get(PHOTOS_ENV) or None,
        help="use every image under DIR as a source photo instead of the package "
        f"photographs (also ${PHOTOS_ENV})",
    )


def apply(args: argparse.Namespace) -> None:
    """Act on ``--photos`` (before any worker process starts)."""
    if args.photos:
        use_directory(args.photos)


def available(names: tuple[str, ...]) -> list[str]:
    """The sources of ``names`` that load here (scikit-learn's need the extra)."""
    out = []
    for name in names:
        try:
            SOURCES[name]()
        except ImportError:
            continue
        out.append(name)
    return out


def source_image(name: str, max_side: int = MAX_SIDE) -> Image.Image:
    """The source photo as RGB, longest side at most ``max_side``."""
    array = SOURCES[name]()
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = Image.fromarray(array[..., :3])
    scale = max_side / max(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _window(
    image: Image.Image, rng: np.random.Generator, scale: float, max_side: int
) -> Image.Image:
    short = min(image.size)
    aspect = float(np.exp(rng.uniform(np.log(0.67), np.log(1.5))))
    height = min(image.height, max(32, round(short * scale)))
    width = min(image.width, max(32, round(height * aspect)))
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    window = image.crop((left, top, left + width, top + height))
    factor = max_side / max(window.size)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        window = window.resize(size, Image.Resampling.LANCZOS)
    return window


def recall_photos(name: str, windows: int = 4, seed: int = 0) -> list[Image.Image]:
    """The source photo and ``windows`` large windows of it (70-90 % of its shorter side)."""
    image = source_image(name)
    rng = np.random.default_rng([seed, len(name), sum(map(ord, name))])
    photos = [image]
    for _ in range(windows):
        photos.append(_window(image, rng, float(rng.uniform(0.7, 0.9)), MAX_SIDE))
    return photos


PATCH_SCALES = (0.6, 0.45, 0.33, 0.25, 0.16)


def patches(name: str, count: int, seed: int = 0) -> Iterator[Image.Image]:
    """``count`` windows of the source at the scales of PATCH_SCALES (cycled),
    random positions and aspect ratios, at most PATCH_MAX_SIDE px."""
    image = source_image(name, max_side=1024)
    rng = np.random.default_rng([seed, 1, len(name), sum(map(ord, name))])
    for index in range(count):
        scale = PATCH_SCALES[index % len(PATCH_SCALES)]
        yield _window(image, rng, scale, PATCH_MAX_SIDE)


if os.environ.get(PHOTOS_ENV):  # a worker process of a benchmark run with --photos
    use_directory(os.environ[PHOTOS_ENV])
