"""Local keypoints of a photo: the geometric check that confirms a perceptual
match (docs/matching.md, "Keypoints: the geometric check").

PDQ, pHash, the colour signature and the layout all describe a photo as a
whole; two different photographs of similar layout can agree on all of them.
What they do not share is the arrangement of their corners: ORB keypoints
(FAST corners with 256-bit binary descriptors, OpenCV) of the luminance,
matched between a record and a registered photo, count only when they agree
on one similarity transform (RANSAC). An edited copy — resized, recompressed,
brightened, captioned, cropped by a few per cent, rotated — keeps dozens of
them; two different photographs share at most a handful.

What is stored and sent: per keypoint its position at the working size
(longest side ``SIZE`` px, one byte per coordinate) and its descriptor (32
bytes) — 34 bytes, at most ``FEATURES`` keypoints, ``KEYPOINTS_MAGIC`` and a
count in front. A registered photo keeps two sets, its own and its mirror
image's (the descriptors are not mirror-symmetric). Neither the descriptors
(comparisons of pairs of pixels around each corner of a 256-pixel copy) nor
their positions are the photo's pixels.

Deterministic: the same image gives the same bytes, and OpenCV's RANSAC
starts from a fixed seed, so a decision can be replayed.
"""

from __future__ import annotations

import base64
import binascii
import struct

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

cv2.setNumThreads(1)

# Working size: the longest side, in pixels.
SIZE = 256
# At most this many keypoints per set (the strongest corners).
FEATURES = 128
# FAST threshold: 5 finds corners on the low-contrast photos 10 leaves bare
# (benchmarks/bench_keypoints.py).
FAST_THRESHOLD = 5
EDGE_THRESHOLD = 15
PATCH_SIZE = 15
# A descriptor pair farther apart than this many bits is no candidate.
MATCH_BITS = 64
# RANSAC: a keypoint agrees with the transform within this many pixels.
RANSAC_PX = 4.0
RANSAC_ITERATIONS = 500
# The transform's scale: an edited copy is not shrunk or enlarged beyond this
# relative to the registered photo at the working size.
SCALE_RANGE = (0.25, 4.0)

KEYPOINTS_MAGIC = b"K1"
_POINT = 2
_DESCRIPTOR = 32
_ITEM = _POINT + _DESCRIPTOR
# The largest encoded set, and the largest a registered photo holds (two sets).
MAX_SET_BYTES = len(KEYPOINTS_MAGIC) + 1 + FEATURES * _ITEM
MAX_PHOTO_BYTES = 2 * MAX_SET_BYTES
# The same in their text form (base64: 4 characters per 3 bytes, padded).
MAX_SET_TEXT = (MAX_SET_BYTES + 2) // 3 * 4
MAX_PHOTO_TEXT = (MAX_PHOTO_BYTES + 2) // 3 * 4


# The reason keypoints that are not text (a number, a list…) are refused, on
# every path that reads them: records, hashes files, their mirror variant.
NOT_TEXT = "keypoints must be the base64 text optout hash writes"


class KeypointsInvalid(ValueError):
    """Keypoints bytes that are not what ``keypoints_of`` writes."""


Keypoints = tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]


def keypoints_of(image: Image.Image) -> bytes:
    """The keypoints of an image (any mode; its luminance), encoded."""
    grey = image if image.mode == "L" else image.convert("L")
    scale = SIZE / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    pixels = np.asarray(grey.resize(size, Image.Resampling.BILINEAR), np.uint8)
    orb = cv2.ORB.create(
        nfeatures=FEATURES,
        edgeThreshold=EDGE_THRESHOLD,
        patchSize=PATCH_SIZE,
        fastThreshold=FAST_THRESHOLD,
    )
    found, descriptors = orb.detectAndCompute(pixels, None)
    if descriptors is None or not found:
        return KEYPOINTS_MAGIC + b"\x00"
    found, descriptors = found[:FEATURES], descriptors[:FEATURES]
    points = np.clip(np.floor([k.pt for k in found]), 0, SIZE - 1).astype(np.uint8)
    body = np.concatenate([points, descriptors.astype(np.uint8)], axis=1)
    return KEYPOINTS_MAGIC + struct.pack("B", len(found)) + body.tobytes()


def photo_keypoints_of(image: Image.Image) -> bytes:
    """What a registered photo keeps: its keypoints and its mirror image's."""
    grey = image if image.mode == "L" else image.convert("L")
    return keypoints_of(grey) + keypoints_of(ImageOps.mirror(grey))


def _split(data: bytes) -> list[Keypoints]:
    sets: list[Keypoints] = []
    at = 0
    while at < len(data):
        if data[at : at + len(KEYPOINTS_MAGIC)] != KEYPOINTS_MAGIC or at + 3 > len(data):
            raise KeypointsInvalid("not keypoints written by optout hash")
        count = data[at + 2]
        end = at + 3 + count * _ITEM
        if count > FEATURES or end > len(data):
            raise KeypointsInvalid("keypoints cut short or too many")
        body = np.frombuffer(data[at + 3 : end], np.uint8).reshape(count, _ITEM)
        sets.append(
            (body[:, :_POINT].astype(np.float32) + 0.5, np.ascontiguousarray(body[:, _POINT:]))
        )
        at = end
    return sets


def decode_sets(data: bytes) -> list[Keypoints]:
    """The keypoint sets in ``data`` (one for a record, two for a registered
    photo). Raises KeypointsInvalid."""
    if not data:
        raise KeypointsInvalid("no keypoints")
    return _split(data)


def count(data: bytes) -> int:
    """Keypoints in the first set of ``data`` (0 when it holds none)."""
    return len(decode_sets(data)[0][0])


def to_text(data: bytes) -> str:
    """The form JSON carries: base64."""
    return base64.b64encode(data).decode("ascii")


def from_text(text: str, *, photo: bool = False) -> bytes:
    """Keypoints from their base64 form, checked: one set (a record) or, with
    ``photo``, one or two (a registered photo and its mirror image). Raises
    KeypointsInvalid."""
    if len(text) > (MAX_PHOTO_TEXT if photo else MAX_SET_TEXT):
        raise KeypointsInvalid("too long for keypoints")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise KeypointsInvalid("not base64") from error
    sets = decode_sets(data)
    if len(sets) > (2 if photo else 1):
        raise KeypointsInvalid("more keypoint sets than expected")
    return data


def inliers(record: bytes, photo: bytes) -> int:
    """The most keypoints of ``record`` that agree with one similarity
    transform onto a set of ``photo`` (the photo or its mirror image)."""
    q_points, q_desc = decode_sets(record)[0]
    best = 0
    if len(q_desc) < 3:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    for r_points, r_desc in decode_sets(photo):
        if len(r_desc) < 3:
            continue
        matches = [m for m in matcher.match(q_desc, r_desc) if m.distance <= MATCH_BITS]
        if len(matches) < 3:
            continue
        src = q_points[[m.queryIdx for m in matches]]
        dst = r_points[[m.trainIdx for m in matches]]
        transform, mask = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=RANSAC_PX,
            maxIters=RANSAC_ITERATIONS,
        )
        if transform is None:
            continue
        scale = float(np.hypot(transform[0, 0], transform[1, 0]))
        if SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            best = max(best, int(mask.sum()))
    return best
