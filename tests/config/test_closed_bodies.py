"""Closed request bodies of the creator API, public ids in either case, and
error bodies that stay small (config.api: ClosedSerializer, listing,
CappedErrorsListField; config.converters)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import UUIDConverter
from rest_framework.test import APIClient

from config.messages import LISTED_MAX, listing
from optout.models import OptOut
from optout.services import opt_out_file
from registry import services
from registry.models import Channel, Claim, Creator, PersonalToken, Photo
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
PDQ = "0123456789abcdef" * 4
PHASH = "fedcba9876543210"


def photo_of(creator: Creator, sha256: str = SHA_A) -> Photo:
    (outcome,) = services.photos_register_from_hashes(
        creator=creator, items=[(None, HashLine(sha256=sha256))], channel=Channel.API
    )
    return Photo.objects.get(public_id=outcome.photo)


def all_photos_opt_out(creator: Creator) -> OptOut:
    return opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="api")


def fields_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "invalid"
    fields: dict[str, Any] = body["fields"]
    return fields


# --- 1. unknown keys are refused, by name --------------------------------------------


def test_filing_an_opt_out_with_a_misspelt_exceptions_key_is_400_and_files_nothing(
    api: APIClient,
) -> None:
    organization = OrganizationFactory()

    response = api.post(
        "/api/v1/me/opt-outs",
        {
            "uses": ["ai_training"],
            "scope": "all_photos",
            "exception": [str(organization.public_id)],
        },
        format="json",
    )

    assert fields_of(response) == {
        "exception": ['"exception" is not a field; did you mean "exceptions"?']
    }
    assert response.json()["detail"] == '"exception" is not a field; did you mean "exceptions"?'
    assert not OptOut.objects.exists()


def test_filing_an_opt_out_with_a_key_of_another_kind_lists_the_fields(api: APIClient) -> None:
    response = api.post(
        "/api/v1/me/opt-outs",
        {"uses": ["ai_training"], "scope": "all_photos", "expires": "2030-01-01"},
        format="json",
    )

    assert fields_of(response) == {
        "expires": ['"expires" is not a field; allowed: uses, scope, photos, claims, exceptions.']
    }
    assert not OptOut.objects.exists()


def test_changing_an_opt_out_with_a_misspelt_key_is_400_and_changes_nothing(
    api: APIClient, creator: Creator
) -> None:
    photo = photo_of(creator)
    opt_out = all_photos_opt_out(creator)

    response = api.post(
        f"/api/v1/me/opt-outs/{opt_out.public_id}/change",
        {"uses": ["ai_training"], "scope": "photos", "Photo": [str(photo.public_id)]},
        format="json",
    )

    assert fields_of(response) == {"Photo": ['"Photo" is not a field; did you mean "photos"?']}
    assert list(OptOut.objects.values_list("public_id", "withdrawn_version")) == [
        (opt_out.public_id, None)
    ]


def test_adding_a_claim_with_an_unknown_key_is_400_and_adds_nothing(api: APIClient) -> None:
    response = api.post(
        "/api/v1/me/claims",
        {"kind": "domain", "value": "alice.example", "subdomains": False},
        format="json",
    )

    assert fields_of(response) == {
        "subdomains": ['"subdomains" is not a field; allowed: kind, value.']
    }
    assert not Claim.objects.exists()


def test_registering_hashes_with_an_unknown_key_beside_hashes_is_400_and_registers_nothing(
    api: APIClient,
) -> None:
    response = api.post(
        "/api/v1/me/photos",
        {"hashes": [{"sha256": SHA_A}], "hash": [{"sha256": SHA_B}]},
        format="json",
    )

    assert fields_of(response) == {"hash": ['"hash" is not a field; did you mean "hashes"?']}
    assert not Photo.objects.exists()


def test_a_hashes_item_with_a_key_that_is_not_a_field_is_that_items_error(
    api: APIClient, creator: Creator
) -> None:
    # A line of `optout hash`, as it is: its path and band are fields too.
    line = {
        "path": "holiday/beach.jpg",
        "sha256": SHA_A,
        "pdq": PDQ,
        "pdq_quality": 90,
        "phash": PHASH,
        "width": 640,
        "height": 480,
        "colour": None,
        "band": "0" * 82,
        "variants": [
            {"name": "mirror", "pdq": PDQ, "pdq_quality": 90, "phash": PHASH, "colour": ""}
        ],
    }
    variant = {"name": "mirror", "pdq": PDQ, "phash": PHASH, "pdqQuality": 90}
    response = api.post(
        "/api/v1/me/photos",
        {
            "hashes": [
                line,
                {"sha256": SHA_B, "pdq": PDQ, "pdq_qualty": 90},
                {"sha256": SHA_C, "pdq": PDQ, "phash": PHASH, "variants": [variant]},
                {"SHA-256": SHA_C, "camera": "X100"},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    photo = Photo.objects.get(creator=creator)
    assert (photo.sha256, photo.original_filename, photo.width) == (SHA_A, "beach.jpg", 640)
    assert response.json()["results"] == [
        {
            "index": 0,
            "status": "registered",
            "filename": "beach.jpg",
            "photo": str(photo.public_id),
        },
        {
            "index": 1,
            "status": "error",
            "error": '"pdq_qualty" is not a field; did you mean "pdq_quality"?',
            "code": "invalid",
        },
        {
            "index": 2,
            "status": "error",
            "error": 'variants[0]: "pdqQuality" is not a field; did you mean "pdq_quality"?',
            "code": "invalid",
        },
        {
            "index": 3,
            "status": "error",
            "error": (
                '"SHA-256" is not a field; did you mean "sha256"? "camera" is not a field; '
                "allowed: sha256, pdq, phash, filename, path, pdq_quality, width, height, "
                "colour, band, keypoints, variants."
            ),
            "code": "invalid",
        },
    ]


def test_the_schema_closes_every_creator_json_request_body(client: APIClient) -> None:
    schema = client.get("/api/schema/?format=json").json()
    schemas = schema["components"]["schemas"]
    paths = schema["paths"]

    bodies = {
        "/api/v1/me/opt-outs": "OptOutFileRequest",
        "/api/v1/me/opt-outs/{id}/change": "OptOutFileRequest",
        "/api/v1/me/claims": "ClaimAddRequest",
        "/api/v1/me/photos": "PhotoHashesRegisterRequest",
    }
    for path, name in bodies.items():
        content = paths[path]["post"]["requestBody"]["content"]["application/json"]
        assert content["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert schemas[name]["additionalProperties"] is False, name
    # The items documented (anything else is that item's error) are closed too.
    for name in ("PhotoHashItemRequest", "PhotoVariantHashesRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert {"path", "band"} <= set(schemas["PhotoHashItemRequest"]["properties"])
    # ClosedSerializer's own docstring is no request's description.
    assert not any(
        "Refuses keys" in schemas[name].get("description", "")
        for name in ("OptOutFileRequest", "ClaimAddRequest", "BatchSubmitRequest")
    )


# --- 2. public ids in either case ----------------------------------------------------


def project_patterns(
    patterns: list[URLPattern | URLResolver], prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from project_patterns(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def test_every_route_takes_a_uuid_in_either_case_and_documents_it_as_a_uuid(
    client: APIClient,
) -> None:
    paths = client.get("/api/schema/?format=json").json()["paths"]
    lowercase_only = []
    with_uuids = []
    for route, pattern in project_patterns(get_resolver().url_patterns):
        converters = getattr(pattern.pattern, "converters", {}).values()
        if any(type(converter) is UUIDConverter for converter in converters):
            lowercase_only.append(route)
        if any(isinstance(converter, UUIDConverter) for converter in converters):
            with_uuids.append(route)

    assert lowercase_only == []
    assert len(with_uuids) == 10
    routes = {
        "/api/v1/me/photos/{id}": "get",
        "/api/v1/me/opt-outs/{id}": "get",
        "/api/v1/me/opt-outs/{id}/change": "post",
        "/api/v1/me/opt-outs/{id}/withdraw": "post",
        "/api/v1/batches/{id}": "get",
        "/api/v1/batches/{id}/exclusions": "get",
    }
    assert {path for path in paths if "{" in path} == set(routes)
    for route, method in routes.items():
        (parameter,) = (p for p in paths[route][method]["parameters"] if p["in"] == "path")
        assert (parameter["name"], parameter["schema"]) == (
            "id",
            {"type": "string", "format": "uuid"},
        ), route


def test_an_uppercase_id_reaches_the_same_photo_and_opt_out_in_the_api(
    api: APIClient, creator: Creator
) -> None:
    photo = photo_of(creator)
    opt_out = all_photos_opt_out(creator)
    other = all_photos_opt_out(creator)
    stranger = all_photos_opt_out(CreatorFactory())
    photo_id, opt_out_id = str(photo.public_id).upper(), str(opt_out.public_id).upper()

    photo_detail = api.get(f"/api/v1/me/photos/{photo_id}")
    opt_out_detail = api.get(f"/api/v1/me/opt-outs/{opt_out_id}")
    withdrawn = api.post(f"/api/v1/me/opt-outs/{opt_out_id}/withdraw")
    changed = api.post(
        f"/api/v1/me/opt-outs/{str(other.public_id).upper()}/change",
        {"uses": ["data_mining"], "scope": "all_photos"},
        format="json",
    )

    assert (photo_detail.status_code, photo_detail.json()["id"]) == (200, str(photo.public_id))
    assert (opt_out_detail.status_code, opt_out_detail.json()["id"]) == (
        200,
        str(opt_out.public_id),
    )
    assert (withdrawn.status_code, withdrawn.json()["id"]) == (200, str(opt_out.public_id))
    assert withdrawn.json()["status"] == "withdrawn"
    assert changed.status_code == 201
    assert changed.json()["replaces"] == str(other.public_id)
    # Another creator's opt-out is a 404 in uppercase too, like a missing one.
    assert api.get(f"/api/v1/me/opt-outs/{str(stranger.public_id).upper()}").status_code == 404


def test_an_uppercase_id_reaches_the_same_object_on_the_creator_pages(
    client: Client, creator: Creator
) -> None:
    assert creator.user is not None
    client.force_login(creator.user)
    photo = photo_of(creator)
    opt_out = all_photos_opt_out(creator)
    token, _ = services.token_create(creator=creator, name="laptop")

    photo_page = client.get(f"/me/photos/{str(photo.public_id).upper()}/")
    change_page = client.get(f"/me/opt-outs/{str(opt_out.public_id).upper()}/change/")
    revoke = client.post(f"/me/tokens/{str(token.public_id).upper()}/revoke/")
    withdraw = client.post(f"/me/opt-outs/{str(opt_out.public_id).upper()}/withdraw/")

    assert photo_page.status_code == 200
    assert SHA_A in photo_page.content.decode()
    assert change_page.status_code == 200
    assert f'action="/me/opt-outs/{opt_out.public_id}/change/"' in change_page.content.decode()
    assert (revoke.status_code, withdraw.status_code) == (302, 302)
    assert PersonalToken.objects.get(pk=token.pk).revoked_at is not None
    opt_out.refresh_from_db()
    assert opt_out.withdrawn_version is not None


# --- 3. error bodies stay small ------------------------------------------------------


def test_a_listing_names_the_first_few_and_counts_the_others() -> None:
    assert listing(["a", "b"]) == "a, b"
    names = [str(n) for n in range(LISTED_MAX + 5)]
    assert listing(names) == ", ".join(names[:LISTED_MAX]) + " … and 5 more"


def test_thirty_thousand_unknown_keys_are_a_small_400(api: APIClient) -> None:
    body: dict[str, Any] = {"uses": ["ai_training"], "scope": "all_photos"}
    body.update({f"key{n}": n for n in range(30_000)})

    response = api.post("/api/v1/me/opt-outs", body, format="json")

    fields = fields_of(response)
    assert len(response.content) < 10_000
    assert list(fields) == [f"key{n}" for n in range(LISTED_MAX)] + ["non_field_errors"]
    assert fields["non_field_errors"] == [
        f"… and {30_000 - LISTED_MAX} more keys that are not fields."
    ]
    assert not OptOut.objects.exists()


@pytest.mark.parametrize("field", ["photos", "exceptions", "uses"])
def test_thirty_thousand_malformed_ids_or_uses_are_a_small_400(api: APIClient, field: str) -> None:
    scope = "photos" if field == "photos" else "all_photos"
    body: dict[str, Any] = {"uses": ["ai_training"], "scope": scope}
    body[field] = [f"not-an-id-{n}" for n in range(30_000)]

    response = api.post("/api/v1/me/opt-outs", body, format="json")

    errors = fields_of(response)[field]
    assert len(response.content) < 10_000
    assert list(errors) == [str(n) for n in range(LISTED_MAX)] + ["more"]
    assert errors["more"] == [f"… and {30_000 - LISTED_MAX} more invalid items."]
    assert not OptOut.objects.exists()
    # Up to the cap, every bad item is named by its position, as DRF does.
    body[field] = [
        *body[field][:LISTED_MAX],
        str(uuid.uuid4()) if field != "uses" else "ai_training",
    ]
    few = fields_of(api.post("/api/v1/me/opt-outs", body, format="json"))[field]
    assert list(few) == [str(n) for n in range(LISTED_MAX)]


@pytest.mark.parametrize("field", ["photos", "exceptions"])
def test_thirty_thousand_unknown_ids_are_a_small_400_naming_the_first(
    api: APIClient, field: str
) -> None:
    scope = "photos" if field == "photos" else "all_photos"
    ids = sorted(str(uuid.uuid4()) for _ in range(30_000))
    body: dict[str, Any] = {"uses": ["ai_training"], "scope": scope, field: ids}

    response = api.post("/api/v1/me/opt-outs", body, format="json")

    assert response.status_code == 400
    assert len(response.content) < 10_000
    message = str(fields_of(response)[field])
    assert ids[0] in message and ids[LISTED_MAX - 1] in message
    assert ids[LISTED_MAX] not in message
    assert f"… and {30_000 - LISTED_MAX} more" in message
    assert not OptOut.objects.exists()
