"""Test images, generated in code or taken from scikit-image (which ships them)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

# Photographs bundled inside the scikit-image wheel (no download).
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "camera",
    "retina",
)


def skimage_photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def generated_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A distinct, textured image per seed (smooth blobs plus noise: PDQ quality 100)."""
    rng = np.random.default_rng(seed)
    width, height = size
    small = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    base = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 12, size=(height, width, 3))
    pixels = np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def jpeg_bytes(seed: int, size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    return encode(generated_photo(seed, size), "JPEG", quality=quality)


def meme_captions(image: Image.Image) -> Image.Image:
    """White captions on black bars across the top and the bottom (each bar an
    eighth of the height): they move the photo's own hashes far, not its
    middle band."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    bar = out.height // 8
    font = ImageFont.load_default(size=bar * 2 // 3)
    for text, top in (("WHEN THE PHOTO", 0), ("GETS REPOSTED", out.height - bar)):
        draw.rectangle((0, top, out.width, top + bar), fill="black")
        width = draw.textlength(text, font=font)
        draw.text(((out.width - width) / 2, top + bar // 8), text, font=font, fill="white")
    return out
