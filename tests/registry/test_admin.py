"""Operator admin: every model's pages render, search finds, evidence stays evidence."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from optout.models import EngineState, OptOut, Organization
from optout.services import opt_out_change, opt_out_file, opt_out_withdraw
from registry.models import Channel, Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import (
    claim_add,
    creator_suspend,
    photos_register_from_hashes,
    token_create,
    token_revoke,
)
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory, UserFactory


@dataclass
class World:
    creator: Creator
    photo: Photo
    claim: Claim
    token: PersonalToken
    organization: Organization
    opt_out: OptOut
    event: ConsentEvent


def photo_of(creator: Creator, filename: str = "dawn.jpg") -> Photo:
    line = HashLine(sha256=secrets.token_hex(32), pdq=secrets.token_hex(32), filename=filename)
    [outcome] = photos_register_from_hashes(
        creator=creator, items=[(None, line)], channel=Channel.WEB
    )
    return Photo.objects.get(public_id=outcome.photo)


@pytest.fixture
def world(db: None) -> World:
    creator = CreatorFactory(user=UserFactory(email="alice@example.org"))
    photo = photo_of(creator)
    claim, _ = claim_add(creator=creator, kind="domain", value="alice.example", channel="web")
    token, _ = token_create(creator=creator, name="laptop")
    organization = OrganizationFactory(name="Acme Vision")
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[photo.public_id],
        exceptions=[organization.public_id],
        channel=Channel.WEB,
    )
    event = ConsentEvent.objects.get(subject_public_id=opt_out.public_id)
    return World(creator, photo, claim, token, organization, opt_out, event)


def objects(world: World) -> dict[str, int]:
    return {
        "registry/creator": world.creator.pk,
        "registry/photo": world.photo.pk,
        "registry/claim": world.claim.pk,
        "registry/personaltoken": world.token.pk,
        "registry/consentevent": world.event.pk,
        "optout/organization": world.organization.pk,
        "optout/optout": world.opt_out.pk,
    }


MODELS = [
    "registry/creator",
    "registry/photo",
    "registry/claim",
    "registry/personaltoken",
    "registry/consentevent",
    "optout/organization",
    "optout/optout",
]


@pytest.mark.parametrize("model", MODELS)
def test_changelist_and_change_page_of_every_model_render(
    admin_client: Client, world: World, model: str
) -> None:
    pk = objects(world)[model]

    changelist = admin_client.get(f"/admin/{model}/")
    change = admin_client.get(f"/admin/{model}/{pk}/change/")

    assert changelist.status_code == 200
    assert pk in [obj.pk for obj in changelist.context["cl"].result_list]
    assert change.status_code == 200
    assert change.context["original"].pk == pk


def test_every_model_has_an_admin_with_search_and_filters() -> None:
    models = [
        *apps.get_app_config("registry").get_models(),
        *apps.get_app_config("optout").get_models(),
    ]

    missing = [
        model._meta.label
        for model in models
        if not admin.site.is_registered(model)
        or not admin.site.get_model_admin(model).search_fields
        or not admin.site.get_model_admin(model).list_filter
    ]

    assert {model._meta.label for model in models} >= {
        "registry.Creator",
        "registry.Photo",
        "registry.Claim",
        "registry.PersonalToken",
        "registry.ConsentEvent",
        "optout.Organization",
        "optout.OptOut",
        "optout.Batch",
        "optout.ChunkShardResult",
    }
    assert missing == []


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        ("registry/creator", {"suspended_at__isempty": "0"}, "creator"),
        ("registry/creator", {"email_confirmed_at__isempty": "1"}, "creator"),
        ("registry/photo", {"channel__exact": "api"}, "photo"),
        ("registry/claim", {"kind__exact": "handle"}, "claim"),
        ("registry/claim", {"channel__exact": "api"}, "claim"),
        ("registry/personaltoken", {"revoked_at__isempty": "0"}, "token"),
        ("registry/consentevent", {"kind__exact": "opt_out_withdrawn"}, "event"),
        ("registry/consentevent", {"channel__exact": "api"}, "event"),
        ("optout/organization", {"suspended_at__isempty": "0"}, "organization"),
        ("optout/optout", {"withdrawn_at__isempty": "0"}, "opt_out"),
        ("optout/optout", {"scope__exact": "all_photos"}, "opt_out"),
    ],
)
def test_each_filter_narrows_the_list_to_the_matching_object(
    admin_client: Client, world: World, model: str, query: dict[str, str], expected: str
) -> None:
    # The world's objects are the ordinary ones (web, domain, active, ...): each
    # filter must drop them and find only the object made to match it.
    other = CreatorFactory(email_confirmed_at=None)
    creator_suspend(creator=other)
    [outcome] = photos_register_from_hashes(
        creator=other,
        items=[(None, HashLine(sha256=secrets.token_hex(32)))],
        channel=Channel.API,
    )
    claim, _ = claim_add(creator=other, kind="handle", value="instagram:bob", channel="api")
    token, _ = token_create(creator=other, name="old")
    token_revoke(token=token)
    organization = OrganizationFactory(name="Gone Lab", suspended_at=timezone.now())
    opt_out = opt_out_file(creator=other, uses=["data_mining"], scope="all_photos", channel="api")
    opt_out = opt_out_withdraw(creator=other, opt_out_id=opt_out.public_id, channel="api")
    matching = {
        "creator": other,
        "photo": Photo.objects.get(public_id=outcome.photo),
        "claim": claim,
        "token": token,
        "event": ConsentEvent.objects.get(kind="opt_out_withdrawn"),
        "organization": organization,
        "opt_out": opt_out,
    }
    if model == "registry/consentevent" and "channel__exact" in query:
        # Every ledger row of the other creator came through the API.
        expected_pks = set(
            ConsentEvent.objects.filter(creator_public_id=other.public_id).values_list(
                "pk", flat=True
            )
        )
    else:
        expected_pks = {matching[expected].pk}

    unfiltered = admin_client.get(f"/admin/{model}/")
    response = admin_client.get(f"/admin/{model}/", query)

    assert response.status_code == 200
    assert response.context["cl"].has_filters
    assert getattr(world, expected).pk in [o.pk for o in unfiltered.context["cl"].result_list]
    assert {obj.pk for obj in response.context["cl"].result_list} == expected_pks


def test_the_admin_is_closed_to_creators(client: Client, world: World) -> None:
    assert world.creator.user is not None
    client.force_login(world.creator.user)

    response = client.get("/admin/optout/optout/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        ("registry/creator", "alice@example.org", "creator"),
        ("registry/photo", "{photo.sha256}", "photo"),
        ("registry/photo", "{photo.public_id}", "photo"),
        ("registry/claim", "alice.example", "claim"),
        ("registry/personaltoken", "laptop", "token"),
        ("registry/consentevent", "{opt_out.public_id}", "event"),
        ("optout/organization", "acme", "organization"),
        ("optout/optout", "{opt_out.public_id}", "opt_out"),
        ("optout/optout", "alice@example.org", "opt_out"),
    ],
)
def test_search_finds_the_object_and_only_it(
    admin_client: Client, world: World, model: str, query: str, expected: str
) -> None:
    other = CreatorFactory(user=UserFactory(email="bob@example.org"))
    photo_of(other)
    claim_add(creator=other, kind="domain", value="bob.example", channel="web")
    token_create(creator=other, name="phone")
    OrganizationFactory(name="Other Lab")
    opt_out_file(creator=other, uses=["data_mining"], scope="all_photos", channel="web")
    term = query.format(photo=world.photo, opt_out=world.opt_out)

    response = admin_client.get(f"/admin/{model}/", {"q": term})

    assert response.status_code == 200
    found = [obj.pk for obj in response.context["cl"].result_list]
    assert found == [getattr(world, expected).pk]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("term", ["not-a-uuid", "12", "<script>"])
def test_search_with_any_text_answers_200(
    admin_client: Client, world: World, model: str, term: str
) -> None:
    response = admin_client.get(f"/admin/{model}/", {"q": term})

    assert response.status_code == 200


def test_consent_events_cannot_be_added_changed_or_deleted(
    admin_client: Client, world: World
) -> None:
    before = ConsentEvent.objects.values().get(pk=world.event.pk)
    count = ConsentEvent.objects.count()
    url = f"/admin/registry/consentevent/{world.event.pk}"

    add = admin_client.get("/admin/registry/consentevent/add/")
    add_post = admin_client.post("/admin/registry/consentevent/add/", {"actor": "forged"})
    change_post = admin_client.post(f"{url}/change/", {"actor": "forged", "kind": "claim_added"})
    delete = admin_client.get(f"{url}/delete/")
    delete_post = admin_client.post(f"{url}/delete/", {"post": "yes"})
    changelist = admin_client.get("/admin/registry/consentevent/")
    view = admin_client.get(f"{url}/change/")

    assert [r.status_code for r in (add, add_post, change_post, delete, delete_post)] == [403] * 5
    assert "delete_selected" not in changelist.context["cl"].model_admin.get_actions(
        changelist.wsgi_request
    )
    assert view.status_code == 200
    assert view.context["has_change_permission"] is False
    assert b'name="_save"' not in view.content
    assert ConsentEvent.objects.values().get(pk=world.event.pk) == before
    assert ConsentEvent.objects.count() == count


@pytest.mark.parametrize(
    "model", ["registry/creator", "registry/photo", "registry/claim", "optout/optout"]
)
def test_evidence_cannot_be_added_or_deleted_from_the_admin(
    admin_client: Client, world: World, model: str
) -> None:
    pk = objects(world)[model]

    add = admin_client.get(f"/admin/{model}/add/")
    delete = admin_client.post(f"/admin/{model}/{pk}/delete/", {"post": "yes"})
    bulk = admin_client.post(
        f"/admin/{model}/", {"action": "delete_selected", "_selected_action": [pk], "post": "yes"}
    )

    assert (add.status_code, delete.status_code) == (403, 403)
    # delete_selected is not offered: a changelist with other actions answers
    # "no action selected" (302), one without actions just renders (200).
    assert bulk.status_code == (302 if model in ("registry/creator", "optout/optout") else 200)
    assert Photo.objects.filter(pk=world.photo.pk).exists()
    assert Creator.objects.filter(pk=world.creator.pk).exists()
    assert Claim.objects.filter(pk=world.claim.pk).exists()
    assert OptOut.objects.filter(pk=world.opt_out.pk).exists()


def test_photo_hashes_cannot_be_edited_in_the_admin(admin_client: Client, world: World) -> None:
    before = Photo.objects.values("sha256", "pdq", "phash", "registered_version").get(
        pk=world.photo.pk
    )

    response = admin_client.post(
        f"/admin/registry/photo/{world.photo.pk}/change/",
        {"sha256": "0" * 64, "pdq": "0" * 64, "phash": "0" * 16, "registered_version": 1},
    )

    assert response.status_code == 302
    after = Photo.objects.values("sha256", "pdq", "phash", "registered_version").get(
        pk=world.photo.pk
    )
    assert after == before


def withdraw(client: Client, opt_outs: list[OptOut]) -> int:
    response = client.post(
        "/admin/optout/optout/",
        {"action": "withdraw", "_selected_action": [o.pk for o in opt_outs], "index": 0},
    )
    return response.status_code


def test_withdraw_action_writes_one_ledger_event_per_active_opt_out(
    admin_client: Client, world: World
) -> None:
    second = opt_out_file(
        creator=world.creator, uses=["data_mining"], scope="all_photos", channel="api"
    )
    earlier = opt_out_file(
        creator=world.creator, uses=["ai_inference"], scope="all_photos", channel="api"
    )
    earlier = opt_out_withdraw(creator=world.creator, opt_out_id=earlier.public_id, channel="api")
    top = ConsentEvent.objects.order_by("-registry_version").first()
    assert top is not None

    status = withdraw(admin_client, [world.opt_out, second, earlier])

    assert status == 302
    events = list(
        ConsentEvent.objects.filter(registry_version__gt=top.registry_version).order_by(
            "registry_version"
        )
    )
    assert sorted((e.kind, e.subject_public_id, e.actor, e.channel) for e in events) == sorted(
        [
            (ConsentEvent.Kind.OPT_OUT_WITHDRAWN, o.public_id, "operator:admin", "admin")
            for o in (world.opt_out, second)
        ]
    )
    stored = {o.pk: o for o in OptOut.objects.all()}
    assert {stored[world.opt_out.pk].withdrawn_version, stored[second.pk].withdrawn_version} == {
        e.registry_version for e in events
    }
    assert stored[earlier.pk].withdrawn_version == earlier.withdrawn_version


def test_withdraw_action_on_withdrawn_opt_outs_is_a_no_op(
    admin_client: Client, world: World
) -> None:
    withdraw(admin_client, [world.opt_out])
    withdrawn_version = OptOut.objects.get(pk=world.opt_out.pk).withdrawn_version
    count = ConsentEvent.objects.count()

    status = withdraw(admin_client, [world.opt_out])

    assert status == 302
    assert ConsentEvent.objects.count() == count
    assert OptOut.objects.get(pk=world.opt_out.pk).withdrawn_version == withdrawn_version


def test_suspend_action_suspends_the_selected_creators_once(
    admin_client: Client, world: World
) -> None:
    bystander = CreatorFactory()

    admin_client.post(
        "/admin/registry/creator/", {"action": "suspend", "_selected_action": [world.creator.pk]}
    )
    first = Creator.objects.get(pk=world.creator.pk).suspended_at
    admin_client.post(
        "/admin/registry/creator/", {"action": "suspend", "_selected_action": [world.creator.pk]}
    )

    assert first is not None
    assert Creator.objects.get(pk=world.creator.pk).suspended_at == first
    assert Creator.objects.get(pk=bystander.pk).suspended_at is None


def test_revoke_action_revokes_the_selected_tokens(admin_client: Client, world: World) -> None:
    response = admin_client.post(
        "/admin/registry/personaltoken/",
        {"action": "revoke", "_selected_action": [world.token.pk]},
    )

    assert response.status_code == 302
    assert PersonalToken.objects.get(pk=world.token.pk).revoked_at is not None


@pytest.mark.parametrize("model", ["registry/photo", "optout/optout", "registry/consentevent"])
def test_changelist_queries_do_not_grow_with_the_rows(
    admin_client: Client, world: World, model: str
) -> None:
    admin_client.get(f"/admin/{model}/")  # warm up: session, content types
    with CaptureQueriesContext(connection) as few:
        admin_client.get(f"/admin/{model}/")
    for index in range(5):
        creator = CreatorFactory()
        photo_of(creator, f"{index}.jpg")
        opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")

    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(f"/admin/{model}/")

    assert len(response.context["cl"].result_list) >= 6
    assert len(many.captured_queries) == len(few.captured_queries)


def test_engine_state_shows_each_engines_loaded_version_and_is_read_only(
    admin_client: Client,
) -> None:
    state = EngineState.objects.create(
        worker="celery@match-7:4242",
        shard=1,
        shards=2,
        kind="pdq",
        loaded_version=314,
        size=2718,
        updated_at=timezone.now(),
    )

    listing = admin_client.get("/admin/optout/enginestate/?kind=pdq")
    change = admin_client.post(
        f"/admin/optout/enginestate/{state.pk}/change/", {"loaded_version": 1}
    )

    assert listing.status_code == 200
    html = listing.content.decode()
    assert "celery@match-7:4242" in html
    assert "314" in html and "2718" in html
    assert change.status_code == 403
    state.refresh_from_db()
    assert state.loaded_version == 314


def test_a_changed_opt_out_shows_what_it_replaces_read_only(
    admin_client: Client, world: World
) -> None:
    new = opt_out_change(
        creator=world.creator,
        public_id=world.opt_out.public_id,
        uses=["data_mining"],
        scope="all_photos",
        channel=Channel.WEB,
    )

    response = admin_client.get(f"/admin/optout/optout/{new.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="replaces"' not in html  # read-only: no input
    assert str(world.opt_out.public_id) in html
    assert "Replaces" in html
    assert "replaces" in response.context["adminform"].readonly_fields
