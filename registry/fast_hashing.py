"""PDQ and pHash of a photo decoded at a reduced scale, close to those of the full
decode. Pure numpy; used by ``registry.hashing.hash_bytes(..., fast=True)``.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size straight from its DCT
coefficients (libjpeg's scaled IDCT, Pillow's ``Image.draft``): one reduced
pixel stands for an s x s block of full-size pixels. The hashes are then computed
so that they stay as close as possible to the full-size ones:

- **PDQ** downsamples the full-size luma to 64 x 64 with a tent filter (two passes
  of an asymmetric box filter whose width depends on the image size) and keeps
  one sample per cell. Here that filter is written down as one 64 x n weight
  matrix per axis *for the full size*, and the weights of the s full-size pixels
  behind each reduced pixel are summed: the reduced image gives the 64 x 64
  buffer the full image would have given, up to what the reduced decode itself
  loses. Feeding the reduced image to ``pdqhash`` instead would apply the filter
  of another size: up to 36 bits away from the full-decode hash instead of at
  most 6 (2 000 photos, docs/performance.md). The DCT, median and quality steps are PDQ's own
  (Meta's reference ``pdqhashing.cpp``), checked bit for bit against ``pdqhash``.
- **pHash** is ``imagehash.phash`` of the reduced image: its Lanczos resize to
  32 x 32 is already a 1/32 low-pass, so the reduced decode barely moves the DCT
  coefficients; but pHash compares them with their median, and a pair of
  coefficients on either side of the median can swap. ``phash_with_margin``
  therefore also returns how far the median is from the coefficients around it,
  so the caller can hash the full decode when the reduced one is ambiguous.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]

PDQ_GRID = 64
# pdqhash returns an all-zero hash of quality 0 below this many rows or columns.
PDQ_MIN_DIMENSION = 5
# PDQ's luma (Meta's reference and pdqhash): ITU-R BT.601 weights.
_LUMA = (np.float32(0.299), np.float32(0.587), np.float32(0.114))
# imagehash.phash's defaults: an 8 x 8 hash from a 32 x 32 image.
PHASH_SIZE = 8
PHASH_IMAGE_SIZE = 32

# How each EXIF orientation (1-8, as Pillow's exif_transpose applies them) maps
# the stored pixels to the displayed ones: whether the displayed rows and the
# displayed columns run backwards along the stored axis they come from.
ORIENTATION_REVERSED: dict[int, tuple[bool, bool]] = {
    1: (False, False),
    2: (False, True),  # mirrored left-right
    3: (True, True),  # rotated 180°
    4: (True, False),  # mirrored top-bottom
    5: (False, False),  # transposed
    6: (False, True),  # rotated 90° clockwise to display
    7: (True, True),  # transversed
    8: (True, False),  # rotated 90° counter-clockwise to display
}


# --- PDQ ----------------------------------------------------------------------


def _jarosz_window(length: int) -> int:
    """PDQ's box width along an axis of ``length`` pixels (computeJaroszFilterWindowSize)."""
    return (length + 2 * PDQ_GRID - 1) // (2 * PDQ_GRID)


def _box_span(position: int, length: int, window: int) -> tuple[int, int]:
    """Inputs [start, stop) that PDQ's box1DFloat averages into output ``position``:
    it is asymmetric (window 8 averages 3 before and 4 after) and shrinks at the edges."""
    half = (window + 2) // 2
    return max(0, position - (window - half)), min(length, position + half)


def _tent_row(position: int, length: int, window: int) -> npt.NDArray[np.float64]:
    """Weights of the inputs in output ``position`` of two box passes (PDQ's tent)."""
    row = np.zeros(length)
    outer_start, outer_stop = _box_span(position, length, window)
    for inner in range(outer_start, outer_stop):
        start, stop = _box_span(inner, length, window)
        row[start:stop] += 1.0 / ((stop - start) * (outer_stop - outer_start))
    return row


@lru_cache(maxsize=256)
def pdq_axis(length: int, scale: int = 1, reversed_: bool = False) -> tuple[IntArray, FloatArray]:
    """PDQ's downsampling of one axis of ``length`` full-size pixels to 64 samples,
    as band indices and weights (64 x k each) over the axis decoded at 1/``scale``.

    ``reversed_``: the displayed axis runs backwards along the stored one (EXIF
    orientation), so the s-pixel blocks of the decode are aligned to its far end.
    """
    window = _jarosz_window(length)
    rows = np.stack(
        [_tent_row(int(((i + 0.5) * length) / PDQ_GRID), length, window) for i in range(PDQ_GRID)]
    )
    return _band(_folded(rows, scale, reversed_))


def _folded(rows: npt.NDArray[np.float64], scale: int, reversed_: bool) -> npt.NDArray[np.float64]:
    """Weights over a full-size axis (columns of ``rows``) summed over the
    ``scale``-pixel blocks one decoded pixel stands for; the blocks are aligned
    to the far end of the axis when it runs backwards (``reversed_``)."""
    length = rows.shape[1]
    reduced = -(-length // scale)
    padded = np.zeros((rows.shape[0], reduced * scale))
    if reversed_:
        padded[:, reduced * scale - length :] = rows
    else:
        padded[:, :length] = rows
    folded: npt.NDArray[np.float64] = padded.reshape(rows.shape[0], reduced, scale).sum(axis=2)
    return folded


def _band(weights: npt.NDArray[np.float64]) -> tuple[IntArray, FloatArray]:
    """A banded matrix as (indices, weights), 64 x k each: every row's span of
    non-zero columns, all widened to the widest span k."""
    nonzero = weights != 0
    first = nonzero.argmax(axis=1)
    last = weights.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    width = int((last - first).max())
    first = np.minimum(first, weights.shape[1] - width)
    indices = first[:, None] + np.arange(width)
    return indices, np.take_along_axis(weights, indices, axis=1).astype(np.float32)


def pdq_luma_64(
    rgb: npt.NDArray[np.uint8],
    full_size: tuple[int, int],
    scale: int = 1,
    reversed_: tuple[bool, bool] = (False, False),
) -> FloatArray:
    """The 64 x 64 buffer PDQ computes from the full-size image, from ``rgb``
    (rows x columns x 3, the displayed image decoded at 1/``scale``).

    ``full_size``: (rows, columns) of the displayed image at full size;
    ``reversed_``: ORIENTATION_REVERSED of the EXIF orientation applied.
    """
    return pdq_64_of_luma(luma_of(rgb), full_size, scale, reversed_)


def luma_of(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    """BT.601 luma of an RGB array (PDQ's, and Pillow's ``convert("L")``
    without its rounding to 8 bits)."""
    red, green, blue = (rgb[..., channel] for channel in range(3))
    luma: FloatArray = red * _LUMA[0] + green * _LUMA[1] + blue * _LUMA[2]
    return luma


def pdq_64_of_luma(
    luma: FloatArray,
    full_size: tuple[int, int],
    scale: int = 1,
    reversed_: tuple[bool, bool] = (False, False),
) -> FloatArray:
    """``pdq_luma_64`` from the luma (``luma_of``) of the reduced decode."""
    rows_index, rows_weight = pdq_axis(full_size[0], scale, reversed_[0])
    cols_index, cols_weight = pdq_axis(full_size[1], scale, reversed_[1])
    # Banded products, not matrix products: no BLAS call, so no BLAS thread pool
    # competing with the process pool of `optout hash` for the same cores.
    along_rows = np.einsum("ik,ikj->ij", rows_weight, luma[rows_index])
    result: FloatArray = np.einsum("jk,ijk->ij", cols_weight, along_rows[:, cols_index])
    return result


@lru_cache(maxsize=1)
def _pdq_dct_matrix() -> FloatArray:
    """PDQ's 16 x 64 DCT matrix (dct_matrix_64 in pdqhashing.cpp; no DC row)."""
    i = np.arange(1, 17, dtype=np.float64)[:, None]
    j = np.arange(PDQ_GRID, dtype=np.float64)[None, :]
    matrix = np.sqrt(2.0 / PDQ_GRID) * np.cos(np.pi / 2.0 / PDQ_GRID * i * (2 * j + 1))
    return matrix.astype(np.float32)


def pdq_from_64(buffer: FloatArray) -> tuple[str, int]:
    """PDQ hash (64 hex, most significant bit first) and quality of a 64 x 64
    luma buffer: pdqFloat256FromFloatLuma's steps after the downsampling."""
    dct = _pdq_dct_matrix()
    coefficients = (dct @ buffer @ dct.T).reshape(-1)
    # torben() of 256 values is the 128th smallest (the lower median).
    median = np.partition(coefficients, 127)[127]
    # Bit i·16 + j is coefficient (i, j); pdqhash lists bit 255 first.
    bits = (coefficients > median)[::-1]
    return np.packbits(bits).tobytes().hex(), _pdq_quality(buffer)


def _pdq_quality(buffer: FloatArray) -> int:
    """pdqImageDomainQualityMetric: the sum of significant gradients, scaled."""
    gradients = 0
    for difference in (buffer[:-1, :] - buffer[1:, :], buffer[:, :-1] - buffer[:, 1:]):
        # C's `int d = ((u - v) * 100) / 255` truncates towards zero.
        gradients += int(np.abs(np.trunc(difference * 100 / 255).astype(np.int64)).sum())
    return min(100, gradients // 90)


def pdq_of_reduced(
    rgb: npt.NDArray[np.uint8],
    full_size: tuple[int, int],
    scale: int = 1,
    reversed_: tuple[bool, bool] = (False, False),
) -> tuple[str, int]:
    """PDQ hash and quality of the full-size image, from its decode at 1/``scale``."""
    if min(full_size) < PDQ_MIN_DIMENSION:
        return "0" * 64, 0
    return pdq_from_64(pdq_luma_64(rgb, full_size, scale, reversed_))


# --- pHash --------------------------------------------------------------------


def phash_with_margin(image: Image.Image) -> tuple[str, float]:
    """``str(imagehash.phash(image))``, and the spread of the four DCT coefficients
    around the median (the 31st to the 34th smallest of 64).

    A hash bit is "coefficient > median". Noise in the coefficients (a reduced
    decode) can swap a coefficient just below the median with one just above:
    2 bits. Changing 4 bits takes two coefficients from below the 31st to pass
    two from above the 34th, so a small margin means "more than 2 bits may move".
    """
    # Imported on first use, as imagehash does: scipy.fftpack takes ~0.2 s to import.
    import scipy.fftpack

    small = image.convert("L").resize(
        (PHASH_IMAGE_SIZE, PHASH_IMAGE_SIZE), Image.Resampling.LANCZOS
    )
    pixels = np.asarray(small)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    return _phash_bits(dct[:PHASH_SIZE, :PHASH_SIZE].reshape(-1))


def _lanczos(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Pillow's Lanczos filter (a = 3): sinc(x) sinc(x / 3) on [-3, 3)."""
    inside = (x >= -3.0) & (x < 3.0)
    return np.where(inside, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _lanczos_rows(length: int, size: int) -> npt.NDArray[np.float64]:
    """Pillow's resampling weights from ``length`` pixels to ``size``
    (precompute_coeffs in Resample.c, Lanczos, downscaling): size x length."""
    scale = length / size
    support = 3.0 * max(scale, 1.0)
    rows = np.zeros((size, length))
    for out in range(size):
        centre = (out + 0.5) * scale
        start = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), length)
        offsets = (np.arange(start, stop, dtype=np.float64) - centre + 0.5) / max(scale, 1.0)
        weights = _lanczos(offsets)
        total = weights.sum()
        rows[out, start:stop] = weights / total if total != 0 else weights
    return rows


@lru_cache(maxsize=256)
def phash_axis(length: int, scale: int = 1, reversed_: bool = False) -> FloatArray:
    """The 8 low-frequency rows of imagehash.phash along one axis of ``length``
    full-size pixels, over the axis decoded at 1/``scale``: scipy's unnormalised
    DCT-II of Pillow's Lanczos resize to 32, with the weights of the ``scale``
    full-size pixels behind each decoded pixel summed (as ``pdq_axis`` does):
    PHASH_SIZE x ceil(length / scale)."""
    n = np.arange(PHASH_IMAGE_SIZE)
    k = np.arange(PHASH_SIZE)[:, None]
    dct = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * PHASH_IMAGE_SIZE))
    folded = _folded(dct @ _lanczos_rows(length, PHASH_IMAGE_SIZE), scale, reversed_)
    weights: FloatArray = folded.astype(np.float32)
    return weights


def phash_of_luma(
    luma: FloatArray,
    full_size: tuple[int, int],
    scale: int = 1,
    reversed_: tuple[bool, bool] = (False, False),
) -> tuple[str, float]:
    """pHash of the full-size image and its median margin (``phash_with_margin``),
    from the luma (``luma_of``) of its decode at 1/``scale``.

    ``imagehash.phash`` of the reduced decode would resize with the Lanczos
    filter of another size; here the full size's filter is folded onto the
    decoded pixels, in floating point (without Pillow's rounding to 8 bits
    after the grey conversion and after each pass), and the 8 x 8 low
    frequencies come out of two small products: about 0.3 ms for a 512 x 384
    decode against 1.2 ms for ``phash_with_margin``.
    """
    rows = phash_axis(full_size[0], scale, reversed_[0])
    cols = phash_axis(full_size[1], scale, reversed_[1])
    # einsum, not a matrix product: no BLAS thread pool competing with the
    # process pool of `optout hash` for the same cores.
    low = np.einsum("ij,kj->ik", np.einsum("ik,kj->ij", rows, luma), cols).reshape(-1)
    return _phash_bits(low)


def _phash_bits(low: npt.NDArray[np.floating]) -> tuple[str, float]:
    bits = low > np.median(low)
    ordered = np.sort(low)
    middle = low.size // 2
    margin = float(ordered[middle + 1] - ordered[middle - 2])
    return np.packbits(bits).tobytes().hex(), margin
