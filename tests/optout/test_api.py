"""Creator REST API: opt-outs (optout/api.py)."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from optout.models import OptOut
from registry import services
from registry.models import Claim, ConsentEvent, Creator
from tests.conftest import ClientFor
from tests.factories import CreatorFactory, OrganizationFactory, PhotoFactory

pytestmark = pytest.mark.django_db


def iso(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z")  # type: ignore[attr-defined]


def claim_of(creator: Creator, value: str = "alice.example") -> Claim:
    claim, _ = services.claim_add(creator=creator, kind="domain", value=value, channel="web")
    return claim


def file_opt_out(api: APIClient, **body: object) -> dict:
    response = api.post("/api/v1/me/opt-outs", {"scope": "all_photos", **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- POST /api/v1/me/opt-outs -------------------------------------------------


def test_filing_an_all_photos_opt_out_is_201_with_the_opt_out(
    api: APIClient, creator: Creator
) -> None:
    organization = OrganizationFactory()

    response = api.post(
        "/api/v1/me/opt-outs",
        {
            "uses": ["ai_inference", "ai_training"],
            "scope": "all_photos",
            "exceptions": [str(organization.public_id)],
        },
        format="json",
    )

    assert response.status_code == 201
    opt_out = OptOut.objects.get(creator=creator)
    assert response.json() == {
        "id": str(opt_out.public_id),
        "uses": ["ai_training", "ai_inference"],
        "scope": "all_photos",
        "photos": [],
        "claims": [],
        "exceptions": [str(organization.public_id)],
        "status": "active",
        "filed_version": opt_out.filed_version,
        "effective_at": iso(opt_out.effective_at),
        "withdrawn_at": None,
        "withdrawn_version": None,
        "replaces": None,
        "replaced_by": None,
    }
    event = ConsentEvent.objects.get(subject_public_id=opt_out.public_id)
    assert (event.kind, event.channel, event.registry_version) == (
        "opt_out_filed",
        "api",
        opt_out.filed_version,
    )
    assert opt_out.channel == "api"


def test_filing_for_chosen_photos_and_claims_lists_them(api: APIClient, creator: Creator) -> None:
    photo = PhotoFactory(creator=creator)
    claim = claim_of(creator)

    by_photo = file_opt_out(
        api, uses=["data_mining"], scope="photos", photos=[str(photo.public_id)]
    )
    by_claim = file_opt_out(
        api, uses=["ai_training"], scope="claims", claims=[str(claim.public_id)]
    )

    assert (by_photo["scope"], by_photo["photos"], by_photo["claims"]) == (
        "photos",
        [str(photo.public_id)],
        [],
    )
    assert (by_claim["scope"], by_claim["photos"], by_claim["claims"]) == (
        "claims",
        [],
        [str(claim.public_id)],
    )
    assert list(OptOut.objects.get(public_id=by_photo["id"]).photos.all()) == [photo]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"uses": ["ai_training", "selling"], "scope": "all_photos"},
            {
                "uses": {
                    "1": [
                        "unknown use 'selling'; allowed: data_mining, ai_training, "
                        "ai_generative_training, ai_inference"
                    ]
                }
            },
        ),
        (
            {"uses": [], "scope": "all_photos"},
            {
                "uses": [
                    "choose at least one use from data_mining, ai_training, "
                    "ai_generative_training, ai_inference"
                ]
            },
        ),
        (
            {"uses": ["ai_training"], "scope": "everything"},
            {"scope": ["unknown scope 'everything'; allowed: all_photos, photos, claims"]},
        ),
        (
            {"uses": ["ai_training"], "scope": "photos"},
            {"photos": ["choose at least one photo for scope 'photos'"]},
        ),
        (
            {"uses": ["ai_training"], "scope": "all_photos", "photos": ["not-a-uuid"]},
            {"photos": {"0": ["Must be a valid UUID."]}},
        ),
        (
            {"uses": ["ai_training"], "scope": "all_photos", "exceptions": [str(uuid.UUID(int=7))]},
            {"exceptions": [f"unknown organization: {uuid.UUID(int=7)}"]},
        ),
        ({"scope": "all_photos"}, {"uses": ["This field is required."]}),
    ],
)
def test_filing_with_invalid_input_is_400_naming_the_problem(
    api: APIClient, body: dict[str, object], fields: dict[str, object]
) -> None:
    response = api.post("/api/v1/me/opt-outs", body, format="json")

    assert response.status_code == 400
    body_json = response.json()
    assert body_json["error"] == "invalid"
    assert body_json["fields"] == fields
    assert OptOut.objects.count() == 0
    assert ConsentEvent.objects.filter(kind="opt_out_filed").count() == 0


def test_the_schema_asks_for_at_least_one_use_as_the_view_does(api: APIClient) -> None:
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]

    response = api.post("/api/v1/me/opt-outs", {"uses": [], "scope": "all_photos"}, format="json")

    assert schemas["OptOutFileRequest"]["properties"]["uses"]["minItems"] == 1
    assert response.status_code == 400
    assert OptOut.objects.count() == 0


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_filing_takes_json_only_a_form_is_415_and_files_nothing(
    api: APIClient, encoding: str
) -> None:
    schema = api.get("/api/schema/?format=json").json()
    content = schema["paths"]["/api/v1/me/opt-outs"]["post"]["requestBody"]["content"]
    # A form's empty `exceptions=` would otherwise read as "no exceptions".
    form = {"uses": "ai_training", "scope": "all_photos", "exceptions": ""}

    if encoding == "multipart":
        response = api.post("/api/v1/me/opt-outs", form, format="multipart")
    else:
        response = api.post(
            "/api/v1/me/opt-outs",
            "uses=ai_training&scope=all_photos&exceptions=",
            content_type="application/x-www-form-urlencoded",
        )

    assert list(content) == ["application/json"]
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert OptOut.objects.count() == 0


def test_filing_for_another_creators_photo_is_400_as_if_it_did_not_exist(
    api: APIClient,
) -> None:
    theirs = PhotoFactory(creator=CreatorFactory())

    response = api.post(
        "/api/v1/me/opt-outs",
        {"uses": ["ai_training"], "scope": "photos", "photos": [str(theirs.public_id)]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {"photos": [f"not found: {theirs.public_id}"]}
    assert OptOut.objects.count() == 0


# --- GET /api/v1/me/opt-outs ----------------------------------------------------


@pytest.mark.parametrize("opt_out_count", [1, 10])
def test_opt_out_list_shows_only_mine_with_constant_queries(
    api: APIClient,
    creator: Creator,
    client_for: ClientFor,
    opt_out_count: int,
    django_assert_num_queries,
) -> None:
    photo = PhotoFactory(creator=creator)
    mine = [
        file_opt_out(api, uses=["ai_training"], scope="photos", photos=[str(photo.public_id)])
        for _ in range(opt_out_count)
    ]
    file_opt_out(client_for(CreatorFactory()), uses=["data_mining"])

    # token + count + page (with replaces) + photos, claims, exceptions and
    # replaced_by prefetched
    with django_assert_num_queries(7):
        response = api.get("/api/v1/me/opt-outs")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == opt_out_count
    assert [item["id"] for item in body["results"]] == [item["id"] for item in reversed(mine)]
    assert body["results"][0] == mine[-1]


# --- GET /api/v1/me/opt-outs/<uuid> ---------------------------------------------


def test_opt_out_detail_returns_my_opt_out(api: APIClient) -> None:
    filed = file_opt_out(api, uses=["ai_generative_training"])

    response = api.get(f"/api/v1/me/opt-outs/{filed['id']}")

    assert response.status_code == 200
    assert response.json() == filed


# --- POST /api/v1/me/opt-outs/<uuid>/withdraw -------------------------------------


def test_withdrawing_is_200_and_withdrawing_again_changes_nothing(
    api: APIClient, creator: Creator
) -> None:
    filed = file_opt_out(api, uses=["ai_training"])

    first = api.post(f"/api/v1/me/opt-outs/{filed['id']}/withdraw")
    second = api.post(f"/api/v1/me/opt-outs/{filed['id']}/withdraw")

    opt_out = OptOut.objects.get(public_id=filed["id"])
    expected = {
        **filed,
        "status": "withdrawn",
        "withdrawn_at": iso(opt_out.withdrawn_at),
        "withdrawn_version": opt_out.withdrawn_version,
    }
    assert (first.status_code, first.json()) == (200, expected)
    assert (second.status_code, second.json()) == (200, expected)
    assert opt_out.withdrawn_version > opt_out.filed_version
    assert (
        ConsentEvent.objects.filter(
            subject_public_id=opt_out.public_id, kind="opt_out_withdrawn", channel="api"
        ).count()
        == 1
    )


def test_withdrawn_opt_out_shows_as_withdrawn_in_the_list(api: APIClient) -> None:
    filed = file_opt_out(api, uses=["ai_training"])
    api.post(f"/api/v1/me/opt-outs/{filed['id']}/withdraw")

    response = api.get("/api/v1/me/opt-outs")

    assert [item["status"] for item in response.json()["results"]] == ["withdrawn"]


def test_another_creator_gets_404_for_every_opt_out_route_and_changes_nothing(
    api: APIClient, creator: Creator, client_for: ClientFor
) -> None:
    photo_a = PhotoFactory(creator=creator)
    filed = file_opt_out(api, uses=["ai_training"], scope="photos", photos=[str(photo_a.public_id)])
    other = client_for(CreatorFactory())
    events_before = ConsentEvent.objects.count()

    responses = [
        other.get(f"/api/v1/me/opt-outs/{filed['id']}"),
        other.post(f"/api/v1/me/opt-outs/{filed['id']}/withdraw"),
        other.get(f"/api/v1/me/photos/{photo_a.public_id}"),
    ]
    listings = [other.get(path).json() for path in ("/api/v1/me/opt-outs", "/api/v1/me/photos")]

    assert [(r.status_code, r.json()) for r in responses] == [
        (404, {"error": "not_found", "detail": "Not found."})
    ] * 3
    assert [listing["count"] for listing in listings] == [0, 0]
    assert other.get("/api/v1/me/consent-events").json()["count"] == 0
    assert OptOut.objects.get(public_id=filed["id"]).withdrawn_at is None
    assert ConsentEvent.objects.count() == events_before


@pytest.mark.parametrize(
    "path",
    [f"/api/v1/me/opt-outs/{uuid.UUID(int=3)}", f"/api/v1/me/opt-outs/{uuid.UUID(int=3)}/withdraw"],
)
def test_unknown_opt_out_is_404_json(api: APIClient, path: str) -> None:
    response = api.get(path) if not path.endswith("withdraw") else api.post(path)

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not found."}


def test_withdraw_route_refuses_get_with_405(api: APIClient) -> None:
    filed = file_opt_out(api, uses=["ai_training"])

    response = api.get(f"/api/v1/me/opt-outs/{filed['id']}/withdraw")

    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed", "detail": 'Method "GET" not allowed.'}
    assert OptOut.objects.get(public_id=filed["id"]).withdrawn_at is None


def test_opt_out_routes_need_credentials() -> None:
    client = APIClient()
    opt_out_id = uuid.UUID(int=5)

    statuses = [
        client.get("/api/v1/me/opt-outs").status_code,
        client.post("/api/v1/me/opt-outs", {}, format="json").status_code,
        client.get(f"/api/v1/me/opt-outs/{opt_out_id}").status_code,
        client.post(f"/api/v1/me/opt-outs/{opt_out_id}/withdraw").status_code,
    ]

    assert statuses == [401, 401, 401, 401]
    assert OptOut.objects.count() == 0


# --- POST /api/v1/me/opt-outs/<uuid>/change ------------------------------------------


def test_changing_is_201_with_the_new_opt_out_which_replaces_the_old(
    api: APIClient, creator: Creator
) -> None:
    photo_a, photo_b = PhotoFactory(creator=creator), PhotoFactory(creator=creator)
    filed = file_opt_out(api, uses=["ai_training"], scope="photos", photos=[str(photo_a.public_id)])

    response = api.post(
        f"/api/v1/me/opt-outs/{filed['id']}/change",
        {"uses": ["data_mining"], "scope": "photos", "photos": [str(photo_b.public_id)]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    new = OptOut.objects.get(replaces__public_id=filed["id"])
    old = OptOut.objects.get(public_id=filed["id"])
    assert response.json() == {
        "id": str(new.public_id),
        "uses": ["data_mining"],
        "scope": "photos",
        "photos": [str(photo_b.public_id)],
        "claims": [],
        "exceptions": [],
        "status": "active",
        "filed_version": new.filed_version,
        "effective_at": iso(new.effective_at),
        "withdrawn_at": None,
        "withdrawn_version": None,
        "replaces": filed["id"],
        "replaced_by": None,
    }
    assert old.withdrawn_version == new.filed_version
    event = ConsentEvent.objects.get(subject_public_id=new.public_id)
    assert (event.kind, event.channel, event.registry_version) == (
        "opt_out_changed",
        "api",
        new.filed_version,
    )
    assert api.get(f"/api/v1/me/opt-outs/{filed['id']}").json() == {
        **filed,
        "status": "withdrawn",
        "withdrawn_at": iso(old.withdrawn_at),
        "withdrawn_version": new.filed_version,
        "replaced_by": str(new.public_id),
    }
    listed = api.get("/api/v1/me/opt-outs").json()["results"]
    assert [(o["id"], o["replaces"], o["replaced_by"]) for o in listed] == [
        (str(new.public_id), filed["id"], None),
        (filed["id"], None, str(new.public_id)),
    ]


def test_changing_to_the_same_opt_out_is_200_with_it_and_writes_nothing(
    api: APIClient, creator: Creator
) -> None:
    organization = OrganizationFactory()
    filed = file_opt_out(
        api, uses=["ai_training", "ai_inference"], exceptions=[str(organization.public_id)]
    )
    events_before = ConsentEvent.objects.count()

    response = api.post(
        f"/api/v1/me/opt-outs/{filed['id']}/change",
        {
            "uses": ["ai_inference", "ai_training"],
            "scope": "all_photos",
            "exceptions": [str(organization.public_id)],
        },
        format="json",
    )

    assert (response.status_code, response.json()) == (200, filed)
    assert ConsentEvent.objects.count() == events_before
    assert OptOut.objects.filter(creator=creator).count() == 1


def test_an_invalid_change_or_a_withdrawn_opt_out_is_a_400_json_and_changes_nothing(
    api: APIClient, creator: Creator
) -> None:
    filed = file_opt_out(api, uses=["ai_training"])
    withdrawn = file_opt_out(api, uses=["data_mining"])
    api.post(f"/api/v1/me/opt-outs/{withdrawn['id']}/withdraw")
    events_before = ConsentEvent.objects.count()

    no_uses = api.post(
        f"/api/v1/me/opt-outs/{filed['id']}/change", {"uses": [], "scope": "all_photos"}, "json"
    )
    no_photos = api.post(
        f"/api/v1/me/opt-outs/{filed['id']}/change",
        {"uses": ["ai_training"], "scope": "photos"},
        format="json",
    )
    of_withdrawn = api.post(
        f"/api/v1/me/opt-outs/{withdrawn['id']}/change",
        {"uses": ["ai_training"], "scope": "all_photos"},
        format="json",
    )

    assert no_uses.status_code == 400
    assert no_uses.json()["fields"] == {
        "uses": ["choose at least one use from data_mining, ai_training, "
                 "ai_generative_training, ai_inference"]
    }  # fmt: skip
    assert (no_photos.status_code, no_photos.json()) == (
        400,
        {
            "error": "invalid",
            "detail": "choose at least one photo for scope 'photos'",
            "fields": {"photos": ["choose at least one photo for scope 'photos'"]},
        },
    )
    message = (
        f"opt-out {withdrawn['id']} is withdrawn: a withdrawn opt-out cannot be changed; "
        "file a new one"
    )
    assert (of_withdrawn.status_code, of_withdrawn.json()) == (
        400,
        {"error": "invalid", "detail": message, "fields": {"non_field_errors": [message]}},
    )
    assert ConsentEvent.objects.count() == events_before
    assert OptOut.objects.get(public_id=filed["id"]).is_active


def test_changing_another_creators_or_an_unknown_opt_out_is_404_and_changes_nothing(
    api: APIClient, creator: Creator, client_for: ClientFor
) -> None:
    filed = file_opt_out(api, uses=["ai_training"])
    other = client_for(CreatorFactory())
    events_before = ConsentEvent.objects.count()
    body = {"uses": ["data_mining"], "scope": "all_photos"}

    responses = [
        other.post(f"/api/v1/me/opt-outs/{filed['id']}/change", body, format="json"),
        api.post(f"/api/v1/me/opt-outs/{uuid.UUID(int=3)}/change", body, format="json"),
    ]

    assert [(r.status_code, r.json()) for r in responses] == [
        (404, {"error": "not_found", "detail": "Not found."})
    ] * 2
    assert OptOut.objects.get(public_id=filed["id"]).is_active
    assert ConsentEvent.objects.count() == events_before
