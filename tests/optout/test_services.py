"""Filing and changing opt-outs (validation, the ledger) and deleting a
creator's account, both ways."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError

from optout.models import OptOut
from optout.services import (
    creator_delete,
    opt_out_change,
    opt_out_file,
    opt_out_notice_send,
    opt_out_withdraw,
)
from registry.ledger import registry_version_current
from registry.models import Channel, Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import claim_add, photos_register_from_hashes, token_create
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory, UserFactory


def photos_of(creator: Creator, count: int) -> list[Photo]:
    lines = [
        HashLine(sha256=secrets.token_hex(32), pdq=secrets.token_hex(32), filename=f"{i}.jpg")
        for i in range(count)
    ]
    photos_register_from_hashes(
        creator=creator, items=[(None, line) for line in lines], channel=Channel.WEB
    )
    by_sha = {photo.sha256: photo for photo in Photo.objects.filter(creator=creator)}
    return [by_sha[line.sha256] for line in lines]


def state() -> tuple[int, int, int]:
    return OptOut.objects.count(), ConsentEvent.objects.count(), registry_version_current()


# --- opt_out_change ------------------------------------------------------------


def change(opt_out: OptOut, **arguments: Any) -> OptOut:
    return opt_out_change(
        creator=opt_out.creator, public_id=opt_out.public_id, channel=Channel.WEB, **arguments
    )


@pytest.mark.django_db
def test_changing_an_opt_out_supersedes_it_in_one_ledger_event_and_one_version(
    django_capture_on_commit_callbacks: Any,
) -> None:
    creator = CreatorFactory(user=UserFactory(email="alice@example.org"))
    photo_a, photo_b = photos_of(creator, 2)
    lab = OrganizationFactory(name="Lab")
    old = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[photo_a.public_id],
        channel=Channel.WEB,
    )
    events, version = ConsentEvent.objects.count(), registry_version_current()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        new = change(
            old,
            uses=["ai_inference", "data_mining"],
            scope="photos",
            photos=[photo_b.public_id],
            exceptions=[lab.public_id],
        )

    old.refresh_from_db()
    [event] = ConsentEvent.objects.filter(registry_version__gt=version)
    assert ConsentEvent.objects.count() == events + 1
    assert event.registry_version == version + 1 == registry_version_current()
    assert (event.kind, event.subject_public_id, event.channel) == (
        "opt_out_changed",
        new.public_id,
        "web",
    )
    assert event.creator_public_id == creator.public_id
    assert event.details == {
        "uses": ["data_mining", "ai_inference"],
        "scope": "photos",
        "photos": [str(photo_b.public_id)],
        "claims": [],
        "exceptions": [str(lab.public_id)],
        "replaces": str(old.public_id),
    }
    assert (old.withdrawn_version, old.withdrawn_at) == (event.registry_version, event.created_at)
    assert new.public_id != old.public_id and new.replaces == old
    assert list(old.replaced_by.all()) == [new]
    assert (new.filed_version, new.effective_at) == (event.registry_version, event.created_at)
    assert (new.uses, new.scope, new.channel) == (["data_mining", "ai_inference"], "photos", "web")
    assert list(new.photos.all()) == [photo_b] and list(new.exceptions.all()) == [lab]
    assert new.is_active and not old.is_active
    # The creator is told about the change as about a filing, naming the old one.
    assert len(callbacks) == 1
    assert opt_out_notice_send(opt_out_id=new.pk) is True
    [notice] = mail.outbox
    assert notice.subject == f"Your opt-out {new.public_id} is on file"
    assert f"Replaces your opt-out {old.public_id}, which stops applying" in notice.body
    assert OptOut.objects.get(pk=new.pk).notice_sent_at is not None


@pytest.mark.django_db
def test_changing_an_opt_out_to_what_it_is_changes_nothing(
    django_capture_on_commit_callbacks: Any,
) -> None:
    creator = CreatorFactory()
    [photo] = photos_of(creator, 1)
    lab = OrganizationFactory()
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training", "data_mining"],
        scope="photos",
        photos=[photo.public_id],
        exceptions=[lab.public_id],
        channel=Channel.WEB,
    )
    before = state()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        # Same request in another order, with a repeated id: still the same opt-out.
        same = change(
            opt_out,
            uses=["data_mining", "ai_training"],
            scope="photos",
            photos=[photo.public_id, photo.public_id],
            exceptions=[lab.public_id],
        )

    assert same == opt_out
    assert state() == before
    assert callbacks == []
    assert OptOut.objects.get(pk=opt_out.pk).withdrawn_version is None


@pytest.mark.django_db
def test_a_withdrawn_opt_out_cannot_be_changed() -> None:
    creator = CreatorFactory()
    opt_out = opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    opt_out_withdraw(creator=creator, opt_out_id=opt_out.public_id, channel=Channel.WEB)
    before = state()

    with pytest.raises(ValidationError) as raised:
        change(opt_out, uses=["data_mining"], scope="all_photos")

    assert raised.value.messages == [
        f"opt-out {opt_out.public_id} is withdrawn: a withdrawn opt-out cannot be changed; "
        "file a new one"
    ]
    assert state() == before


@pytest.mark.django_db
def test_another_creators_or_an_unknown_opt_out_does_not_exist_for_a_change() -> None:
    alice, bob = CreatorFactory(), CreatorFactory()
    opt_out = opt_out_file(creator=alice, uses=["ai_training"], scope="all_photos", channel="web")
    before = state()

    for public_id in (opt_out.public_id, uuid.uuid4()):
        with pytest.raises(OptOut.DoesNotExist):
            opt_out_change(
                creator=bob,
                public_id=public_id,
                uses=["data_mining"],
                scope="all_photos",
                channel=Channel.API,
            )

    assert state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        ({"uses": []}, "uses", "choose at least one use from data_mining, ai_training"),
        ({"uses": ["mind_reading"]}, "uses", "unknown use mind_reading; allowed:"),
        ({"scope": "photos"}, "photos", "choose at least one photo for scope 'photos'"),
        ({"claims": [uuid.UUID(int=1)]}, "claims", "claims can only be chosen with scope"),
        ({"exceptions": [uuid.UUID(int=2)]}, "exceptions", "unknown organization: "),
    ],
)
def test_a_change_is_validated_as_filing_is_and_invalid_changes_nothing(
    arguments: dict[str, Any], field: str, message: str
) -> None:
    creator = CreatorFactory()
    opt_out = opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    before = state()

    with pytest.raises(ValidationError) as raised:
        change(opt_out, **({"uses": ["data_mining"], "scope": "all_photos"} | arguments))

    assert list(raised.value.message_dict) == [field]
    assert raised.value.message_dict[field][0].startswith(message)
    assert state() == before
    assert OptOut.objects.get(pk=opt_out.pk).is_active


@pytest.mark.django_db
def test_a_changed_opt_out_can_be_changed_again_and_withdrawn() -> None:
    creator = CreatorFactory()
    first = opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    second = change(first, uses=["data_mining"], scope="all_photos")
    third = change(second, uses=["ai_inference"], scope="all_photos")
    opt_out_withdraw(creator=creator, opt_out_id=third.public_id, channel=Channel.WEB)

    chain = [OptOut.objects.get(pk=o.pk) for o in (first, second, third)]
    assert [o.replaces for o in chain] == [None, first, second]
    assert chain[0].withdrawn_version == chain[1].filed_version
    assert chain[1].withdrawn_version == chain[2].filed_version
    assert chain[2].withdrawn_version is not None
    assert not any(o.is_active for o in chain)
    kinds = ConsentEvent.objects.filter(creator_public_id=creator.public_id)
    assert list(kinds.order_by("registry_version").values_list("kind", flat=True)) == [
        "opt_out_filed",
        "opt_out_changed",
        "opt_out_changed",
        "opt_out_withdrawn",
    ]


# --- opt_out_file validation ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        ({"uses": []}, "uses", "choose at least one use from data_mining, ai_training"),
        (
            {"uses": ["ai_training", "face_recognition"]},
            "uses",
            "unknown use face_recognition; allowed: data_mining, ai_training, "
            "ai_generative_training, ai_inference",
        ),
        (
            {"scope": "everything"},
            "scope",
            "unknown scope 'everything'; allowed: all_photos, photos, claims",
        ),
        ({"scope": "photos"}, "photos", "choose at least one photo for scope 'photos'"),
        ({"scope": "claims"}, "claims", "choose at least one claim for scope 'claims'"),
    ],
)
def test_opt_out_file_rejects_invalid_input_and_changes_nothing(
    arguments: dict[str, Any], field: str, message: str
) -> None:
    creator = CreatorFactory()
    before = state()
    call: dict[str, Any] = {"uses": ["ai_training"], "scope": "all_photos"} | arguments

    with pytest.raises(ValidationError) as raised:
        opt_out_file(creator=creator, channel=Channel.API, **call)

    assert list(raised.value.message_dict) == [field]
    assert raised.value.message_dict[field][0].startswith(message)
    assert state() == before


@pytest.mark.django_db
def test_opt_out_file_rejects_photos_with_a_scope_other_than_photos() -> None:
    creator = CreatorFactory()
    [photo] = photos_of(creator, 1)
    before = state()

    with pytest.raises(ValidationError) as raised:
        opt_out_file(
            creator=creator,
            uses=["ai_training"],
            scope="all_photos",
            photos=[photo.public_id],
            channel=Channel.API,
        )

    assert raised.value.message_dict == {
        "photos": ["photos can only be chosen with scope 'photos'"]
    }
    assert state() == before


@pytest.mark.django_db
def test_opt_out_file_reports_another_creators_photo_as_not_found() -> None:
    creator, other = CreatorFactory(), CreatorFactory()
    [own] = photos_of(creator, 1)
    [foreign] = photos_of(other, 1)
    unknown = uuid.uuid4()
    before = state()

    with pytest.raises(ValidationError) as raised:
        opt_out_file(
            creator=creator,
            uses=["ai_training"],
            scope="photos",
            photos=[own.public_id, foreign.public_id],
            channel=Channel.API,
        )
    with pytest.raises(ValidationError) as raised_unknown:
        opt_out_file(
            creator=creator,
            uses=["ai_training"],
            scope="photos",
            photos=[own.public_id, unknown],
            channel=Channel.API,
        )

    # Exactly the same words as for an id that does not exist at all.
    assert raised.value.message_dict == {"photos": [f"not found: {foreign.public_id}"]}
    assert raised_unknown.value.message_dict == {"photos": [f"not found: {unknown}"]}
    assert state() == before
    assert not foreign.opt_outs.exists()


@pytest.mark.django_db
def test_opt_out_file_reports_another_creators_claim_as_not_found() -> None:
    creator, other = CreatorFactory(), CreatorFactory()
    foreign, _ = claim_add(creator=other, kind="domain", value="other.example", channel="web")
    before = state()

    with pytest.raises(ValidationError) as raised:
        opt_out_file(
            creator=creator,
            uses=["data_mining"],
            scope="claims",
            claims=[foreign.public_id],
            channel=Channel.WEB,
        )

    assert raised.value.message_dict == {"claims": [f"not found: {foreign.public_id}"]}
    assert state() == before


@pytest.mark.django_db
def test_opt_out_file_rejects_an_unknown_organization_exception() -> None:
    creator = CreatorFactory()
    missing = uuid.uuid4()
    before = state()

    with pytest.raises(ValidationError) as raised:
        opt_out_file(
            creator=creator,
            uses=["ai_training"],
            scope="all_photos",
            exceptions=[missing],
            channel=Channel.WEB,
        )

    assert raised.value.message_dict == {"exceptions": [f"unknown organization: {missing}"]}
    assert state() == before


@pytest.mark.django_db
def test_opt_out_file_records_uses_in_vocabulary_order_with_chosen_photos_and_exceptions() -> None:
    creator = CreatorFactory()
    photos = photos_of(creator, 2)
    lab = OrganizationFactory(name="Friendly Lab")

    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_inference", "data_mining", "ai_inference"],
        scope="photos",
        photos=[photos[1].public_id, photos[0].public_id],
        exceptions=[lab.public_id],
        channel=Channel.API,
    )

    stored = OptOut.objects.get(pk=opt_out.pk)
    assert stored.uses == ["data_mining", "ai_inference"]
    assert set(stored.photos.all()) == set(photos)
    assert list(stored.exceptions.all()) == [lab]
    assert (stored.channel, stored.notice_version) == ("api", "2026-11")
    event = ConsentEvent.objects.get(registry_version=stored.filed_version)
    assert event.details == {
        "uses": ["data_mining", "ai_inference"],
        "scope": "photos",
        "photos": sorted(str(photo.public_id) for photo in photos),
        "claims": [],
        "exceptions": [str(lab.public_id)],
    }


# --- creator_delete -----------------------------------------------------------


@pytest.mark.django_db
def test_deleting_an_account_keeping_opt_outs_anonymizes_and_keeps_covered_photos() -> None:
    creator = CreatorFactory()
    user_pk = creator.user.pk
    covered, uncovered = photos_of(creator, 2)
    claim, _ = claim_add(creator=creator, kind="domain", value="alice.example", channel="web")
    token_create(creator=creator, name="laptop")
    opt_out = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[covered.public_id],
        channel=Channel.WEB,
    )
    version = registry_version_current()

    creator_delete(creator=creator, keep_opt_outs=True, channel=Channel.WEB)

    assert not get_user_model().objects.filter(pk=user_pk).exists()
    stored = Creator.objects.get(pk=creator.pk)
    assert stored.user is None
    assert stored.anonymized_at is not None
    assert str(stored) == f"anonymous creator {creator.public_id}"
    assert list(Photo.objects.filter(creator=creator).values_list("pk", "original_filename")) == [
        (covered.pk, "")
    ]
    assert Photo.objects.get(pk=covered.pk).sha256 == covered.sha256
    assert not Photo.objects.filter(pk=uncovered.pk).exists()
    assert not Claim.objects.filter(pk=claim.pk).exists()
    assert not PersonalToken.objects.filter(creator=creator).exists()
    kept = OptOut.objects.get(pk=opt_out.pk)
    assert (kept.withdrawn_at, kept.withdrawn_version) == (None, None)
    assert list(kept.photos.all()) == [covered]
    events = list(ConsentEvent.objects.filter(registry_version__gt=version))
    assert [(e.kind, e.creator_public_id, e.details) for e in events] == [
        (
            ConsentEvent.Kind.ACCOUNT_DELETED,
            creator.public_id,
            {"opt_outs_kept": True, "active_opt_outs": 1},
        )
    ]


@pytest.mark.django_db
def test_deleting_an_account_keeping_an_all_photos_opt_out_keeps_every_photo() -> None:
    creator = CreatorFactory()
    photos = photos_of(creator, 3)
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")

    creator_delete(creator=creator, keep_opt_outs=True, channel=Channel.WEB)

    assert sorted(Photo.objects.filter(creator=creator).values_list("pk", flat=True)) == sorted(
        photo.pk for photo in photos
    )
    assert set(
        Photo.objects.filter(creator=creator).values_list("original_filename", flat=True)
    ) == {""}


@pytest.mark.django_db
def test_deleting_an_account_without_opt_outs_withdraws_them_and_deletes_photos() -> None:
    creator = CreatorFactory()
    user_pk = creator.user.pk
    photos = photos_of(creator, 2)
    claim_add(creator=creator, kind="handle", value="flickr:alice", channel="web")
    active = opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    chosen = opt_out_file(
        creator=creator,
        uses=["data_mining"],
        scope="photos",
        photos=[photos[0].public_id],
        channel="web",
    )
    earlier = opt_out_file(
        creator=creator, uses=["ai_inference"], scope="all_photos", channel="web"
    )
    earlier = opt_out_withdraw(creator=creator, opt_out_id=earlier.public_id, channel="web")
    version = registry_version_current()

    creator_delete(creator=creator, keep_opt_outs=False, channel=Channel.WEB)

    assert not get_user_model().objects.filter(pk=user_pk).exists()
    assert Creator.objects.get(pk=creator.pk).anonymized_at is not None
    assert not Photo.objects.filter(creator=creator).exists()
    assert not Claim.objects.filter(creator=creator).exists()
    # Opt-out rows are evidence: all three still exist, none active.
    assert OptOut.objects.filter(creator=creator).count() == 3
    assert not OptOut.objects.filter(creator=creator, withdrawn_at__isnull=True).exists()
    assert OptOut.objects.get(pk=earlier.pk).withdrawn_version == earlier.withdrawn_version
    events = list(
        ConsentEvent.objects.filter(registry_version__gt=version).order_by("registry_version")
    )
    assert sorted((e.kind, e.subject_public_id) for e in events[:2]) == sorted(
        [
            (ConsentEvent.Kind.OPT_OUT_WITHDRAWN, active.public_id),
            (ConsentEvent.Kind.OPT_OUT_WITHDRAWN, chosen.public_id),
        ]
    )
    assert [(e.kind, e.details) for e in events[2:]] == [
        (ConsentEvent.Kind.ACCOUNT_DELETED, {"opt_outs_kept": False, "active_opt_outs": 0})
    ]
    withdrawn = {o.public_id: o.withdrawn_version for o in OptOut.objects.filter(creator=creator)}
    assert {withdrawn[active.public_id], withdrawn[chosen.public_id]} == {
        events[0].registry_version,
        events[1].registry_version,
    }


@pytest.mark.django_db
def test_deleting_an_account_twice_changes_nothing_the_second_time() -> None:
    creator = CreatorFactory()
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    creator_delete(creator=creator, keep_opt_outs=True, channel=Channel.WEB)
    anonymized_at = Creator.objects.get(pk=creator.pk).anonymized_at
    before = state()

    creator_delete(creator=creator, keep_opt_outs=False, channel=Channel.WEB)

    assert state() == before
    assert Creator.objects.get(pk=creator.pk).anonymized_at == anonymized_at
    assert OptOut.objects.filter(creator=creator, withdrawn_at__isnull=True).count() == 1
