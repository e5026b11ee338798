"""Every registered photo carries its derived variants (``Photo.variants``) and
the colour signatures of itself and of its variants (``Photo.colour``,
``Photo.variant_colours``), on every registration path: web and API uploads
(files and ZIPs), hashes JSONL, JSON hashes, and the output of `optout hash`
uploaded as it is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from registry import hashing, models, variants
from registry.models import Creator, Photo
from registry.variants import Variant
from tests.images import encode, generated_photo, skimage_photo
from tests.web import hashes_file_posted, signed_in, upload

pytestmark = pytest.mark.django_db

OPTOUT = Path(sys.executable).parent / "optout"
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64
PDQ = "0123456789abcdef" * 4
PHASH = "fedcba9876543210"
COLOUR = "5a" + "0af6" * 16


def photo_jpeg(name: str = "coffee") -> bytes:
    return encode(skimage_photo(name), "JPEG", quality=90)


def expected_variants(data: bytes) -> list[Variant]:
    """What the registry must store: the default variants of the decoded photo
    but the first, the original (the photo's own hashes)."""
    computed = variants.variants_compute(hashing.decode(data))
    assert computed[0].name == variants.ORIGINAL
    return computed[1:]


def without_keypoints(items: list[Variant]) -> list[Variant]:
    """The variants as ``Photo.variants`` stores them: the mirror variant's
    keypoints are kept in ``Photo.keypoints`` (tests/test_keypoints_registration.py)."""
    return [replace(item, keypoints="") for item in items]


def stored(photo: Photo) -> list[Variant]:
    """The variants stored with a photo, with their colours (if any)."""
    return variants.colours_unpack(
        bytes(photo.variant_colours), variants.variants_unpack(bytes(photo.variants))
    )


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def variant_dicts(data: bytes) -> list[dict[str, Any]]:
    return [variant.as_dict() for variant in expected_variants(data)]


def test_derived_variants_are_the_default_variants_but_the_original() -> None:
    assert variants.DEFAULT_VARIANTS[1:] == variants.DERIVED_VARIANTS
    assert variants.DEFAULT_VARIANTS[0] == variants.ORIGINAL
    assert len(variants.DERIVED_VARIANTS) == 16
    assert models.PACKED_VARIANT_SIZE == variants.PACKED_SIZE
    assert models.COLOUR_SIGNATURE_BYTES == variants.COLOUR_BYTES


def test_hash_bytes_with_variants_is_hash_bytes_plus_the_derived_variants() -> None:
    data = photo_jpeg("astronaut")

    hashes, derived = variants.hash_bytes_with_variants(data)

    assert hashes == hashing.hash_bytes(data)
    assert without_keypoints(derived) == expected_variants(data)


def test_hash_bytes_with_variants_fast_keeps_fast_hashes_and_exact_variants() -> None:
    data = encode(generated_photo(7, (1600, 1200)), "JPEG", quality=90)

    hashes, derived = variants.hash_bytes_with_variants(data, fast=True)

    # The keypoints of a photo being registered come from the full decode.
    assert hashes == replace(
        hashing.hash_bytes(data, fast=True), keypoints=hashing.hash_bytes(data).keypoints
    )
    assert without_keypoints(derived) == expected_variants(data)


def test_hash_bytes_with_variants_refuses_what_hash_bytes_refuses() -> None:
    with pytest.raises(hashing.ImageRejected) as rejected:
        variants.hash_bytes_with_variants(b"\xff\xd8\xff" + bytes(200))

    assert rejected.value.code == "corrupt"


# --- uploads of photo files ------------------------------------------------------


def test_web_upload_stores_the_derived_variants_of_the_photo(client: Client) -> None:
    creator = signed_in(client)
    data = photo_jpeg("coffee")

    response = client.post("/me/photos/upload/", {"photos": [upload("coffee.jpg", data)]})

    assert response.status_code == 200
    photo = Photo.objects.get(creator=creator)
    assert stored(photo) == expected_variants(data)
    assert [v.name for v in stored(photo)] == list(variants.DERIVED_VARIANTS)
    assert photo.variant_count == 16
    assert len(bytes(photo.variants)) == 16 * variants.PACKED_SIZE
    assert len(bytes(photo.variant_colours)) == 16 * 33
    # Position by position: the colour of each stored variant's derived image.
    assert bytes(photo.variant_colours) == b"".join(
        bytes.fromhex(v.colour) for v in expected_variants(data)
    )
    # The photo's own hashes are the original variant, not stored twice.
    original = variants.variants_compute(hashing.decode(data), (variants.ORIGINAL,))[0]
    assert (photo.pdq, photo.pdq_quality, photo.phash, photo.colour) == (
        original.pdq,
        original.pdq_quality,
        original.phash,
        original.colour,
    )
    assert photo.colour == hashing.hash_bytes(data).colour


def test_web_zip_upload_stores_each_members_variants_and_reports_the_bad(
    client: Client,
) -> None:
    creator = signed_in(client)
    first, second = photo_jpeg("chelsea"), encode(skimage_photo("rocket"), "PNG")
    archive = zip_of({"a.jpg": first, "sub/b.png": second, "notes.txt": b"not a photo"})

    response = client.post(
        "/me/photos/upload/", {"photos": [upload("photos.zip", archive, "application/zip")]}
    )

    assert response.status_code == 200
    rows = response.context["upload_result"].rows
    assert [(row.filename, row.status) for row in rows] == [
        ("photos.zip/a.jpg", "registered"),
        ("photos.zip/sub/b.png", "registered"),
        ("photos.zip/notes.txt", "not_an_image"),
    ]
    by_name = {p.original_filename: p for p in Photo.objects.filter(creator=creator)}
    assert stored(by_name["a.jpg"]) == expected_variants(first)
    assert stored(by_name["b.png"]) == expected_variants(second)


def test_api_file_upload_stores_the_derived_variants(api: APIClient, creator: Creator) -> None:
    data = photo_jpeg("astronaut")
    archive = zip_of({"in-zip.jpg": photo_jpeg("chelsea")})

    response = api.post(
        "/api/v1/me/photos",
        {
            "files": [
                upload("astronaut.jpg", data),
                upload("photos.zip", archive, "application/zip"),
            ]
        },
        format="multipart",
    )

    assert response.status_code == 201
    assert response.json()["registered"] == 2
    by_name = {p.original_filename: p for p in Photo.objects.filter(creator=creator)}
    assert stored(by_name["astronaut.jpg"]) == expected_variants(data)
    assert stored(by_name["in-zip.jpg"]) == expected_variants(photo_jpeg("chelsea"))
    assert by_name["in-zip.jpg"].colour == hashing.hash_bytes(photo_jpeg("chelsea")).colour
    # The creator's API shows the photo's colour signature.
    photo = by_name["astronaut.jpg"]
    detail = api.get(f"/api/v1/me/photos/{photo.public_id}").json()
    assert detail["colour"] == photo.colour == hashing.hash_bytes(data).colour


# --- hash-only registrations ---------------------------------------------------------


def variant_item(name: str, **overrides: object) -> dict[str, object]:
    return {"name": name, "pdq": PDQ, "pdq_quality": 90, "phash": PHASH, **overrides}


BAD_VARIANTS: list[tuple[object, str]] = [
    (
        [variant_item("zoom_in")],
        "variants[0]: unknown variant name 'zoom_in'; use one of mirror, crop_centre_95,",
    ),
    (
        [variant_item("original")],
        "variants[0]: the original's hashes go in pdq, pdq_quality and phash, not in variants",
    ),
    (
        [variant_item("mirror"), variant_item("rotate_+2", pdq=PDQ[:-2])],
        "variants[1] (rotate_+2): pdq must be 64 hexadecimal digits",
    ),
    (
        [variant_item("mirror", phash="xyz" + PHASH[3:])],
        "variants[0] (mirror): phash must be 16 hexadecimal digits",
    ),
    (
        [variant_item("mirror", pdq_quality=101)],
        "variants[0] (mirror): pdq_quality must be a whole number from 0 to 100",
    ),
    (
        [{"name": "mirror", "pdq": PDQ, "phash": PHASH}],
        "variants[0] (mirror): pdq_quality must be a whole number from 0 to 100",
    ),
    (
        [variant_item("mirror"), variant_item("mirror")],
        "variants[1]: variant 'mirror' appears more than once",
    ),
    ({"name": "mirror"}, "variants must be a list of objects"),
    (["mirror"], "variants[0] must be an object"),
    (
        [variant_item("mirror", colour="ab" * 32)],
        "variants[0] (mirror): colour must be 66 hexadecimal digits",
    ),
    (
        [variant_item("mirror"), variant_item("crop_centre_90", colour=7)],
        "variants[1] (crop_centre_90): colour must be 66 hexadecimal digits",
    ),
    (
        [variant_item("mirror", colour="g" + COLOUR[1:])],
        "variants[0] (mirror): colour must be 66 hexadecimal digits",
    ),
]


@pytest.mark.parametrize(("value", "reason"), BAD_VARIANTS)
def test_variants_parse_names_the_problem(value: object, reason: str) -> None:
    with pytest.raises(ValueError) as error:
        variants.variants_parse(value)

    assert str(error.value).startswith(reason)


def test_variants_parse_normalises_case_and_order() -> None:
    parsed = variants.variants_parse(
        [variant_item("rotate_-2", pdq=PDQ.upper()), variant_item("mirror", pdq_quality=0)]
    )

    assert parsed == [
        Variant("mirror", PDQ, 0, PHASH),
        Variant("rotate_-2", PDQ, 90, PHASH),
    ]
    assert variants.variants_parse(None) == variants.variants_parse([]) == []


def test_variants_parse_takes_an_optional_colour() -> None:
    parsed = variants.variants_parse(
        [
            variant_item("mirror", colour=COLOUR.upper()),
            variant_item("crop_centre_95", colour=None),
            variant_item("crop_centre_90", colour=""),
            variant_item("rotate_+2"),
        ]
    )

    assert [v.colour for v in parsed] == [COLOUR, "", "", ""]
    # Stored all or none: one variant without a colour leaves them all unknown.
    assert variants.colours_pack(parsed) == b""
    assert variants.colours_pack(parsed[:1]) == bytes.fromhex(COLOUR)


def test_hashes_jsonl_with_variants_stores_them_and_reports_bad_lines_by_number(
    client: Client,
) -> None:
    creator = signed_in(client)
    data = photo_jpeg("coffee")
    hashes = hashing.hash_bytes(data)
    lines = [
        json.dumps({**hashes.as_dict(), "filename": "coffee.jpg", "variants": variant_dicts(data)}),
        json.dumps({"sha256": SHA_A, "variants": [variant_item("zoom_in")]}),
        json.dumps({"sha256": SHA_B, "pdq": PDQ, "pdq_quality": 77}),
        json.dumps({"sha256": SHA_C, "variants": [variant_item("mirror"), variant_item("mirror")]}),
        json.dumps({"sha256": "d" * 64, "pdq_quality": 101}),
    ]

    response = hashes_file_posted(client, "\n".join(lines).encode())

    assert response.status_code == 200
    result = response.context["hashes_result"]
    assert (result.total, result.registered, result.rejected) == (5, 2, 3)
    assert [(row.line, row.reason.split(";")[0]) for row in result.rows] == [
        (2, "variants[0]: unknown variant name 'zoom_in'"),
        (4, "variants[1]: variant 'mirror' appears more than once"),
        (5, "pdq_quality must be a whole number from 0 to 100"),
    ]
    photo = Photo.objects.get(creator=creator, sha256=hashes.sha256)
    assert stored(photo) == expected_variants(data)
    assert photo.pdq_quality == hashes.pdq_quality
    assert photo.colour == hashes.colour
    assert len(bytes(photo.variant_colours)) == 16 * 33
    without = Photo.objects.get(creator=creator, sha256=SHA_B)
    assert (bytes(without.variants), without.variant_count, without.pdq_quality) == (b"", 0, 77)
    assert (without.colour, bytes(without.variant_colours)) == ("", b"")


def test_api_json_hashes_with_variants_are_stored_and_bad_items_reported(
    api: APIClient, creator: Creator
) -> None:
    data = photo_jpeg("chelsea")
    hashes = hashing.hash_bytes(data)

    response = api.post(
        "/api/v1/me/photos",
        {
            "hashes": [
                {**hashes.as_dict(), "variants": variant_dicts(data)},
                {"sha256": SHA_A, "variants": [variant_item("mirror", pdq="00")]},
                {"sha256": SHA_B, "variants": [variant_item("crop_centre_90", pdq_quality=5)]},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["registered"], body["errors"]) == (2, 1)
    assert body["results"][1] == {
        "index": 1,
        "status": "error",
        "error": "variants[0] (mirror): pdq must be 64 hexadecimal digits",
        "code": "invalid",
    }
    assert stored(Photo.objects.get(creator=creator, sha256=hashes.sha256)) == expected_variants(
        data
    )
    assert stored(Photo.objects.get(creator=creator, sha256=SHA_B)) == [
        Variant("crop_centre_90", PDQ, 5, PHASH)
    ]


def test_api_json_hashes_store_the_colours_when_given(api: APIClient, creator: Creator) -> None:
    mirror = variant_item("mirror", colour=COLOUR)

    response = api.post(
        "/api/v1/me/photos",
        {
            "hashes": [
                {"sha256": SHA_A, "pdq": PDQ, "colour": COLOUR.upper(), "variants": [mirror]},
                {"sha256": SHA_B, "pdq": PDQ, "variants": [variant_item("mirror")]},
                {"sha256": SHA_C, "pdq": PDQ, "colour": None, "variants": [mirror]},
                {"sha256": "d" * 64, "pdq": PDQ, "colour": COLOUR[:-2]},
                {"sha256": "e" * 64, "pdq": PDQ, "colour": ["not", "hex"]},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["registered"], body["errors"]) == (3, 2)
    assert [item.get("error") for item in body["results"][3:]] == [
        "colour must be 66 hexadecimal digits"
    ] * 2
    with_colour = Photo.objects.get(creator=creator, sha256=SHA_A)
    assert with_colour.colour == COLOUR
    assert bytes(with_colour.variant_colours) == bytes.fromhex(COLOUR)
    assert stored(with_colour) == [Variant("mirror", PDQ, 90, PHASH, COLOUR)]
    without = Photo.objects.get(creator=creator, sha256=SHA_B)
    assert (without.colour, bytes(without.variant_colours)) == ("", b"")
    only_variants = Photo.objects.get(creator=creator, sha256=SHA_C)
    assert (only_variants.colour, bytes(only_variants.variant_colours)) == (
        "",
        bytes.fromhex(COLOUR),
    )
    listed = {
        item["sha256"]: item["colour"] for item in api.get("/api/v1/me/photos").json()["results"]
    }
    assert listed == {SHA_A: COLOUR, SHA_B: "", SHA_C: ""}


def test_openapi_schema_documents_the_variants_of_a_hashes_item(api: APIClient) -> None:
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]

    item = schemas["PhotoHashItemRequest"]["properties"]
    variant = schemas["PhotoVariantHashesRequest"]["properties"]

    assert item["variants"]["type"] == "array"
    assert item["variants"]["items"] == {"$ref": "#/components/schemas/PhotoVariantHashesRequest"}
    assert set(variant) == {"name", "pdq", "pdq_quality", "phash", "colour", "keypoints"}
    assert set(schemas["PhotoVariantHashesRequest"]["required"]) == set(variant) - {
        "colour",
        "keypoints",
    }
    assert variant["colour"]["pattern"] == item["colour"]["pattern"] == "^[0-9a-fA-F]{66}$"
    assert "colour" not in schemas["PhotoHashItemRequest"]["required"]
    assert "colour" in schemas["Photo"]["properties"]
    assert (variant["pdq_quality"]["minimum"], variant["pdq_quality"]["maximum"]) == (0, 100)
    assert variant["name"]["allOf"] == [{"$ref": "#/components/schemas/VariantNameEnum"}]
    assert schemas["VariantNameEnum"]["enum"] == list(variants.DERIVED_VARIANTS)


def test_a_packed_variants_value_of_the_wrong_length_is_refused_by_the_database(
    creator: Creator,
) -> None:
    from django.db import IntegrityError, transaction

    from tests.factories import PhotoFactory

    with pytest.raises(IntegrityError), transaction.atomic():
        PhotoFactory(creator=creator, variants=b"\x01" * 41)


# --- optout hash -> upload --------------------------------------------------------


def test_optout_hash_output_uploads_as_is_and_stores_the_same_variants(
    client: Client, tmp_path: Path
) -> None:
    creator = signed_in(client)
    root = tmp_path / "photos"
    root.mkdir()
    photos = {"coffee.jpg": photo_jpeg("coffee"), "rocket.png": encode(skimage_photo("rocket"))}
    for name, data in photos.items():
        (root / name).write_bytes(data)
    output = tmp_path / "hashes.jsonl"

    run = subprocess.run(
        [str(OPTOUT), "hash", str(root), "-o", str(output), "--quiet", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    response = hashes_file_posted(client, output.read_bytes())

    assert run.returncode == 0, run.stderr
    lines = [json.loads(text) for text in output.read_text().splitlines()]
    assert response.status_code == 200
    assert response.context["hashes_result"].registered == 2
    for line in lines:
        photo = Photo.objects.get(creator=creator, sha256=line["sha256"])
        # The mirror variant's keypoints are stored in Photo.keypoints.
        assert [v.as_dict() for v in stored(photo)] == [
            {key: value for key, value in item.items() if key != "keypoints"}
            for item in line["variants"]
        ]
        # What the CLI computed is what an upload of the photo itself stores.
        assert stored(photo) == expected_variants(photos[line["path"]])
        assert photo.pdq_quality == line["pdq_quality"]
        assert photo.colour == line["colour"] == hashing.hash_bytes(photos[line["path"]]).colour


# --- export and admin ---------------------------------------------------------------


def test_export_and_admin_show_the_variant_count(client: Client, admin_client: Client) -> None:
    creator = signed_in(client)
    client.post("/me/photos/upload/", {"photos": [upload("coffee.jpg", photo_jpeg("coffee"))]})
    client.post(
        "/me/photos/hashes/",
        {"hashes": upload("h.jsonl", json.dumps({"sha256": SHA_A}).encode(), "text/plain")},
    )
    photo = Photo.objects.get(creator=creator, original_filename="coffee.jpg")

    export = json.loads(client.get("/me/export/").content)
    change = admin_client.get(f"/admin/registry/photo/{photo.pk}/change/")

    counts = {item["sha256"]: item["variant_count"] for item in export["photos"]}
    assert counts == {photo.sha256: 16, SHA_A: 0}
    colours = {item["sha256"]: item["colour"] for item in export["photos"]}
    assert colours == {photo.sha256: photo.colour, SHA_A: ""}
    assert hashing.is_hex(photo.colour, 66)
    assert change.status_code == 200
    html = change.content.decode()
    assert "Variants" in html
    assert '<div class="readonly">16</div>' in html
    # Read-only like the hashes: an edited colour would be a different photo.
    assert f'<div class="readonly">{photo.colour}</div>' in html
