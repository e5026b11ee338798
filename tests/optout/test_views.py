"""Creator pages of the optout app, through Django's test client: dashboard,
filing, changing and withdrawing opt-outs, export, account deletion, and isolation
between creators."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from optout import selectors
from optout.models import OptOut
from optout.services import opt_out_file, opt_out_withdraw
from registry.models import Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import claim_add, token_create
from tests.factories import PASSWORD, CreatorFactory, OrganizationFactory, PhotoFactory
from tests.web import signed_in

pytestmark = pytest.mark.django_db


def file_all_photos(creator: Creator, uses: tuple[str, ...] = ("ai_training",)) -> OptOut:
    return opt_out_file(creator=creator, uses=list(uses), scope="all_photos", channel="web")


def ledger(creator: Creator) -> list[str]:
    return list(
        ConsentEvent.objects.filter(creator_public_id=creator.public_id)
        .order_by("registry_version")
        .values_list("kind", flat=True)
    )


# --- dashboard ------------------------------------------------------------------------


def test_dashboard_counts_the_creators_photos_claims_and_active_opt_outs(client: Client) -> None:
    creator = signed_in(client)
    PhotoFactory.create_batch(3, creator=creator)
    PhotoFactory(creator=CreatorFactory())
    claim_add(creator=creator, kind="domain", value="example.com", channel="web")
    file_all_photos(creator)
    withdrawn = file_all_photos(creator, ("data_mining",))
    opt_out_withdraw(creator=creator, opt_out_id=withdrawn.public_id, channel="web")

    response = client.get("/me/")

    assert response.status_code == 200
    counts = response.context["counts"]
    assert (counts.photos, counts.claims, counts.active_opt_outs) == (3, 1, 1)
    assert [event.kind for event in response.context["events"]] == [
        "opt_out_withdrawn",
        "opt_out_filed",
        "opt_out_filed",
        "claim_added",
    ]
    assert 'href="/me/export/"' in response.content.decode()


# --- opt-outs ------------------------------------------------------------------------------


def test_opt_outs_page_offers_uses_scopes_and_the_creators_own_photos(client: Client) -> None:
    creator = signed_in(client)
    mine = PhotoFactory(creator=creator, original_filename="mine.jpg")
    theirs = PhotoFactory(creator=CreatorFactory(), original_filename="theirs.jpg")
    organization = OrganizationFactory(name="Good Lab")

    response = client.get("/me/opt-outs/")

    assert response.status_code == 200
    html = response.content.decode()
    for use in ("data_mining", "ai_training", "ai_generative_training", "ai_inference"):
        assert f'type="checkbox" name="uses" value="{use}"' in html
    for scope in ("all_photos", "photos", "claims"):
        assert f'type="radio" name="scope" value="{scope}"' in html
    assert f'value="{mine.public_id}"' in html
    assert f'value="{theirs.public_id}"' not in html
    assert f'value="{organization.public_id}"' in html
    assert "privacy notice version 2026-11" in html
    assert "<legend>Uses you refuse:</legend>" in html


def test_filing_an_opt_out_for_all_photos_records_it_in_the_ledger(client: Client) -> None:
    creator = signed_in(client)

    response = client.post(
        "/me/opt-outs/",
        {"uses": ["ai_training", "data_mining"], "scope": "all_photos"},
        follow=True,
    )

    assert response.redirect_chain == [("/me/opt-outs/", 302)]
    opt_out = OptOut.objects.get(creator=creator)
    assert (opt_out.uses, opt_out.scope, opt_out.channel, opt_out.notice_version) == (
        ["data_mining", "ai_training"],
        "all_photos",
        "web",
        "2026-11",
    )
    assert ledger(creator) == ["opt_out_filed"]
    assert f"from registry version {opt_out.filed_version} on" in response.content.decode()
    assert f'action="/me/opt-outs/{opt_out.public_id}/withdraw/"' in response.content.decode()


def test_filing_an_opt_out_for_chosen_photos_with_an_exception(client: Client) -> None:
    creator = signed_in(client)
    chosen, other = PhotoFactory(creator=creator), PhotoFactory(creator=creator)
    organization = OrganizationFactory()

    response = client.post(
        "/me/opt-outs/",
        {
            "uses": ["ai_generative_training"],
            "scope": "photos",
            "photos": [str(chosen.public_id)],
            "exceptions": [str(organization.public_id)],
        },
    )

    assert response.status_code == 302
    opt_out = OptOut.objects.get(creator=creator)
    assert list(opt_out.photos.all()) == [chosen]
    assert other not in opt_out.photos.all()
    assert list(opt_out.exceptions.all()) == [organization]


def test_filing_a_photos_opt_out_without_photos_shows_the_reason_and_files_nothing(
    client: Client,
) -> None:
    creator = signed_in(client)
    PhotoFactory(creator=creator)

    response = client.post("/me/opt-outs/", {"uses": ["ai_training"], "scope": "photos"})

    assert response.status_code == 400
    assert "choose at least one photo for scope" in response.content.decode()
    assert OptOut.objects.count() == 0
    assert ledger(creator) == []


def test_filing_without_a_use_shows_the_reason_and_files_nothing(client: Client) -> None:
    signed_in(client)

    response = client.post("/me/opt-outs/", {"scope": "all_photos"})

    assert response.status_code == 400
    assert "Choose at least one use to refuse." in response.content.decode()
    assert OptOut.objects.count() == 0


@pytest.mark.parametrize("scope", ["photos", "claims"])
def test_filing_an_opt_out_over_another_creators_photo_or_claim_is_refused(
    client: Client, scope: str
) -> None:
    signed_in(client)
    other = CreatorFactory()
    if scope == "photos":
        theirs: Photo | Claim = PhotoFactory(creator=other)
    else:
        theirs, _ = claim_add(creator=other, kind="domain", value="bob.example", channel="web")

    response = client.post(
        "/me/opt-outs/",
        {"uses": ["ai_training"], "scope": scope, scope: [str(theirs.public_id)]},
    )

    assert response.status_code == 400
    assert "is not one of the available choices" in response.content.decode()
    assert OptOut.objects.count() == 0


def test_filing_an_opt_out_for_chosen_claims(client: Client) -> None:
    creator = signed_in(client)
    chosen, _ = claim_add(creator=creator, kind="domain", value="alice.example", channel="web")
    other, _ = claim_add(creator=creator, kind="handle", value="instagram:alice", channel="web")

    response = client.post(
        "/me/opt-outs/",
        {"uses": ["ai_training"], "scope": "claims", "claims": [str(chosen.public_id)]},
    )

    assert response.status_code == 302
    opt_out = OptOut.objects.get(creator=creator)
    assert (opt_out.scope, list(opt_out.claims.all())) == ("claims", [chosen])
    assert other not in opt_out.claims.all()
    assert ledger(creator)[-1] == "opt_out_filed"


def test_withdrawing_an_opt_out_is_one_post(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator)

    response = client.post(f"/me/opt-outs/{opt_out.public_id}/withdraw/", follow=True)

    assert response.redirect_chain == [("/me/opt-outs/", 302)]
    opt_out.refresh_from_db()
    assert opt_out.withdrawn_at is not None
    assert opt_out.withdrawn_version is not None
    assert ledger(creator) == ["opt_out_filed", "opt_out_withdrawn"]
    html = response.content.decode()
    assert f"stops applying from registry version {opt_out.withdrawn_version}" in html
    assert "withdrawn" in html
    assert f'action="/me/opt-outs/{opt_out.public_id}/withdraw/"' not in html


def test_withdrawing_twice_changes_nothing_the_second_time(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator)
    client.post(f"/me/opt-outs/{opt_out.public_id}/withdraw/")
    opt_out.refresh_from_db()
    first = (opt_out.withdrawn_at, opt_out.withdrawn_version)

    response = client.post(f"/me/opt-outs/{opt_out.public_id}/withdraw/", follow=True)

    opt_out.refresh_from_db()
    assert (opt_out.withdrawn_at, opt_out.withdrawn_version) == first
    assert ledger(creator) == ["opt_out_filed", "opt_out_withdrawn"]
    assert "already withdrawn" in response.content.decode()


def test_withdraw_is_a_post(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator)

    response = client.get(f"/me/opt-outs/{opt_out.public_id}/withdraw/")

    assert response.status_code == 405
    opt_out.refresh_from_db()
    assert opt_out.withdrawn_at is None


def test_opt_outs_page_reads_a_fixed_number_of_queries(
    client: Client, django_assert_num_queries
) -> None:  # type: ignore[no-untyped-def]
    creator = signed_in(client)
    organization = OrganizationFactory()
    claim, _ = claim_add(creator=creator, kind="domain", value="example.com", channel="web")
    for _ in range(5):
        opt_out_file(
            creator=creator,
            uses=["ai_training"],
            scope="claims",
            claims=[claim.public_id],
            exceptions=[organization.public_id],
            channel="web",
        )

    # session, user, creator, form choices (photos, count, claims, organizations),
    # opt-outs (count, page, exceptions, claims)
    with django_assert_num_queries(11):
        response = client.get("/me/opt-outs/")

    assert response.status_code == 200
    assert len(response.context["page"].object_list) == 5


# --- export ----------------------------------------------------------------------------------


def test_export_downloads_all_the_creators_data_as_json(client: Client) -> None:
    creator = signed_in(client)
    assert creator.user is not None
    photo = PhotoFactory(creator=creator, original_filename="a.jpg")
    PhotoFactory(creator=CreatorFactory())
    claim, _ = claim_add(creator=creator, kind="domain", value="example.com", channel="web")
    organization = OrganizationFactory(name="Lab X")
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[photo.public_id],
        exceptions=[organization.public_id],
        channel="web",
    )
    token, raw = token_create(creator=creator, name="laptop")

    response = client.get("/me/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="opt-out-registry-export-'
    )
    data = json.loads(response.content)
    assert set(data) == {
        "exported_at",
        "account",
        "photos",
        "claims",
        "opt_outs",
        "consent_events",
        "tokens",
    }
    assert data["account"]["email"] == creator.user.email
    assert data["account"]["id"] == str(creator.public_id)
    assert data["account"]["email_confirmed_at"] == creator.email_confirmed_at.isoformat()
    assert [
        (p["id"], p["sha256"], p["pdq"], p["phash"], p["filename"]) for p in data["photos"]
    ] == [(str(photo.public_id), photo.sha256, photo.pdq, photo.phash, "a.jpg")]
    assert [(c["id"], c["kind"], c["value"]) for c in data["claims"]] == [
        (str(claim.public_id), "domain", "example.com")
    ]
    assert data["opt_outs"] == [
        {
            "id": str(opt_out.public_id),
            "uses": ["ai_training"],
            "scope": "photos",
            "photos": [str(photo.public_id)],
            "claims": [],
            "exceptions": [{"id": str(organization.public_id), "name": "Lab X"}],
            "channel": "web",
            "notice_version": "2026-11",
            "filed_version": opt_out.filed_version,
            "effective_at": opt_out.effective_at.isoformat(),
            "withdrawn_version": None,
            "withdrawn_at": None,
            "replaces": None,
        }
    ]
    assert [e["kind"] for e in data["consent_events"]] == ["claim_added", "opt_out_filed"]
    assert data["tokens"] == [
        {
            "id": str(token.public_id),
            "name": "laptop",
            "prefix": token.prefix,
            "created_at": token.created_at.isoformat(),
            "last_used_at": None,
            "revoked_at": None,
        }
    ]
    assert raw not in response.content.decode()
    assert token.digest not in response.content.decode()


# --- account deletion -----------------------------------------------------------------------


def test_delete_page_asks_for_an_explicit_choice_and_the_password(client: Client) -> None:
    signed_in(client)

    response = client.get("/me/delete/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Keep my opt-outs in force as anonymous hash-only suppression records" in html
    assert "Withdraw my opt-outs and delete my photos" in html
    assert 'type="radio" name="opt_outs" value="keep" required' in html
    assert "checked" not in html
    assert 'type="password" name="password"' in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"password": PASSWORD}, "Choose what happens to your opt-outs."),
        ({"opt_outs": "keep", "password": "not my password"}, "That is not your password."),
    ],
)
def test_delete_without_a_choice_or_with_a_wrong_password_deletes_nothing(
    client: Client, data: dict[str, str], message: str
) -> None:
    creator = signed_in(client)
    PhotoFactory(creator=creator)
    file_all_photos(creator)

    response = client.post("/me/delete/", data)

    assert response.status_code == 400
    assert message in response.content.decode()
    creator.refresh_from_db()
    assert creator.anonymized_at is None
    assert creator.user is not None
    assert Photo.objects.filter(creator=creator).count() == 1
    assert ledger(creator) == ["opt_out_filed"]


def test_delete_keeping_opt_outs_leaves_anonymous_hash_only_records(client: Client) -> None:
    creator = signed_in(client)
    covered = PhotoFactory(creator=creator, original_filename="covered.jpg")
    uncovered = PhotoFactory(creator=creator, original_filename="loose.jpg")
    claim_add(creator=creator, kind="domain", value="example.com", channel="web")
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[covered.public_id],
        channel="web",
    )
    token_create(creator=creator, name="laptop")
    user_id = creator.user_id

    response = client.post("/me/delete/", {"opt_outs": "keep", "password": PASSWORD}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert "Your opt-outs stay in force" in response.content.decode()
    assert "_auth_user_id" not in client.session
    creator.refresh_from_db()
    assert creator.user is None
    assert creator.anonymized_at is not None
    assert not get_user_model().objects.filter(pk=user_id).exists()
    opt_out.refresh_from_db()
    assert opt_out.withdrawn_at is None
    assert list(
        Photo.objects.filter(creator=creator).values_list("sha256", "original_filename")
    ) == [(covered.sha256, "")]
    assert not Photo.objects.filter(pk=uncovered.pk).exists()
    assert Claim.objects.filter(creator=creator).count() == 0
    assert PersonalToken.objects.filter(creator=creator).count() == 0
    assert ledger(creator) == ["claim_added", "opt_out_filed", "account_deleted"]
    deleted = ConsentEvent.objects.get(creator_public_id=creator.public_id, kind="account_deleted")
    assert (deleted.channel, deleted.details) == (
        "web",
        {"opt_outs_kept": True, "active_opt_outs": 1},
    )


def test_delete_withdrawing_opt_outs_removes_photos_and_claims(client: Client) -> None:
    creator = signed_in(client)
    PhotoFactory.create_batch(2, creator=creator)
    claim_add(creator=creator, kind="domain", value="example.com", channel="web")
    opt_out = file_all_photos(creator)

    response = client.post("/me/delete/", {"opt_outs": "withdraw", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "_auth_user_id" not in client.session
    creator.refresh_from_db()
    assert (creator.user, creator.anonymized_at is not None) == (None, True)
    opt_out.refresh_from_db()
    assert opt_out.withdrawn_at is not None
    assert Photo.objects.filter(creator=creator).count() == 0
    assert Claim.objects.filter(creator=creator).count() == 0
    assert ledger(creator) == [
        "claim_added",
        "opt_out_filed",
        "opt_out_withdrawn",
        "account_deleted",
    ]
    deleted = ConsentEvent.objects.get(creator_public_id=creator.public_id, kind="account_deleted")
    assert deleted.details == {"opt_outs_kept": False, "active_opt_outs": 0}
    assert client.get("/me/").status_code == 302


# --- isolation between creators ---------------------------------------------------------------


def test_another_creators_objects_are_not_found(client: Client) -> None:
    alice = CreatorFactory()
    photo = PhotoFactory(creator=alice)
    token, _ = token_create(creator=alice, name="alice's token")
    opt_out = file_all_photos(alice)
    signed_in(client)  # Bob

    photo_page = client.get(f"/me/photos/{photo.public_id}/")
    revoke = client.post(f"/me/tokens/{token.public_id}/revoke/")
    withdraw = client.post(f"/me/opt-outs/{opt_out.public_id}/withdraw/")

    assert [photo_page.status_code, revoke.status_code, withdraw.status_code] == [404, 404, 404]
    token.refresh_from_db()
    opt_out.refresh_from_db()
    assert token.revoked_at is None
    assert opt_out.withdrawn_at is None
    assert ledger(alice) == ["opt_out_filed"]


def test_list_pages_show_none_of_another_creators_objects(client: Client) -> None:
    alice = CreatorFactory()
    photo = PhotoFactory(creator=alice, original_filename="alice-secret.jpg")
    claim, _ = claim_add(creator=alice, kind="domain", value="alice-site.example", channel="web")
    token_create(creator=alice, name="alice-token")
    opt_out = file_all_photos(alice)
    signed_in(client)  # Bob

    pages = {
        path: client.get(path).content.decode()
        for path in (
            "/me/",
            "/me/photos/",
            "/me/claims/",
            "/me/opt-outs/",
            "/me/consent/",
            "/me/tokens/",
        )
    }
    export = json.loads(client.get("/me/export/").content)

    for path, html in pages.items():
        for secret in (
            "alice-secret.jpg",
            str(photo.public_id),
            "alice-site.example",
            str(claim.public_id),
            "alice-token",
            str(opt_out.public_id),
        ):
            assert secret not in html, (path, secret)
    assert (export["photos"], export["claims"], export["opt_outs"], export["tokens"]) == (
        [],
        [],
        [],
        [],
    )
    assert export["consent_events"] == []


def test_me_pages_refuse_an_unconfirmed_creator_with_a_session(client: Client) -> None:
    creator = signed_in(client, CreatorFactory(email_confirmed_at=None))

    response = client.get("/me/opt-outs/")

    assert response.status_code == 403
    assert creator.is_confirmed is False


def test_suspended_creator_cannot_withdraw_or_file(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator)
    Creator.objects.filter(pk=creator.pk).update(suspended_at=timezone.now())

    withdraw = client.post(f"/me/opt-outs/{opt_out.public_id}/withdraw/")
    filed = client.post("/me/opt-outs/", {"uses": ["ai_training"], "scope": "all_photos"})

    assert (withdraw.status_code, filed.status_code) == (403, 403)
    assert OptOut.objects.filter(creator=creator).count() == 1
    assert ledger(creator) == ["opt_out_filed"]


# --- changing an opt-out -------------------------------------------------------------------


def checked(html: str, name: str, value: str) -> bool:
    """Whether the checkbox or radio ``name``=``value`` is rendered ticked."""
    inputs = re.findall(rf'<input[^>]*name="{name}"[^>]*value="{re.escape(value)}"[^>]*>', html)
    assert len(inputs) == 1, (name, value, inputs)
    return " checked" in inputs[0]


def test_each_active_opt_out_links_to_its_change_page_prefilled_with_it(client: Client) -> None:
    creator = signed_in(client)
    chosen, other = PhotoFactory(creator=creator), PhotoFactory(creator=creator)
    lab, elsewhere = OrganizationFactory(name="Lab A"), OrganizationFactory(name="Lab B")
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training", "ai_inference"],
        scope="photos",
        photos=[chosen.public_id],
        exceptions=[lab.public_id],
        channel="web",
    )
    withdrawn = file_all_photos(creator)
    opt_out_withdraw(creator=creator, opt_out_id=withdrawn.public_id, channel="web")

    listing = client.get("/me/opt-outs/").content.decode()
    response = client.get(f"/me/opt-outs/{opt_out.public_id}/change/")

    assert f'href="/me/opt-outs/{opt_out.public_id}/change/"' in listing
    assert f"/me/opt-outs/{withdrawn.public_id}/change/" not in listing
    assert response.status_code == 200
    html = response.content.decode()
    assert f'action="/me/opt-outs/{opt_out.public_id}/change/"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert [checked(html, "uses", use) for use in ("ai_training", "ai_inference")] == [True] * 2
    assert not checked(html, "uses", "data_mining")
    assert checked(html, "scope", "photos") and not checked(html, "scope", "all_photos")
    assert checked(html, "photos", str(chosen.public_id))
    assert not checked(html, "photos", str(other.public_id))
    assert checked(html, "exceptions", str(lab.public_id))
    assert not checked(html, "exceptions", str(elsewhere.public_id))
    # Every field is labelled.
    for name in ("uses", "scope", "photos", "exceptions"):
        assert f'<label for="id_{name}_0">' in html
    assert ConsentEvent.objects.filter(creator_public_id=creator.public_id).count() == 3


def test_changing_an_opt_out_on_its_page_supersedes_it_and_shows_in_history_and_export(
    client: Client,
) -> None:
    creator = signed_in(client)
    photo_a, photo_b = PhotoFactory(creator=creator), PhotoFactory(creator=creator)
    old = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[photo_a.public_id],
        channel="web",
    )

    response = client.post(
        f"/me/opt-outs/{old.public_id}/change/",
        {"uses": ["ai_training", "data_mining"], "scope": "photos", "photos": [photo_b.public_id]},
        follow=True,
    )

    assert response.redirect_chain == [("/me/opt-outs/", 302)]
    old.refresh_from_db()
    new = OptOut.objects.get(replaces=old)
    assert (new.uses, new.channel, list(new.photos.all())) == (
        ["data_mining", "ai_training"],
        "web",
        [photo_b],
    )
    assert old.withdrawn_version == new.filed_version
    assert ledger(creator) == ["opt_out_filed", "opt_out_changed"]
    html = response.content.decode()
    assert f"Opt-out changed; from registry version {new.filed_version} on" in html
    assert f'href="/me/opt-outs/{new.public_id}/change/"' in html
    assert f'href="/me/opt-outs/{old.public_id}/change/"' not in html
    assert "changed from an earlier opt-out" in html
    assert f"replaced at version {new.filed_version}" in html
    assert '<span class="status bad">withdrawn</span>' not in html
    history = client.get("/me/consent/").content.decode()
    assert "opt-out changed: data_mining, ai_training" in history
    exported = json.loads(client.get("/me/export/").content)
    assert [(o["id"], o["replaces"]) for o in exported["opt_outs"]] == [
        (str(old.public_id), None),
        (str(new.public_id), str(old.public_id)),
    ]
    assert exported["consent_events"][-1]["details"]["replaces"] == str(old.public_id)


def test_posting_the_change_form_unchanged_changes_nothing(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator, ("ai_training",))

    response = client.post(
        f"/me/opt-outs/{opt_out.public_id}/change/",
        {"uses": ["ai_training"], "scope": "all_photos"},
        follow=True,
    )

    assert response.redirect_chain == [("/me/opt-outs/", 302)]
    assert "You changed nothing" in response.content.decode()
    assert ledger(creator) == ["opt_out_filed"]
    assert OptOut.objects.get(pk=opt_out.pk).is_active


def test_an_invalid_change_shows_the_reason_and_changes_nothing(client: Client) -> None:
    creator = signed_in(client)
    opt_out = file_all_photos(creator)

    response = client.post(
        f"/me/opt-outs/{opt_out.public_id}/change/", {"uses": ["ai_training"], "scope": "photos"}
    )

    assert response.status_code == 400
    assert "choose at least one photo for scope" in response.content.decode()
    assert ledger(creator) == ["opt_out_filed"]
    assert OptOut.objects.get(pk=opt_out.pk).is_active


def test_another_creators_an_unknown_or_a_withdrawn_opt_out_has_no_change_page(
    client: Client,
) -> None:
    alice_opt_out = file_all_photos(CreatorFactory())
    bob = signed_in(client)
    withdrawn = file_all_photos(bob)
    opt_out_withdraw(creator=bob, opt_out_id=withdrawn.public_id, channel="web")
    body = {"uses": ["data_mining"], "scope": "all_photos"}
    ids = [alice_opt_out.public_id, uuid.uuid4(), withdrawn.public_id]

    statuses = [client.get(f"/me/opt-outs/{i}/change/").status_code for i in ids] + [
        client.post(f"/me/opt-outs/{i}/change/", body).status_code for i in ids
    ]

    assert statuses == [404] * 6
    assert ledger(alice_opt_out.creator) == ["opt_out_filed"]
    assert ledger(bob) == ["opt_out_filed", "opt_out_withdrawn"]


def test_the_change_form_needs_the_csrf_token() -> None:
    csrf_client = Client(enforce_csrf_checks=True)
    creator = signed_in(csrf_client)
    opt_out = file_all_photos(creator)

    response = csrf_client.post(
        f"/me/opt-outs/{opt_out.public_id}/change/",
        {"uses": ["data_mining"], "scope": "all_photos"},
    )

    assert response.status_code == 403
    assert ledger(creator) == ["opt_out_filed"]


def test_the_change_form_keeps_photos_older_than_the_form_lists(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selectors, "OPT_OUT_FORM_MAX_PHOTOS", 1)
    creator = signed_in(client)
    oldest = PhotoFactory(creator=creator)
    newest = PhotoFactory(creator=creator)
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[oldest.public_id],
        channel="web",
    )

    html = client.get(f"/me/opt-outs/{opt_out.public_id}/change/").content.decode()

    assert checked(html, "photos", str(oldest.public_id))
    assert not checked(html, "photos", str(newest.public_id))
