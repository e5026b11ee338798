"""Records a pipeline submits: validation into Record, or Invalid with a reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from registry import keypoints as keypoints_format
from registry.claims import ClaimInvalid, normalize_url
from registry.colour import COLOUR_HEX_LENGTH
from registry.hashing import BAND_HEX_LENGTH

MAX_ID_LENGTH = 512
_HASH_LENGTHS = {"sha256": 64, "pdq": 64, "phash": 16}
_HASH_FORMS = {kind: re.compile(f"[0-9a-f]{{{length}}}") for kind, length in _HASH_LENGTHS.items()}
_COLOUR_FORM = re.compile(f"[0-9a-f]{{{COLOUR_HEX_LENGTH}}}")
_BAND_FORM = re.compile(f"[0-9a-f]{{{BAND_HEX_LENGTH}}}")


@dataclass(frozen=True)
class Record:
    id: str
    sha256: str = ""
    pdq: str = ""
    phash: str = ""
    url: str = ""  # normalised
    row: int | None = None
    # PDQ quality (0-100) when the record states it: the registry's default
    # rule then applies instead of the stricter one for bare hashes.
    pdq_quality: int | None = None
    # The image's colour signature (registry.colour, 66 hex digits) when the
    # record carries one: it confirms (or refutes) a perceptual match.
    colour: str = ""
    # The hashes of the image's middle band (registry.hashing.band_of, 82 hex
    # digits) when the record carries them: they find captioned copies.
    band: str = ""
    # The image's keypoints (registry.keypoints, decoded from base64) when the
    # record carries them: they confirm a perceptual match geometrically.
    keypoints: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Invalid:
    id: str | None
    reason: str
    row: int | None = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    return str(value).strip()


def record_parse(raw: Any, row: int | None = None, *, exact_id: bool = False) -> Record | Invalid:
    """Validate one record (a mapping with id and any of sha256/pdq/phash/url,
    optionally pdq_quality, colour, band and keypoints). The id is trimmed of surrounding
    blanks (a manifest's ``a, b``), unless ``exact_id``: a string id is then
    kept as sent (a lookup's results are matched to its records by id); its
    length and whether it is blank are judged trimmed either way."""
    if not isinstance(raw, dict):
        return Invalid(None, "record must be an object", row)
    raw_id = raw.get("id")
    trimmed = _text(raw_id)
    if raw_id is None or isinstance(raw_id, bool | dict | list) or trimmed == "":
        return Invalid(None, "id is required", row)
    if len(trimmed) > MAX_ID_LENGTH:
        return Invalid(trimmed[:64], f"id is longer than {MAX_ID_LENGTH} characters", row)
    record_id = raw_id if exact_id and isinstance(raw_id, str) else trimmed
    values: dict[str, str] = {}
    for kind, length in _HASH_LENGTHS.items():
        value = _text(raw.get(kind)).lower()
        if value and not _HASH_FORMS[kind].fullmatch(value):
            return Invalid(record_id, f"{kind} must be {length} hexadecimal digits", row)
        values[kind] = value
    quality = _quality(raw.get("pdq_quality"))
    if isinstance(quality, str):
        return Invalid(record_id, quality, row)
    if quality is not None and not values["pdq"]:
        return Invalid(record_id, "pdq_quality needs a pdq", row)
    colour = _text(raw.get("colour")).lower()
    if colour and not _COLOUR_FORM.fullmatch(colour):
        return Invalid(record_id, f"colour must be {COLOUR_HEX_LENGTH} hexadecimal digits", row)
    if colour and not (values["pdq"] or values["phash"]):
        return Invalid(record_id, "colour needs a pdq or a phash", row)
    band = _text(raw.get("band")).lower()
    if band and not _BAND_FORM.fullmatch(band):
        return Invalid(record_id, f"band must be {BAND_HEX_LENGTH} hexadecimal digits", row)
    if band and int(band[-2:], 16) > 100:
        return Invalid(record_id, "band: its last two digits (a PDQ quality) exceed 100", row)
    if band and not (values["pdq"] or values["phash"]):
        return Invalid(record_id, "band needs a pdq or a phash", row)
    keypoints = _keypoints(raw.get("keypoints"))
    if isinstance(keypoints, str):
        return Invalid(record_id, keypoints, row)
    if keypoints and not (values["pdq"] or values["phash"]):
        return Invalid(record_id, "keypoints need a pdq or a phash", row)
    url = _text(raw.get("url"))
    if url:
        try:
            url = normalize_url(url)
        except ClaimInvalid as error:
            return Invalid(record_id, f"url: {error}", row)
    if not (url or any(values.values())):
        return Invalid(record_id, "record has none of sha256, pdq, phash, url", row)
    return Record(
        id=record_id,
        url=url,
        row=row,
        pdq_quality=quality,
        colour=colour,
        band=band,
        keypoints=keypoints,
        **values,
    )


def _keypoints(value: Any) -> bytes | str:
    """A record's keypoints: b"" when absent, the bytes (the record's own set
    first; the mirror image's set that ``optout hash`` may add is allowed and
    unused), or the reason they are invalid."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return b""
    if not isinstance(value, str):
        return keypoints_format.NOT_TEXT
    try:
        return keypoints_format.from_text(value.strip(), photo=True)
    except keypoints_format.KeypointsInvalid as error:
        return f"keypoints: {error}"


def _quality(value: Any) -> int | str | None:
    """A PDQ quality: None when absent, the integer, or the reason it is invalid."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        return "pdq_quality must be an integer from 0 to 100"
    return value
