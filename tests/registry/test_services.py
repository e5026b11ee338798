"""Registry services: creators, photo registration outcomes, claims, tokens."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from registry.ledger import registry_version_current
from registry.models import Channel, Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import (
    claim_add,
    creator_confirm_email,
    creator_for_user,
    creator_sign_up,
    creator_suspend,
    photos_register_from_hashes,
    photos_register_hashed,
    token_create,
    token_digest,
    token_revoke,
)
from registry.uploads import HashLine, hash_files
from tests.factories import CreatorFactory, PhotoFactory, UserFactory
from tests.images import jpeg_bytes

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.mark.django_db
def test_sign_up_normalizes_the_email_and_starts_unconfirmed() -> None:
    creator = creator_sign_up(email="  Alice@Example.ORG ", password="a long passphrase 42")

    assert creator.user is not None
    assert (creator.user.username, creator.user.email) == ("alice@example.org", "alice@example.org")
    assert creator.user.check_password("a long passphrase 42")
    assert creator.is_confirmed is False


@pytest.mark.django_db
def test_sign_up_with_a_taken_email_is_refused_and_creates_nothing() -> None:
    creator_sign_up(email="alice@example.org", password="a long passphrase 42")
    users, creators = get_user_model().objects.count(), Creator.objects.count()

    with pytest.raises(ValidationError) as raised:
        creator_sign_up(email="ALICE@example.org", password="another passphrase 43")

    assert raised.value.message_dict == {"email": ["An account with this email already exists."]}
    assert (get_user_model().objects.count(), Creator.objects.count()) == (users, creators)


@pytest.mark.django_db
def test_confirming_twice_keeps_the_first_confirmation_time() -> None:
    creator = creator_sign_up(email="bob@example.org", password=None)
    first = creator_confirm_email(creator=creator).email_confirmed_at

    second = creator_confirm_email(creator=Creator.objects.get(pk=creator.pk)).email_confirmed_at

    assert first is not None
    assert second == first


@pytest.mark.django_db
def test_creator_for_user_creates_a_confirmed_profile_once() -> None:
    user = UserFactory(email="staff@example.org")

    first = creator_for_user(user)
    second = creator_for_user(user)

    assert first.pk == second.pk
    assert first.is_confirmed
    assert Creator.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_uploaded_files_get_one_outcome_each_and_bad_files_do_not_stop_the_others() -> None:
    creator = CreatorFactory()
    photo = jpeg_bytes(1)
    files = [
        ("one.jpg", photo),
        ("notes.txt", b"not a photo at all"),
        ("two.jpg", jpeg_bytes(2)),
        ("cut.jpg", photo[: len(photo) // 2]),
        ("again.jpg", photo),
    ]

    outcomes = photos_register_hashed(creator=creator, items=hash_files(files), channel=Channel.WEB)

    assert [(o.filename, o.status, o.error_code) for o in outcomes] == [
        ("one.jpg", "registered", ""),
        ("notes.txt", "error", "not_an_image"),
        ("two.jpg", "registered", ""),
        ("cut.jpg", "error", "truncated"),
        ("again.jpg", "already_registered", ""),
    ]
    assert outcomes[4].photo == outcomes[0].photo
    stored = Photo.objects.get(public_id=outcomes[0].photo)
    assert (stored.width, stored.height, stored.original_filename) == (320, 240, "one.jpg")
    assert Photo.objects.filter(creator=creator).count() == 2


@pytest.mark.django_db
def test_hash_lines_register_and_invalid_lines_keep_their_line_number() -> None:
    creator = CreatorFactory()
    items: list[tuple[int | None, HashLine | str]] = [
        (1, HashLine(sha256=SHA_A, phash="0123456789abcdef", filename="a.jpg")),
        (2, "sha256 is required"),
        (3, HashLine(sha256=SHA_B)),
    ]

    outcomes = photos_register_from_hashes(creator=creator, items=items, channel=Channel.API)

    assert [o.as_dict() | {"photo": None} for o in outcomes] == [
        {"index": 0, "status": "registered", "filename": "a.jpg", "line": 1, "photo": None},
        {
            "index": 1,
            "status": "error",
            "line": 2,
            "error": "sha256 is required",
            "code": "invalid",
            "photo": None,
        },
        {"index": 2, "status": "registered", "line": 3, "photo": None},
    ]
    assert sorted(Photo.objects.filter(creator=creator).values_list("sha256", "phash")) == [
        (SHA_A, "0123456789abcdef"),
        (SHA_B, ""),
    ]


@pytest.mark.django_db
def test_the_same_photo_may_be_registered_by_two_creators() -> None:
    alice, bob = CreatorFactory(), CreatorFactory()
    line = HashLine(sha256=SHA_A)

    first = photos_register_from_hashes(creator=alice, items=[(None, line)], channel="api")
    second = photos_register_from_hashes(creator=bob, items=[(None, line)], channel="api")

    assert (first[0].status, second[0].status) == ("registered", "registered")
    assert first[0].photo != second[0].photo
    assert Photo.objects.filter(sha256=SHA_A).count() == 2


@pytest.mark.django_db
def test_the_database_refuses_a_second_row_for_one_creator_and_sha256() -> None:
    # The service answers "already registered" first; the constraint is what
    # holds when two requests race (test_ledger's concurrent uploads).
    photo = PhotoFactory(sha256=SHA_A)

    with pytest.raises(IntegrityError, match="photo_unique_per_creator"), transaction.atomic():
        PhotoFactory(creator=photo.creator, sha256=SHA_A)

    assert Photo.objects.filter(sha256=SHA_A).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("domain", "localhost", "'localhost' is not a valid domain name"),
        ("url_prefix", "ftp://example.org/", "'ftp://example.org/' is not an http or https URL"),
        ("handle", "alice", "'alice' is not a handle"),
        ("phone", "+1 555", "unknown claim kind 'phone'"),
    ],
)
def test_an_invalid_claim_is_refused_and_nothing_is_written(
    kind: str, value: str, message: str
) -> None:
    creator = CreatorFactory()
    version = registry_version_current()

    with pytest.raises(ValidationError) as raised:
        claim_add(creator=creator, kind=kind, value=value, channel=Channel.WEB)

    assert list(raised.value.message_dict) == ["value"]
    assert raised.value.message_dict["value"][0].startswith(message)
    assert not Claim.objects.exists()
    assert registry_version_current() == version
    assert not ConsentEvent.objects.filter(creator_public_id=creator.public_id).exists()


@pytest.mark.django_db
def test_a_token_is_stored_as_its_digest_and_revoking_twice_keeps_the_first_time() -> None:
    creator = CreatorFactory()
    token, raw = token_create(creator=creator, name="laptop")

    first = token_revoke(token=token).revoked_at
    second = token_revoke(token=PersonalToken.objects.get(pk=token.pk)).revoked_at

    stored = PersonalToken.objects.get(pk=token.pk)
    assert raw.startswith("opt_")
    assert stored.digest == token_digest(raw)
    assert raw not in (stored.digest, stored.prefix)
    assert stored.prefix == raw[:12]
    assert first is not None
    assert second == first


@pytest.mark.django_db
def test_suspending_twice_keeps_the_first_suspension_time() -> None:
    creator = CreatorFactory()

    first = creator_suspend(creator=creator).suspended_at
    second = creator_suspend(creator=Creator.objects.get(pk=creator.pk)).suspended_at

    assert first is not None
    assert second == first
    assert Creator.objects.get(pk=creator.pk).is_suspended
