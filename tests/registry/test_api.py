"""Creator REST API: photos, claims, consent events (registry/api.py)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from registry import hashing, services
from registry.models import Channel, Claim, ConsentEvent, Creator, Photo
from registry.uploads import HashLine
from tests.conftest import ClientFor
from tests.factories import PASSWORD, CreatorFactory, PhotoFactory, UserFactory
from tests.images import jpeg_bytes

pytestmark = pytest.mark.django_db


SHA_A = "a" * 64
SHA_B = "b" * 64
PDQ = "0123456789abcdef" * 4
PHASH = "fedcba9876543210"


def upload(name: str, content: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def register_hashes(creator: Creator, *sha256s: str) -> list[uuid.UUID]:
    outcomes = services.photos_register_from_hashes(
        creator=creator,
        items=[(None, HashLine(sha256=sha)) for sha in sha256s],
        channel=Channel.API,
    )
    return [outcome.photo for outcome in outcomes if outcome.photo is not None]


# --- POST /api/v1/me/photos: files ------------------------------------------


def test_photo_upload_reports_each_file_and_registers_the_good_ones(
    api: APIClient, creator: Creator
) -> None:
    good = jpeg_bytes(1)
    archive = zip_bytes({"a.jpg": jpeg_bytes(2), "notes.txt": b"hello", "sub/b.jpg": jpeg_bytes(3)})
    files = [
        upload("good.jpg", good),
        upload("notes.txt", b"hello world", "text/plain"),
        upload("cut.jpg", good[: len(good) // 2]),
        upload("photos.zip", archive, "application/zip"),
    ]

    response = api.post("/api/v1/me/photos", {"files": files}, format="multipart")

    assert response.status_code == 201
    body = response.json()
    photos = {photo.original_filename: photo for photo in Photo.objects.filter(creator=creator)}
    assert sorted(photos) == ["a.jpg", "b.jpg", "good.jpg"]
    assert [(r["index"], r["filename"], r["status"], r.get("code")) for r in body["results"]] == [
        (0, "good.jpg", "registered", None),
        (1, "notes.txt", "error", "not_an_image"),
        (2, "cut.jpg", "error", "truncated"),
        (3, "photos.zip/a.jpg", "registered", None),
        (4, "photos.zip/notes.txt", "error", "not_an_image"),
        (5, "photos.zip/sub/b.jpg", "registered", None),
    ]
    assert body["results"][0]["photo"] == str(photos["good.jpg"].public_id)
    assert body["results"][3]["photo"] == str(photos["a.jpg"].public_id)
    assert body["results"][5]["photo"] == str(photos["b.jpg"].public_id)
    assert all(r["error"] for r in body["results"] if r["status"] == "error")
    assert all("photo" not in r for r in body["results"] if r["status"] == "error")
    assert (body["registered"], body["already_registered"], body["errors"]) == (3, 0, 3)
    assert photos["good.jpg"].sha256 == hashing.sha256_hex(good)
    assert photos["good.jpg"].channel == "api"
    assert (photos["good.jpg"].width, photos["good.jpg"].height) == (320, 240)
    assert (
        ConsentEvent.objects.filter(
            creator_public_id=creator.public_id, kind="photo_registered", channel="api"
        ).count()
        == 3
    )


def test_photo_upload_of_a_registered_photo_is_already_registered_without_a_new_row(
    api: APIClient, creator: Creator
) -> None:
    photo_bytes = jpeg_bytes(7)
    first = api.post(
        "/api/v1/me/photos", {"files": [upload("x.jpg", photo_bytes)]}, format="multipart"
    )
    events_before = ConsentEvent.objects.count()

    second = api.post(
        "/api/v1/me/photos", {"files": [upload("copy.jpg", photo_bytes)]}, format="multipart"
    )

    assert first.status_code == 201
    assert second.status_code == 200
    photo = Photo.objects.get(creator=creator)
    assert second.json() == {
        "results": [
            {
                "index": 0,
                "filename": "copy.jpg",
                "status": "already_registered",
                "photo": str(photo.public_id),
            }
        ],
        "registered": 0,
        "already_registered": 1,
        "errors": 0,
    }
    assert photo.original_filename == "x.jpg"
    assert ConsentEvent.objects.count() == events_before


@override_settings(OPTOUT_MAX_PHOTO_BYTES=1000)
def test_photo_file_above_the_size_cap_is_a_per_file_error(
    api: APIClient, creator: Creator
) -> None:
    big = jpeg_bytes(3)
    assert len(big) > 1000

    response = api.post(
        "/api/v1/me/photos", {"files": [upload("big.jpg", big)]}, format="multipart"
    )

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "index": 0,
            "filename": "big.jpg",
            "status": "error",
            "error": f"file is {len(big)} bytes; the limit is 1000 bytes",
            "code": "too_large",
        }
    ]
    assert Photo.objects.filter(creator=creator).count() == 0


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2000)
def test_photo_upload_above_the_request_cap_is_413_json_and_registers_nothing(
    api: APIClient, creator: Creator
) -> None:
    files = [upload("one.jpg", jpeg_bytes(1)), upload("two.jpg", jpeg_bytes(2))]

    response = api.post("/api/v1/me/photos", {"files": files}, format="multipart")

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "Request body is larger than the limit of 2000 bytes.",
    }
    assert Photo.objects.count() == 0
    assert ConsentEvent.objects.count() == 0


def test_photo_upload_with_files_and_hashes_file_together_is_400(
    api: APIClient, creator: Creator
) -> None:
    data = {
        "files": [upload("one.jpg", jpeg_bytes(1))],
        "hashes_file": upload("h.jsonl", b'{"sha256": "' + SHA_A.encode() + b'"}\n'),
    }

    response = api.post("/api/v1/me/photos", data, format="multipart")

    assert response.status_code == 400
    message = "Send photos in `files` or one JSONL file in `hashes_file`, not both or neither."
    assert response.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"non_field_errors": [message]},
    }
    assert Photo.objects.count() == 0


def test_photo_upload_with_neither_files_nor_hashes_file_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/me/photos", {"comment": "nothing"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Send photos in `files` or one JSONL file in `hashes_file`, not both or neither."
    )


def test_photo_upload_with_text_in_files_field_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/me/photos", {"files": "not a file"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["fields"] == {
        "files": {"0": ["The submitted data was not a file. Check the encoding type on the form."]}
    }


# --- POST /api/v1/me/photos: JSON hashes and JSONL --------------------------


def test_json_hashes_register_good_items_and_report_bad_ones_by_index(
    api: APIClient, creator: Creator
) -> None:
    hashes = [
        {"sha256": SHA_A, "pdq": PDQ, "phash": PHASH, "filename": "dir/a.jpg", "width": 10},
        {"sha256": "z" * 64},
        {"sha256": SHA_B, "pdq": "abc"},
        {"pdq": PDQ},
        "not an object",
        {"sha256": SHA_B.upper(), "pdq_quality": 80},
    ]

    response = api.post("/api/v1/me/photos", {"hashes": hashes}, format="json")

    assert response.status_code == 201
    photo_a = Photo.objects.get(creator=creator, sha256=SHA_A)
    photo_b = Photo.objects.get(creator=creator, sha256=SHA_B)
    assert response.json() == {
        "results": [
            {
                "index": 0,
                "filename": "a.jpg",
                "status": "registered",
                "photo": str(photo_a.public_id),
            },
            {
                "index": 1,
                "status": "error",
                "error": "sha256 must be 64 hexadecimal digits",
                "code": "invalid",
            },
            {
                "index": 2,
                "status": "error",
                "error": "pdq must be 64 hexadecimal digits",
                "code": "invalid",
            },
            {"index": 3, "status": "error", "error": "sha256 is required", "code": "invalid"},
            {"index": 4, "status": "error", "error": "expected a JSON object", "code": "invalid"},
            {"index": 5, "status": "registered", "photo": str(photo_b.public_id)},
        ],
        "registered": 2,
        "already_registered": 0,
        "errors": 4,
    }
    assert (photo_a.pdq, photo_a.phash, photo_a.width, photo_a.height) == (PDQ, PHASH, 10, None)
    assert (photo_b.pdq, photo_b.pdq_quality) == ("", 80)
    assert Photo.objects.count() == 2


def test_a_null_hashes_item_is_its_own_error_as_the_schema_documents(
    api: APIClient, creator: Creator
) -> None:
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    items = schemas["PhotoHashesRegisterRequest"]["properties"]["hashes"]["items"]

    response = api.post("/api/v1/me/photos", {"hashes": [None, {"sha256": SHA_A}]}, format="json")

    # Documented as a hashes object or anything else: any item gets its own outcome.
    assert items["anyOf"][0] == {"$ref": "#/components/schemas/PhotoHashItemRequest"}
    assert set(items["anyOf"][1]) == {"description"}
    assert response.status_code == 201
    photo = Photo.objects.get(creator=creator)
    assert response.json()["results"] == [
        {"index": 0, "status": "error", "error": "expected a JSON object", "code": "invalid"},
        {"index": 1, "status": "registered", "photo": str(photo.public_id)},
    ]


def test_json_hashes_repeated_in_one_request_register_once(
    api: APIClient, creator: Creator
) -> None:
    response = api.post(
        "/api/v1/me/photos", {"hashes": [{"sha256": SHA_A}, {"sha256": SHA_A}]}, format="json"
    )

    assert response.status_code == 201
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["registered", "already_registered"]
    assert results[0]["photo"] == results[1]["photo"]
    assert Photo.objects.filter(creator=creator).count() == 1


def test_json_hashes_already_registered_returns_200(api: APIClient, creator: Creator) -> None:
    (photo_id,) = register_hashes(creator, SHA_A)

    response = api.post("/api/v1/me/photos", {"hashes": [{"sha256": SHA_A}]}, format="json")

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"index": 0, "status": "already_registered", "photo": str(photo_id)}
    ]
    assert Photo.objects.count() == 1


@override_settings(OPTOUT_MAX_HASH_LINES=2)
def test_json_hashes_above_the_item_limit_is_413_and_registers_nothing(api: APIClient) -> None:
    hashes = [{"sha256": f"{n:064x}"} for n in range(3)]

    response = api.post("/api/v1/me/photos", {"hashes": hashes}, format="json")

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "3 hash items in one request; the limit is 2, split them up.",
    }
    assert Photo.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"hashes": []}, {"hashes": ["This list may not be empty."]}),
        (
            {"hashes": {"sha256": SHA_A}},
            {"hashes": ['Expected a list of items but got type "dict".']},
        ),
        ({}, {"hashes": ["This field is required."]}),
        (
            [{"sha256": SHA_A}],
            {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        ),
    ],
)
def test_json_hashes_body_of_the_wrong_shape_is_400(
    api: APIClient, body: object, fields: dict[str, list[str]]
) -> None:
    response = api.post("/api/v1/me/photos", body, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == fields
    assert Photo.objects.count() == 0


def test_jsonl_hashes_file_reports_bad_lines_with_their_numbers(
    api: APIClient, creator: Creator
) -> None:
    lines = [
        json.dumps({"sha256": SHA_A, "path": "/home/me/pics/a.jpg"}),
        "",
        "{not json",
        json.dumps({"sha256": "12"}),
        json.dumps({"sha256": SHA_B, "phash": PHASH}),
    ]
    jsonl = ("\n".join(lines) + "\n").encode()

    response = api.post(
        "/api/v1/me/photos", {"hashes_file": upload("h.jsonl", jsonl, "application/jsonl")}
    )

    assert response.status_code == 201
    photo_a = Photo.objects.get(creator=creator, sha256=SHA_A)
    photo_b = Photo.objects.get(creator=creator, sha256=SHA_B)
    assert response.json() == {
        "results": [
            {
                "index": 0,
                "filename": "a.jpg",
                "line": 1,
                "status": "registered",
                "photo": str(photo_a.public_id),
            },
            {
                "index": 1,
                "line": 3,
                "status": "error",
                "error": "not valid JSON: Expecting property name enclosed in double quotes",
                "code": "invalid",
            },
            {
                "index": 2,
                "line": 4,
                "status": "error",
                "error": "sha256 must be 64 hexadecimal digits",
                "code": "invalid",
            },
            {"index": 3, "line": 5, "status": "registered", "photo": str(photo_b.public_id)},
        ],
        "registered": 2,
        "already_registered": 0,
        "errors": 2,
    }
    assert photo_b.phash == PHASH


@override_settings(OPTOUT_MAX_HASH_LINES=2)
def test_jsonl_hashes_file_above_the_line_limit_is_413_and_registers_nothing(
    api: APIClient,
) -> None:
    jsonl = "".join(json.dumps({"sha256": f"{n:064x}"}) + "\n" for n in range(3)).encode()

    response = api.post("/api/v1/me/photos", {"hashes_file": upload("h.jsonl", jsonl)})

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert Photo.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe\x00garbage", "file is not UTF-8 text"), (b"\n\n", "the file holds no hash lines")],
)
def test_jsonl_hashes_file_that_is_not_utf8_or_empty_is_400(
    api: APIClient, content: bytes, message: str
) -> None:
    response = api.post("/api/v1/me/photos", {"hashes_file": upload("h.jsonl", content)})

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"hashes_file": [message]},
    }
    assert Photo.objects.count() == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", "hello"), ("application/x-www-form-urlencoded", "hashes=x")],
)
def test_photo_post_with_unsupported_content_type_is_415(
    api: APIClient, content_type: str, body: str
) -> None:
    response = api.post("/api/v1/me/photos", body, content_type=content_type)

    assert response.status_code == 415
    assert response.json() == {
        "error": "unsupported_media_type",
        "detail": f'Unsupported media type "{content_type}" in request.',
    }
    assert Photo.objects.count() == 0


# --- GET /api/v1/me/photos ---------------------------------------------------


def test_photo_list_shows_only_my_photos_newest_first_with_public_ids(
    api: APIClient, creator: Creator
) -> None:
    older = PhotoFactory(creator=creator, original_filename="old.jpg", registered_version=5)
    newer = PhotoFactory(creator=creator, original_filename="new.jpg", registered_version=6)
    PhotoFactory()  # another creator's

    response = api.get("/api/v1/me/photos")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    assert [item["id"] for item in body["results"]] == [str(newer.public_id), str(older.public_id)]
    assert body["results"][1] == {
        "id": str(older.public_id),
        "sha256": older.sha256,
        "pdq": older.pdq,
        "pdq_quality": 100,
        "phash": older.phash,
        # Registered without a colour signature.
        "colour": "",
        "width": 640,
        "height": 480,
        "filename": "old.jpg",
        "created_at": older.created_at.isoformat().replace("+00:00", "Z"),
        "registered_version": 5,
    }


def test_photo_list_paginates(api: APIClient, creator: Creator) -> None:
    PhotoFactory.create_batch(3, creator=creator)

    response = api.get("/api/v1/me/photos?page_size=2&page=2")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], len(body["results"]), body["next"]) == (3, 1, None)
    assert body["previous"] == "http://testserver/api/v1/me/photos?page_size=2"


def test_photo_list_page_out_of_range_is_404_json(api: APIClient) -> None:
    response = api.get("/api/v1/me/photos?page=9")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Invalid page."}


@pytest.mark.parametrize("photo_count", [1, 20])
def test_photo_list_query_count_does_not_grow_with_photos(
    api: APIClient, creator: Creator, photo_count: int, django_assert_num_queries
) -> None:
    PhotoFactory.create_batch(photo_count, creator=creator)
    api.get("/api/v1/me/photos")  # stamps the token's last_used_at

    # token + count + page
    with django_assert_num_queries(3):
        response = api.get("/api/v1/me/photos")

    assert len(response.json()["results"]) == photo_count


# --- GET /api/v1/me/photos/<uuid> ------------------------------------------


def test_photo_detail_returns_my_photo(api: APIClient, creator: Creator) -> None:
    photo = PhotoFactory(creator=creator, original_filename="me.jpg")

    response = api.get(f"/api/v1/me/photos/{photo.public_id}")

    assert response.status_code == 200
    assert response.json()["id"] == str(photo.public_id)
    assert response.json()["filename"] == "me.jpg"


def test_photo_detail_of_another_creator_is_404_and_their_list_is_empty_for_me(
    creator: Creator, client_for: ClientFor
) -> None:
    theirs = PhotoFactory(creator=creator)
    other = client_for(CreatorFactory())

    detail = other.get(f"/api/v1/me/photos/{theirs.public_id}")
    listing = other.get("/api/v1/me/photos")

    assert detail.status_code == 404
    assert detail.json() == {"error": "not_found", "detail": "Not found."}
    assert listing.json()["count"] == 0


@pytest.mark.parametrize("tail", [str(uuid.UUID(int=1)), "123", "not-a-uuid"])
def test_photo_detail_of_unknown_or_integer_id_is_404_json(api: APIClient, tail: str) -> None:
    PhotoFactory()

    response = api.get(f"/api/v1/me/photos/{tail}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"


# --- authentication and permission -----------------------------------------


def test_token_authenticates_and_revoked_token_is_401_json(creator: Creator) -> None:
    token, raw = services.token_create(creator=creator, name="laptop")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    ok = client.get("/api/v1/me/photos")
    services.token_revoke(token=token)

    revoked = client.get("/api/v1/me/photos")

    assert ok.status_code == 200
    assert revoked.status_code == 401
    assert revoked["WWW-Authenticate"] == "Token"
    assert revoked.json() == {
        "error": "authentication_failed",
        "detail": "Invalid or revoked token.",
    }


@pytest.mark.parametrize(
    "path", ["/api/v1/me/photos", "/api/v1/me/claims", "/api/v1/me/consent-events"]
)
def test_no_credentials_is_401_with_www_authenticate_token(path: str) -> None:
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
    }


def test_session_login_works_for_the_api(creator: Creator) -> None:
    client = APIClient()
    assert client.login(username=creator.user.username, password=PASSWORD)

    response = client.post("/api/v1/me/photos", {"hashes": [{"sha256": SHA_A}]}, format="json")

    assert response.status_code == 201
    assert Photo.objects.get().creator == creator


def test_a_session_post_without_the_csrf_token_is_403_json_and_a_token_post_needs_none(
    creator: Creator, client_for: ClientFor
) -> None:
    # A logged-in browser session must not be usable by another site's form:
    # session requests need the CSRF token; token requests cannot be forged.
    session = APIClient(enforce_csrf_checks=True)
    assert session.login(username=creator.user.username, password=PASSWORD)
    token_client = client_for(creator)
    token_client.handler.enforce_csrf_checks = True

    refused = session.post("/api/v1/me/claims", {"kind": "domain", "value": "a.example"}, "json")
    accepted = token_client.post(
        "/api/v1/me/claims", {"kind": "domain", "value": "b.example"}, "json"
    )

    assert refused.status_code == 403
    assert refused.json() == {
        "error": "permission_denied",
        "detail": "CSRF Failed: CSRF cookie not set.",
    }
    assert accepted.status_code == 201
    assert list(Claim.objects.values_list("value", flat=True)) == ["b.example"]


@pytest.mark.parametrize("state", ["unconfirmed", "suspended", "no_creator_profile"])
def test_accounts_that_are_not_active_confirmed_creators_get_403(
    state: str, client_for: ClientFor
) -> None:
    if state == "no_creator_profile":
        client = APIClient()
        client.force_authenticate(UserFactory())
    else:
        creator = CreatorFactory(email_confirmed_at=None)
        if state == "suspended":
            services.creator_confirm_email(creator=creator)
            services.creator_suspend(creator=creator)
        client = client_for(creator)

    response = client.post("/api/v1/me/photos", {"hashes": [{"sha256": SHA_A}]}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "error": "permission_denied",
        "detail": "A confirmed, active creator account is required.",
    }
    assert Photo.objects.count() == 0


# --- claims -----------------------------------------------------------------


def test_claim_add_is_201_then_200_for_the_same_normalized_claim(
    api: APIClient, creator: Creator
) -> None:
    first = api.post(
        "/api/v1/me/claims", {"kind": "domain", "value": "https://WWW.Example.com/x"}, format="json"
    )
    events_after_first = ConsentEvent.objects.count()

    second = api.post(
        "/api/v1/me/claims", {"kind": "domain", "value": "example.com"}, format="json"
    )

    claim = Claim.objects.get(creator=creator)
    expected = {
        "id": str(claim.public_id),
        "kind": "domain",
        "value": "example.com",
        "registered_version": claim.registered_version,
        "created_at": claim.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert (first.status_code, first.json()) == (201, expected)
    assert (second.status_code, second.json()) == (200, expected)
    assert ConsentEvent.objects.count() == events_after_first
    event = ConsentEvent.objects.get(subject_public_id=claim.public_id)
    assert (event.kind, event.channel, event.registry_version) == (
        "claim_added",
        "api",
        claim.registered_version,
    )


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"kind": "email", "value": "a@b.c"},
            {"kind": ["unknown claim kind 'email'; use one of domain, url_prefix, handle"]},
        ),
        (
            {"kind": "domain", "value": "not a domain"},
            {"value": ["'not a domain' is not a valid domain name (like example.com)"]},
        ),
        (
            {"kind": "url_prefix", "value": "ftp://example.com/"},
            {"value": ["'ftp://example.com/' is not an http or https URL"]},
        ),
        ({"kind": "handle"}, {"value": ["This field is required."]}),
    ],
)
def test_claim_add_with_invalid_input_is_400_naming_the_problem(
    api: APIClient, body: dict[str, str], fields: dict[str, list[str]]
) -> None:
    response = api.post("/api/v1/me/claims", body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": next(iter(fields.values()))[0],
        "fields": fields,
    }
    assert Claim.objects.count() == 0
    assert ConsentEvent.objects.count() == 0


def test_claim_add_takes_json_only_a_form_is_415(api: APIClient) -> None:
    schema = api.get("/api/schema/?format=json").json()
    content = schema["paths"]["/api/v1/me/claims"]["post"]["requestBody"]["content"]

    response = api.post(
        "/api/v1/me/claims", {"kind": "domain", "value": "example.com"}, format="multipart"
    )

    assert list(content) == ["application/json"]
    assert response.status_code == 415
    assert Claim.objects.count() == 0


def test_claim_list_shows_only_my_claims(
    api: APIClient, creator: Creator, client_for: ClientFor, django_assert_num_queries
) -> None:
    services.claim_add(creator=creator, kind="handle", value="Instagram:@Alice", channel="api")
    services.claim_add(creator=creator, kind="domain", value="alice.example", channel="api")
    services.claim_add(creator=CreatorFactory(), kind="domain", value="bob.example", channel="api")
    api.get("/api/v1/me/claims")

    with django_assert_num_queries(3):
        response = api.get("/api/v1/me/claims")

    assert response.status_code == 200
    assert [(c["kind"], c["value"]) for c in response.json()["results"]] == [
        ("domain", "alice.example"),
        ("handle", "instagram:alice"),
    ]


# --- consent events ----------------------------------------------------------


def test_consent_events_are_mine_newest_first(
    api: APIClient, creator: Creator, django_assert_num_queries
) -> None:
    (photo_id,) = register_hashes(creator, SHA_A)
    claim, _ = services.claim_add(creator=creator, kind="domain", value="a.example", channel="web")
    register_hashes(CreatorFactory(), SHA_B)
    api.get("/api/v1/me/consent-events")

    with django_assert_num_queries(3):
        response = api.get("/api/v1/me/consent-events")

    assert response.status_code == 200
    body = response.json()
    claim_event = ConsentEvent.objects.get(subject_public_id=claim.public_id)
    photo_event = ConsentEvent.objects.get(subject_public_id=photo_id)
    assert body["count"] == 2
    assert body["results"] == [
        {
            "registry_version": claim_event.registry_version,
            "kind": "claim_added",
            "subject": str(claim.public_id),
            "channel": "web",
            "notice_version": claim_event.notice_version,
            "actor": "creator",
            "details": {"kind": "domain", "value": "a.example"},
            "created_at": claim_event.created_at.isoformat().replace("+00:00", "Z"),
        },
        {
            "registry_version": photo_event.registry_version,
            "kind": "photo_registered",
            "subject": str(photo_id),
            "channel": "api",
            "notice_version": photo_event.notice_version,
            "actor": "creator",
            "details": {"sha256": SHA_A},
            "created_at": photo_event.created_at.isoformat().replace("+00:00", "Z"),
        },
    ]
    assert claim_event.registry_version > photo_event.registry_version


def test_method_not_allowed_is_405_json(api: APIClient) -> None:
    response = api.delete("/api/v1/me/photos")

    assert response.status_code == 405
    assert response.json() == {
        "error": "method_not_allowed",
        "detail": 'Method "DELETE" not allowed.',
    }
