"""Every way a photo gets registered stores its local keypoints
(``Photo.keypoints``, ``registry.keypoints``): the photo's own set and its
mirror image's, from web and API uploads of the photo, from `optout hash`
output uploaded as it is, and from hashes sent with the ``keypoints`` of the
photo (top level) and of its mirror image (the ``mirror`` variant). Bad
keypoints are that item's error; the other items are registered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from PIL import Image, ImageOps
from rest_framework.test import APIClient

from registry import hashing, keypoints, uploads, variants
from registry.models import Creator, Photo
from tests.images import encode, skimage_photo
from tests.web import hashes_file_posted, signed_in, upload

pytestmark = pytest.mark.django_db

OPTOUT = Path(sys.executable).parent / "optout"
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64
PDQ = "0123456789abcdef" * 4
PHASH = "fedcba9876543210"
# An edited copy keeps dozens of keypoints in one arrangement; the decision
# rule asks for 8 (docs/matching.md, "Keypoints: the geometric check").
AGREEING = 8


def photo_jpeg(name: str) -> bytes:
    return encode(skimage_photo(name), "JPEG", quality=90)


def mirrored_repost(name: str) -> bytes:
    """A mirrored, shrunk and recompressed copy of a photo: a repost."""
    image = ImageOps.mirror(skimage_photo(name))
    small = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
    return encode(small, "JPEG", quality=75)


def own_set(data: bytes) -> bytes:
    return keypoints.keypoints_of(hashing.decode(data))


def mirror_set(data: bytes) -> bytes:
    return keypoints.keypoints_of(ImageOps.mirror(hashing.decode(data)))


def stored_keypoints(photo: Photo) -> bytes:
    return bytes(photo.keypoints)


def assert_two_sets_of(photo: Photo, data: bytes, repost: bytes) -> None:
    """The photo keeps its own keypoints and its mirror image's, as
    ``photo_keypoints_of`` writes them; a mirrored repost agrees with them."""
    stored = stored_keypoints(photo)
    assert len(keypoints.decode_sets(stored)) == 2
    assert stored == keypoints.photo_keypoints_of(hashing.decode(data))
    assert keypoints.inliers(own_set(repost), stored) >= AGREEING
    # The mirror image's set is what lets the mirrored repost agree.
    assert keypoints.inliers(own_set(repost), own_set(data)) < AGREEING


# --- hashing a photo with its variants ----------------------------------------------


def test_hash_bytes_with_variants_gives_the_photos_keypoints_and_the_mirror_variants() -> None:
    data = photo_jpeg("coffee")

    hashes, derived = variants.hash_bytes_with_variants(data)

    assert keypoints.from_text(hashes.keypoints) == own_set(data)
    assert hashes == hashing.hash_bytes(data)
    by_name = {item.name: item for item in derived}
    assert keypoints.from_text(by_name["mirror"].keypoints) == mirror_set(data)
    assert [item.name for item in derived if item.keypoints] == ["mirror"]
    assert variants.photo_keypoints(hashes.keypoints, derived) == (
        keypoints.photo_keypoints_of(hashing.decode(data))
    )


def big_jpeg() -> bytes:
    """Large enough for the fast path's reduced decode, whose keypoints then
    differ from the full decode's."""
    return encode(skimage_photo("astronaut").resize((1600, 1600)), "JPEG", quality=90)


def test_hash_bytes_with_variants_fast_keeps_both_keypoint_sets_of_the_full_decode() -> None:
    data = big_jpeg()
    assert keypoints.from_text(hashing.hash_bytes(data, fast=True).keypoints) != own_set(data)

    hashes, derived = variants.hash_bytes_with_variants(data, fast=True)

    assert keypoints.from_text(hashes.keypoints) == own_set(data)
    mirror = next(item for item in derived if item.name == "mirror")
    assert keypoints.from_text(mirror.keypoints) == mirror_set(data)


# --- uploads of photo files -----------------------------------------------------------


def test_web_upload_stores_the_keypoints_of_the_photo_and_its_mirror_image(
    client: Client,
) -> None:
    creator = signed_in(client)
    data = photo_jpeg("coffee")

    response = client.post("/me/photos/upload/", {"photos": [upload("coffee.jpg", data)]})

    assert response.status_code == 200
    assert_two_sets_of(Photo.objects.get(creator=creator), data, mirrored_repost("coffee"))


def test_api_file_upload_stores_the_keypoints_of_the_photo_and_its_mirror_image(
    api: APIClient, creator: Creator
) -> None:
    data = photo_jpeg("astronaut")

    response = api.post(
        "/api/v1/me/photos", {"files": [upload("astronaut.jpg", data)]}, format="multipart"
    )

    assert response.status_code == 201
    assert response.json()["registered"] == 1
    assert_two_sets_of(Photo.objects.get(creator=creator), data, mirrored_repost("astronaut"))


# --- hash-only registrations -----------------------------------------------------------


def item_of(data: bytes, *, mirror_keypoints: bool = True, **overrides: Any) -> dict[str, Any]:
    """A hashes item as `optout hash` writes it for the photo ``data``."""
    hashes, derived = variants.hash_bytes_with_variants(data)
    items = [item.as_dict() for item in derived]
    if not mirror_keypoints:
        for item in items:
            item.pop("keypoints", None)
    return {**hashes.as_dict(), "variants": items, **overrides}


def test_api_json_hashes_store_own_and_mirror_keypoints_or_own_only(
    api: APIClient, creator: Creator
) -> None:
    coffee, chelsea = photo_jpeg("coffee"), photo_jpeg("chelsea")
    chelsea_hashes = hashing.hash_bytes(chelsea)

    response = api.post(
        "/api/v1/me/photos",
        {
            "hashes": [
                item_of(coffee),
                {"sha256": chelsea_hashes.sha256, "keypoints": chelsea_hashes.keypoints},
                {"sha256": SHA_A, "pdq": PDQ, "phash": PHASH},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    assert (response.json()["registered"], response.json()["errors"]) == (3, 0)
    photos = {photo.sha256: photo for photo in Photo.objects.filter(creator=creator)}
    assert_two_sets_of(photos[hashing.sha256_hex(coffee)], coffee, mirrored_repost("coffee"))
    # The photo's own set only: what the sender knew.
    assert stored_keypoints(photos[chelsea_hashes.sha256]) == own_set(chelsea)
    assert len(keypoints.decode_sets(stored_keypoints(photos[chelsea_hashes.sha256]))) == 1
    # None: unknown.
    assert stored_keypoints(photos[SHA_A]) == b""


def _set_of(count: int) -> bytes:
    return keypoints.KEYPOINTS_MAGIC + bytes([count]) + bytes(34 * count)


def _mirror(keypoints_value: object) -> dict[str, Any]:
    return {
        "name": "mirror",
        "pdq": PDQ,
        "pdq_quality": 90,
        "phash": PHASH,
        "keypoints": keypoints_value,
    }


GOOD_SET = keypoints.to_text(_set_of(3))
BAD_KEYPOINTS: list[tuple[dict[str, Any], str]] = [
    ({"keypoints": "not base64!"}, "keypoints: not base64"),
    # Cut short: 3 keypoints announced, 2 sent.
    (
        {"keypoints": keypoints.to_text(_set_of(3)[:-34])},
        "keypoints: keypoints cut short or too many",
    ),
    (
        {"keypoints": keypoints.to_text(b"XX\x00")},
        "keypoints: not keypoints written by optout hash",
    ),
    # Two sets at the top level: the mirror image's go in its variant.
    (
        {"keypoints": keypoints.to_text(_set_of(3) + _set_of(3))},
        "keypoints: more keypoint sets than expected",
    ),
    ({"keypoints": 12}, "keypoints must be the base64 text optout hash writes"),
    (
        {"keypoints": GOOD_SET, "variants": [_mirror("AAAA")]},
        "variants[0] (mirror): keypoints: not keypoints written by optout hash",
    ),
    (
        {"variants": [_mirror(GOOD_SET)]},
        "variants (mirror): keypoints need the photo's own keypoints (the keypoints key) "
        "next to them",
    ),
    (
        {
            "keypoints": GOOD_SET,
            "variants": [
                {
                    "name": "crop_centre_90",
                    "pdq": PDQ,
                    "pdq_quality": 90,
                    "phash": PHASH,
                    "keypoints": GOOD_SET,
                }
            ],
        },
        "variants[0] (crop_centre_90): keypoints are kept for the mirror variant only",
    ),
]


@pytest.mark.parametrize(("fields", "reason"), BAD_KEYPOINTS)
def test_api_json_hashes_with_bad_keypoints_are_that_items_error(
    api: APIClient, creator: Creator, fields: dict[str, Any], reason: str
) -> None:
    response = api.post(
        "/api/v1/me/photos",
        {
            "hashes": [
                {"sha256": SHA_A, "keypoints": GOOD_SET},
                {"sha256": SHA_B, "pdq": PDQ, **fields},
                {"sha256": SHA_C, "keypoints": GOOD_SET, "variants": [_mirror(GOOD_SET)]},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["registered"], body["errors"]) == (2, 1)
    assert body["results"][1] == {"index": 1, "status": "error", "error": reason, "code": "invalid"}
    photos = {photo.sha256: photo for photo in Photo.objects.filter(creator=creator)}
    assert set(photos) == {SHA_A, SHA_C}
    assert stored_keypoints(photos[SHA_A]) == _set_of(3)
    assert stored_keypoints(photos[SHA_C]) == _set_of(3) + _set_of(3)


def test_hashes_jsonl_with_bad_keypoints_reports_the_line_and_registers_the_others(
    client: Client,
) -> None:
    creator = signed_in(client)
    data = photo_jpeg("rocket")
    lines = [
        json.dumps({"sha256": SHA_A, "keypoints": "%%%"}),
        json.dumps(item_of(data, filename="rocket.jpg")),
        json.dumps({"sha256": SHA_B, "keypoints": keypoints.to_text(_set_of(2)[:-1])}),
    ]

    response = hashes_file_posted(client, "\n".join(lines).encode())

    assert response.status_code == 200
    result = response.context["hashes_result"]
    assert (result.total, result.registered, result.rejected) == (3, 1, 2)
    assert [(row.line, row.reason) for row in result.rows] == [
        (1, "keypoints: not base64"),
        (3, "keypoints: keypoints cut short or too many"),
    ]
    assert_two_sets_of(Photo.objects.get(creator=creator), data, mirrored_repost("rocket"))


def test_hash_line_validate_keeps_the_keypoints_as_the_photo_stores_them() -> None:
    data = photo_jpeg("chelsea")

    line = uploads.hash_line_validate(item_of(data))
    own_only = uploads.hash_line_validate(item_of(data, mirror_keypoints=False))
    blank = uploads.hash_line_validate({"sha256": SHA_A, "keypoints": "", "variants": None})

    assert line.keypoints == own_set(data) + mirror_set(data)
    assert own_only.keypoints == own_set(data)
    assert blank.keypoints == b""


def test_openapi_schema_documents_the_keypoints_of_a_hashes_item(api: APIClient) -> None:
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]

    item = schemas["PhotoHashItemRequest"]
    variant = schemas["PhotoVariantHashesRequest"]

    assert item["properties"]["keypoints"]["type"] == "string"
    assert variant["properties"]["keypoints"]["type"] == "string"
    assert "keypoints" not in item["required"]
    assert "keypoints" not in variant["required"]
    assert "base64" in item["properties"]["keypoints"]["description"]


# --- optout hash -> upload --------------------------------------------------------------


def optout_hash(root: Path, output: Path, *extra: str) -> list[dict[str, Any]]:
    assert OPTOUT.exists(), f"{OPTOUT} is missing: run `pip install -e '.[dev]'`"
    run = subprocess.run(
        [str(OPTOUT), "hash", str(root), "-o", str(output), "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(text) for text in output.read_text().splitlines()]


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "coffee.jpg").write_bytes(photo_jpeg("coffee"))
    (root / "rocket.png").write_bytes(encode(skimage_photo("rocket"), "PNG"))
    return root


def test_optout_hash_writes_the_photos_keypoints_and_the_mirror_variants(
    photo_folder: Path, tmp_path: Path
) -> None:
    lines = optout_hash(photo_folder, tmp_path / "hashes.jsonl")

    for line in lines:
        data = (photo_folder / line["path"]).read_bytes()
        assert keypoints.from_text(line["keypoints"]) == own_set(data)
        mirror = next(item for item in line["variants"] if item["name"] == "mirror")
        assert keypoints.from_text(mirror["keypoints"]) == mirror_set(data)
        # The other variants carry no keypoints: they are matched by one
        # transform of the photo's own.
        assert [item["name"] for item in line["variants"] if "keypoints" in item] == ["mirror"]


def test_optout_hash_output_uploads_as_is_with_both_keypoint_sets(
    client: Client, photo_folder: Path, tmp_path: Path
) -> None:
    creator = signed_in(client)
    output = tmp_path / "hashes.jsonl"
    lines = optout_hash(photo_folder, output)

    response = hashes_file_posted(client, output.read_bytes())

    assert response.status_code == 200
    assert response.context["hashes_result"].registered == 2
    coffee = next(line for line in lines if line["path"] == "coffee.jpg")
    photo = Photo.objects.get(creator=creator, sha256=coffee["sha256"])
    assert_two_sets_of(photo, photo_jpeg("coffee"), mirrored_repost("coffee"))
    rocket = next(line for line in lines if line["path"] == "rocket.png")
    data = (photo_folder / "rocket.png").read_bytes()
    assert stored_keypoints(Photo.objects.get(creator=creator, sha256=rocket["sha256"])) == (
        keypoints.photo_keypoints_of(hashing.decode(data))
    )


def test_optout_hash_no_variants_registers_the_photos_own_keypoints_only(
    api: APIClient, creator: Creator, photo_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "hashes.jsonl"
    lines = optout_hash(photo_folder, output, "--no-variants")

    response = api.post(
        "/api/v1/me/photos",
        {"hashes_file": upload("hashes.jsonl", output.read_bytes(), "application/jsonl")},
        format="multipart",
    )

    assert all("variants" not in line and line["keypoints"] for line in lines)
    assert response.status_code == 201
    assert response.json()["registered"] == 2
    for line in lines:
        photo = Photo.objects.get(creator=creator, sha256=line["sha256"])
        assert stored_keypoints(photo) == own_set((photo_folder / line["path"]).read_bytes())


def test_optout_hash_fast_output_registers_both_keypoint_sets(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    data = big_jpeg()
    (root / "big.jpg").write_bytes(data)
    output = tmp_path / "hashes.jsonl"
    optout_hash(root, output, "--fast")

    parsed = list(uploads.hashes_jsonl_parse(output.read_bytes(), max_lines=10))

    assert len(parsed) == 1
    line = parsed[0][1]
    assert isinstance(line, uploads.HashLine), line
    assert line.keypoints == keypoints.photo_keypoints_of(hashing.decode(data))
