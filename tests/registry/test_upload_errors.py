"""Bad uploads found by fuzzing: each bad file or line gets its own named
outcome, the valid part of the request is registered, and nothing is a 500.

Empty files on the photos page (the form used to refuse the whole upload),
integers longer than Python converts in a hashes file (a 500 that lost the
file) and JSON bodies nested deeper than the decoder goes (a 500).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from registry import uploads
from registry.models import Claim, Creator, Photo
from registry.serializers import PhotoHashItemSerializer, PhotoVariantHashesSerializer
from registry.uploads import HashLine
from tests.conftest import ClientFor
from tests.factories import CreatorFactory
from tests.images import encode, generated_photo, jpeg_bytes
from tests.web import hashes_file_posted, signed_in, upload

pytestmark = pytest.mark.django_db

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
# One digit more than Python turns into an int (4300 by default).
HUGE_INTEGER = "9" * (sys.get_int_max_str_digits() + 1)
HUGE_INTEGER_REASON = (
    f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
)
# Far deeper than Python's JSON decoder recurses.
DEEP_LIST = "[" * 100_000 + "]" * 100_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def page_outcomes(response: Any) -> list[tuple[str, str, str]]:
    """(file, outcome, reason) of each row of the photos page's upload results."""
    return [(r.filename, r.status, r.reason) for r in response.context["upload_result"].rows]


def hashes_with_a_huge_integer() -> bytes:
    """Line 2 holds a pdq_quality too long to be a Python int; lines 1 and 3 are good."""
    return "\n".join(
        [
            json.dumps({"sha256": SHA_A, "filename": "a.jpg"}),
            f'{{"sha256": "{SHA_B}", "pdq_quality": {HUGE_INTEGER}}}',
            json.dumps({"sha256": SHA_C}),
        ]
    ).encode()


# --- empty files on the photos page -------------------------------------------


def test_photos_page_registers_the_good_file_and_names_the_empty_one(client: Client) -> None:
    creator = signed_in(client)
    png = encode(generated_photo(1), "PNG")

    response = client.post(
        "/me/photos/upload/",
        {"photos": [upload("photo.png", png, "image/png"), upload("empty.jpg", b"")]},
    )

    assert response.status_code == 200
    assert response.context["upload_form"].errors == {}
    assert page_outcomes(response) == [
        ("photo.png", "registered", ""),
        ("empty.jpg", "not_an_image", "file is empty"),
    ]
    html = response.content.decode()
    assert "empty.jpg" in html and "file is empty" in html
    assert "The submitted file is empty." not in html
    assert list(
        Photo.objects.filter(creator=creator).values_list("sha256", "original_filename")
    ) == [(sha(png), "photo.png")]


def test_photos_page_and_api_give_the_same_outcome_per_file(
    client: Client, client_for: ClientFor
) -> None:
    signed_in(client)
    api = client_for(CreatorFactory())
    files = [("good.jpg", jpeg_bytes(2)), ("empty.jpg", b""), ("notes.txt", b"hello")]

    page = client.post("/me/photos/upload/", {"photos": [upload(n, d) for n, d in files]})
    answer = api.post(
        "/api/v1/me/photos", {"files": [upload(n, d) for n, d in files]}, format="multipart"
    )

    assert answer.status_code == 201
    from_api = [
        (r["filename"], r.get("code", r["status"]), r.get("error", ""))
        for r in answer.json()["results"]
    ]
    assert page_outcomes(page) == from_api
    assert from_api == [
        ("good.jpg", "registered", ""),
        ("empty.jpg", "not_an_image", "file is empty"),
        ("notes.txt", "not_an_image", "not a JPEG, PNG, WEBP or GIF image"),
    ]


def test_photos_page_upload_with_every_file_refused_is_a_400_naming_each(client: Client) -> None:
    signed_in(client)

    response = client.post(
        "/me/photos/upload/",
        {
            "photos": [
                upload("empty.jpg", b""),
                upload("also-empty.png", b"", "image/png"),
                upload("empty.zip", b"", "application/zip"),
                upload("notes.txt", b"hello", "text/plain"),
            ]
        },
    )

    assert response.status_code == 400
    result = response.context["upload_result"]
    assert (result.total, result.registered, result.rejected) == (4, 0, 4)
    assert [(row.filename, row.reason) for row in result.rows] == [
        ("empty.jpg", "file is empty"),
        ("also-empty.png", "file is empty"),
        ("empty.zip", "damaged ZIP archive: File is not a zip file"),
        ("notes.txt", "not a JPEG, PNG, WEBP or GIF image"),
    ]
    html = response.content.decode()
    for name in ("empty.jpg", "also-empty.png", "empty.zip", "notes.txt"):
        assert f"<td>{name}</td>" in html
    assert "4 files: <strong>0 registered</strong>, 0 already registered, 4 rejected." in html
    assert Photo.objects.count() == 0


# --- integers longer than Python converts in a hashes file ----------------------


def test_jsonl_integer_too_long_for_python_is_a_bad_line_not_a_crash() -> None:
    results = list(uploads.hashes_jsonl_parse(hashes_with_a_huge_integer(), max_lines=10))

    assert results == [
        (1, HashLine(SHA_A, filename="a.jpg")),
        (2, HUGE_INTEGER_REASON),
        (3, HashLine(SHA_C)),
    ]


def test_a_hashes_jsonl_line_with_a_key_that_is_not_a_field_is_a_bad_line_naming_it() -> None:
    variant = {"name": "mirror", "pdq": "0" * 64, "pdq_quality": 90, "phash": "0" * 16}
    lines = [
        {"sha256": SHA_A, "path": "photos/a.jpg", "band": "", "variants": [variant]},
        {"sha256": SHA_B, "pdq_qualty": 90},
        {"sha256": SHA_C, "variants": [{**variant, "qualty": 90}]},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()

    results = list(uploads.hashes_jsonl_parse(data, max_lines=10))

    assert isinstance(results[0][1], HashLine) and results[0][1].filename == "a.jpg"
    assert results[1:] == [
        (2, '"pdq_qualty" is not a field; did you mean "pdq_quality"?'),
        (
            3,
            'variants[0]: "qualty" is not a field; allowed: name, pdq, pdq_quality, phash, colour, '
            "keypoints.",
        ),
    ]


def test_the_hashes_item_schema_documents_the_keys_the_parser_takes() -> None:
    assert set(PhotoHashItemSerializer().fields) == set(uploads.HASH_LINE_KEYS)
    assert set(PhotoVariantHashesSerializer().fields) == set(uploads.VARIANT_KEYS)


def test_api_hashes_file_with_a_huge_integer_reports_the_line_and_registers_the_rest(
    api: APIClient, creator: Creator
) -> None:
    response = api.post(
        "/api/v1/me/photos",
        {"hashes_file": upload("hashes.jsonl", hashes_with_a_huge_integer(), "application/jsonl")},
        format="multipart",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert [(r["line"], r["status"], r.get("error")) for r in body["results"]] == [
        (1, "registered", None),
        (2, "error", HUGE_INTEGER_REASON),
        (3, "registered", None),
    ]
    assert set(Photo.objects.filter(creator=creator).values_list("sha256", flat=True)) == {
        SHA_A,
        SHA_C,
    }


def test_photos_page_hashes_file_with_a_huge_integer_reports_the_line_and_registers_the_rest(
    client: Client,
) -> None:
    creator = signed_in(client)

    response = hashes_file_posted(client, hashes_with_a_huge_integer())

    assert response.status_code == 200
    result = response.context["hashes_result"]
    assert (result.total, result.registered, result.rejected) == (3, 2, 1)
    assert [(row.line, row.reason) for row in result.rows] == [(2, HUGE_INTEGER_REASON)]
    assert "<td>2</td>" in response.content.decode()
    assert set(Photo.objects.filter(creator=creator).values_list("sha256", flat=True)) == {
        SHA_A,
        SHA_C,
    }


# --- JSON bodies nested deeper than the decoder goes ------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/me/photos", f'{{"hashes": {DEEP_LIST}}}'),
        (
            "/api/v1/me/photos",
            f'{{"hashes": [{{"sha256": "{SHA_A}", "variants": {DEEP_LIST}}}]}}',
        ),
        ("/api/v1/me/claims", f'{{"kind": "domain", "value": {DEEP_LIST}}}'),
    ],
    ids=["hashes", "variants", "claim"],
)
def test_api_json_body_nested_too_deeply_is_a_400_not_a_500(
    api: APIClient, path: str, body: str
) -> None:
    response = api.generic("POST", path, body, content_type="application/json")

    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error"] == "parse_error"
    assert error["detail"].startswith("JSON parse error - nested too deeply")
    assert Photo.objects.count() == 0
    assert Claim.objects.count() == 0
