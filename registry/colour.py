"""The colour layout of an image: a third signal that confirms a perceptual match.

PDQ and pHash both hash the low frequencies of the luminance, so two distinct
photographs of similar layout can fool both at once; their colours are
independent evidence. The signature is the image in a 4 x 4 grid of
area-averaged cells, each cell's CIE Lab a* and b* (chroma: insensitive to
brightness), plus the image's colourfulness (the mean distance from neutral
grey of the chromaticity of a 16 x 16 grid). Measured in docs/matching.md
("Colour as a third signal"): no true pair of a target edit lost, false
matches between colour photographs below what the calibration corpus measures.

Stored and exchanged as 66 lowercase hex digits (33 bytes): colourfulness in
thousandths (one byte, capped at 255), then a* and b* of the 16 cells in rows
from the top left, each rounded to a signed byte. Pure: Pillow and numpy.

A grey image (colourfulness below GREY_COLOURFULNESS: grayscale, black and
white) has no chroma to record; its cell bytes hold the **layout of its
luminance** instead, the confirming signal of a grey record against a grey
photo: a marker byte no a* takes (-128), then the z-scores of the 16 cells'
mean luminance (minus the image's mean, over the cells' standard deviation
floored at 16 of 255, so that brightness and contrast cancel while a caption
on a low-contrast photo moves little) times LAYOUT_SCALE as signed bytes, then
15 zero bytes. Signatures written before 2026-11-27 carry no layout: their
grey pairs are not compared (docs/matching.md, "The layout of a grey photo").
"""

from __future__ import annotations

import math
import struct

import numpy as np
from PIL import Image

COLOUR_HEX_LENGTH = 66
# One signature as stored (Photo.variant_colours, the engine's blobs): its raw bytes.
COLOUR_BYTES = COLOUR_HEX_LENGTH // 2
GRID = 4
_FINE_GRID = 16
# Added to every channel of a cell mean before taking chromaticity: a dark cell
# is pulled towards neutral instead of carrying the noise of a ratio of small
# numbers.
_EPS = 8.0
# Below this colourfulness an image carries no colour evidence (grayscale,
# black-and-white photographs): the check is skipped, it can never reject.
GREY_COLOURFULNESS = 0.010
# A registered variant greyer than GREY_COLOURFULNESS cannot be the source of a
# record at least this colourful (a colour repost of a black-and-white photo).
COLOURFUL_RECORD = 0.020
# The check that vetoes a match: the largest a*b* distance of a cell. Set by
# the physics of the edits rather than by the calibration photos: brightness
# +-20 % moves a uniform cell by at most 26.98 (x 1.2, clipped, worst over all
# 16.7 M sRGB colours: a saturated sky blue) and 21.05 (x 0.8), plus 1.4 for
# the rounding of both signatures to whole a*b* units. The package photographs
# never came above 13.9, a saturated sea photo outside them reached 22.2.
COLOUR_THRESHOLD = 28.4
# The closer agreement that confirms a match in the boxes beyond the hashes'
# own (MatchRule.confirmed): what a caption does to the colours (text overlays
# on the package photographs, the edit those boxes exist for: at most 8.5),
# plus the 1.4 of rounding. Brightness edits, which move colours further, match
# in the hashes' own boxes. benchmarks/bench_colour.py --product sweeps it: at
# 15.3 (until 2026-11-27) as many true copies gained, on the package photos and
# on PDQ's test photos, and two to six times the false pairs.
COLOUR_CONFIRM_THRESHOLD = 9.9
# The luminance layout of a grey signature: marker, scale of the z-scores,
# and the floor of the cells' standard deviation (16 of 255: a low-contrast
# photo's layout is mostly noise, and a caption would stretch it).
LAYOUT_MARKER = 0x80
LAYOUT_SCALE = 32
_LAYOUT_FLOOR = 16.0
# The largest mean cell difference of z-scores between a grey record and a
# grey variant that still match: every true pair of the target edits on the
# package photographs and on two sets of outside photographs is within 0.32
# (captions on low-contrast photos), 0.38 with a margin, plus 1/32 for the
# rounding of both signatures. benchmarks/bench_luma_layout.py measures it.
LAYOUT_THRESHOLD = 0.41
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L"
_GREY_UNITS = round(GREY_COLOURFULNESS * 1000)
_COLOURFUL_UNITS = round(COLOURFUL_RECORD * 1000)
_CELLS = struct.Struct(f"{2 * GRID * GRID}b")
_LAYOUT = struct.Struct(f"{GRID * GRID}b")

# sRGB (D65) to XYZ, and the D65 white point: the same constants as
# skimage.color.rgb2lab, which the tests compare against.
_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])


def _cells(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) means of the RGB channels (0-255) over a size x size
    grid: Pillow's box filter, which gives each pixel to the cell its centre
    falls in (exact area means when the cells are whole pixels)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.width % size == 0 and rgb.height % size == 0:  # whole blocks: numpy alone
        block_h, block_w = rgb.height // size, rgb.width // size
        # Sum the rows of each block, then its columns: two reductions over
        # contiguous runs, 2.5 x faster than one mean over both axes.
        rows = np.asarray(rgb, np.float64).reshape(size, block_h, size * block_w * 3).sum(axis=1)
        sums = rows.reshape(size, size, block_w, 3).sum(axis=2)
        return sums / (block_h * block_w)
    channels = [
        np.asarray(channel.convert("F").resize((size, size), Image.Resampling.BOX), np.float64)
        for channel in rgb.split()
    ]
    return np.stack(channels, axis=-1)


def _lab_ab(rgb: np.ndarray) -> np.ndarray:
    """(..., 2) CIE Lab a*, b* of sRGB values in 0-255."""
    c = np.clip(rgb / 255.0, 0.0, 1.0)
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([a, b], axis=-1)


def _colourfulness(cells: np.ndarray) -> float:
    total = cells.sum(axis=-1) + 3 * _EPS
    r = (cells[..., 0] + _EPS) / total - 1 / 3
    g = (cells[..., 1] + _EPS) / total - 1 / 3
    return float(np.hypot(r, g).mean())


def colour_signature(image: Image.Image) -> str:
    """The colour signature of an upright image, as 66 hex digits (a grey
    image's holds the layout of its luminance)."""
    fine = _cells(image, _FINE_GRID)
    step = _FINE_GRID // GRID
    coarse = fine.reshape(GRID, step, GRID, step, 3).mean(axis=(1, 3))
    colourful = min(255, round(_colourfulness(fine) * 1000))
    if colourful < _GREY_UNITS:
        luma = (coarse @ _LUMA).reshape(-1)
        z = (luma - luma.mean()) / max(float(luma.std()), _LAYOUT_FLOOR)
        return grey_signature(colourful, np.rint(z * LAYOUT_SCALE))
    ab = np.clip(np.rint(_lab_ab(coarse)), -127, 127).astype(np.int8)
    return (bytes((colourful,)) + ab.tobytes()).hex()


def grey_signature(colourful: int, layout: np.ndarray) -> str:
    """The signature of a grey image: its colourfulness in thousandths and
    its 16 cells' z-scores in units of 1/LAYOUT_SCALE (clipped to a byte)."""
    cells = np.clip(layout, -127, 127).astype(np.int8).tobytes()
    padding = bytes(COLOUR_BYTES - 2 - GRID * GRID)
    return (bytes((colourful, LAYOUT_MARKER)) + cells + padding).hex()


def colour_parts(signature: str) -> tuple[float, np.ndarray]:
    """(colourfulness, (16, 2) a*b* of the cells) of a signature (zeros for a
    grey signature's layout)."""
    data = _decoded(signature)
    ab = np.array(_cells_ab(data), dtype=np.float64).reshape(GRID * GRID, 2)
    return data[0] / 1000, ab


def layout_parts(signature: str) -> np.ndarray | None:
    """The (16,) luminance z-scores of a grey signature's cells, or None when
    it carries no layout (a colourful one, or one written before layouts)."""
    data = _decoded(signature)
    if not _has_layout(data):
        return None
    cells = np.frombuffer(data, dtype=np.int8, count=GRID * GRID, offset=2)
    return cells.astype(np.float64) / LAYOUT_SCALE


def _has_layout(data: bytes) -> bool:
    return data[0] < _GREY_UNITS and data[1] == LAYOUT_MARKER


_NO_CHROMA = (0,) * (2 * GRID * GRID)


def _cells_ab(data: bytes) -> tuple[int, ...]:
    return _NO_CHROMA if _has_layout(data) else _CELLS.unpack_from(data, 1)


def layout_compare(record: str, registered: str) -> float | None:
    """How far a grey record's luminance layout is from a grey registered
    variant's: the mean cell difference of their z-scores, or None when
    either carries no layout."""
    a, b = _decoded(record), _decoded(registered)
    if not (_has_layout(a) and _has_layout(b)):
        return None
    cells_a, cells_b = _LAYOUT.unpack_from(a, 2), _LAYOUT.unpack_from(b, 2)
    total = sum(abs(x - y) for x, y in zip(cells_a, cells_b, strict=True))
    return round(total / (GRID * GRID * LAYOUT_SCALE), 2)


def colour_distance(a: str, b: str) -> float:
    """The largest a*b* distance between corresponding cells of two signatures."""
    return math.sqrt(_largest_square(_decoded(a), _decoded(b)))


def _decoded(signature: str) -> bytes:
    data = bytes.fromhex(signature)
    if len(data) != COLOUR_BYTES:
        raise ValueError(f"a colour signature is {COLOUR_HEX_LENGTH} hexadecimal digits")
    return data


def _largest_square(a: bytes, b: bytes) -> int:
    # Plain integers: this runs for every candidate pair a lookup evaluates,
    # where numpy's per-call overhead would cost more than the arithmetic.
    cells_a, cells_b = _cells_ab(a), _cells_ab(b)
    return max(
        (cells_a[i] - cells_b[i]) ** 2 + (cells_a[i + 1] - cells_b[i + 1]) ** 2
        for i in range(0, 2 * GRID * GRID, 2)
    )


def grey_against_colour(record: str, registered: str) -> bool:
    """A grey record against a colourful registered variant (at least
    ``COLOURFUL_RECORD``): a black-and-white copy of a colour photo, or a
    black-and-white photo that only looks like one."""
    return _decoded(record)[0] < _GREY_UNITS and _decoded(registered)[0] >= _COLOURFUL_UNITS


def colourful(signature: str) -> bool:
    """Colours that can confirm a match (at least ``COLOURFUL_RECORD``): not
    grey, not faint."""
    return _decoded(signature)[0] >= _COLOURFUL_UNITS


def faint_colour(signature: str) -> bool:
    """Colours too faint to tell one featureless image from another: at least
    ``GREY_COLOURFULNESS`` (so the signature holds a*b*, not a luminance
    layout) but below ``COLOURFUL_RECORD`` (every a*b* cell near zero)."""
    return _GREY_UNITS <= _decoded(signature)[0] < _COLOURFUL_UNITS


def colour_compare(record: str, registered: str) -> float | None:
    """How far a record's colours are from a registered variant's: the cell
    distance, ``math.inf`` when a grey variant meets a colourful record, or
    None when the record is grey (it carries no colour evidence)."""
    record_data, registered_data = _decoded(record), _decoded(registered)
    # Colourfulness is stored in thousandths: compare in those units.
    if record_data[0] < _GREY_UNITS:
        return None
    if registered_data[0] < _GREY_UNITS and record_data[0] >= _COLOURFUL_UNITS:
        return math.inf
    return round(math.sqrt(_largest_square(record_data, registered_data)), 2)
