"""Every write of the registry app. Keyword-only ``<entity>_<verb>`` functions."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from registry import claims as claim_rules
from registry.ledger import LedgerEntry, entries_append, entry_append
from registry.models import Channel, Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.uploads import HashedItem, HashLine
from registry.variants import colours_pack, keypoints_dropped, photo_keypoints, variants_pack

ACTOR_CREATOR = "creator"
# Rows per INSERT when registering many photos at once.
PHOTO_INSERT_BATCH = 2_000


def _notice_version() -> str:
    return str(settings.OPTOUT_NOTICE_VERSION)


# --- creators -------------------------------------------------------------


@transaction.atomic
def creator_sign_up(*, email: str, password: str | None) -> Creator:
    """A new, unconfirmed creator. ``password=None`` makes an unusable password."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email).strip().lower()
    if user_model.objects.filter(username=email).exists():
        raise ValidationError({"email": "An account with this email already exists."})
    user = user_model.objects.create_user(username=email, email=email, password=password)
    return Creator.objects.create(user=user)


def creator_confirm_email(*, creator: Creator) -> Creator:
    """Idempotent: confirming twice keeps the first confirmation time."""
    if creator.email_confirmed_at is None:
        Creator.objects.filter(pk=creator.pk, email_confirmed_at__isnull=True).update(
            email_confirmed_at=timezone.now()
        )
        creator.refresh_from_db(fields=["email_confirmed_at"])
    return creator


@transaction.atomic
def creator_create_confirmed(*, email: str) -> Creator:
    creator = creator_sign_up(email=email, password=None)
    return creator_confirm_email(creator=creator)


def creator_for_user(user: AbstractBaseUser) -> Creator:
    """The creator profile of a user, created on first use (e.g. for staff)."""
    creator, _ = Creator.objects.get_or_create(  # type: ignore[misc]
        user=user, defaults={"email_confirmed_at": timezone.now()}
    )
    return creator


# --- personal tokens ------------------------------------------------------


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, creator: Creator, name: str) -> tuple[PersonalToken, str]:
    """A new personal token; the raw value is returned once and never stored."""
    raw = "opt_" + secrets.token_urlsafe(32)
    token = PersonalToken.objects.create(
        creator=creator, name=name[:100] or "token", prefix=raw[:12], digest=token_digest(raw)
    )
    return token, raw


def token_revoke(*, token: PersonalToken) -> PersonalToken:
    if token.revoked_at is None:
        PersonalToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        token.refresh_from_db(fields=["revoked_at"])
    return token


# --- photos ---------------------------------------------------------------


@dataclass(frozen=True)
class PhotoOutcome:
    """What happened to one uploaded file or hashes line."""

    index: int
    filename: str
    status: str  # "registered" | "already_registered" | "error"
    photo: uuid.UUID | None = None
    error_code: str = ""
    error: str = ""
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"index": self.index, "status": self.status}
        if self.filename:
            data["filename"] = self.filename
        if self.line is not None:
            data["line"] = self.line
        if self.photo is not None:
            data["photo"] = str(self.photo)
        if self.status == "error":
            data["error"] = self.error
            data["code"] = self.error_code
        return data


def _register_lines(
    *, creator: Creator, lines: list[tuple[int, HashLine]], channel: str
) -> dict[int, tuple[str, uuid.UUID]]:
    """Register valid hash lines (index, line); returns index -> (status, photo id).

    The creator row is locked so two concurrent uploads of the same photo give
    one "registered" and one "already_registered", never an IntegrityError.
    """
    Creator.objects.select_for_update().filter(pk=creator.pk).first()
    existing = dict(
        Photo.objects.filter(
            creator=creator, sha256__in={line.sha256 for _, line in lines}
        ).values_list("sha256", "public_id")
    )
    results: dict[int, tuple[str, uuid.UUID]] = {}
    new_photos: list[Photo] = []
    for index, line in lines:
        if line.sha256 in existing:
            results[index] = ("already_registered", existing[line.sha256])
            continue
        photo = Photo(
            public_id=uuid.uuid4(),
            creator=creator,
            sha256=line.sha256,
            pdq=line.pdq,
            pdq_quality=line.pdq_quality,
            phash=line.phash,
            width=line.width,
            height=line.height,
            original_filename=line.filename,
            channel=channel,
            variants=variants_pack(list(line.variants)),
            colour=line.colour,
            variant_colours=colours_pack(list(line.variants)),
            keypoints=line.keypoints,
        )
        existing[line.sha256] = photo.public_id
        new_photos.append(photo)
        results[index] = ("registered", photo.public_id)
    events = entries_append(
        entries=[
            LedgerEntry(
                kind=ConsentEvent.Kind.PHOTO_REGISTERED,
                creator_public_id=creator.public_id,
                subject_public_id=photo.public_id,
                details={"sha256": photo.sha256},
            )
            for photo in new_photos
        ],
        actor=ACTOR_CREATOR,
        channel=channel,
        notice_version=_notice_version(),
    )
    for photo, event in zip(new_photos, events, strict=True):
        photo.registered_version = event.registry_version
    Photo.objects.bulk_create(new_photos, batch_size=PHOTO_INSERT_BATCH)
    return results


@transaction.atomic
def photos_register_hashed(
    *, creator: Creator, items: Iterable[HashedItem], channel: str
) -> list[PhotoOutcome]:
    """Register photos hashed from uploaded files; rejected files keep their reason."""
    item_list = list(items)
    lines = [
        (
            index,
            HashLine(
                sha256=item.hashes.sha256,
                pdq=item.hashes.pdq,
                phash=item.hashes.phash,
                pdq_quality=item.hashes.pdq_quality,
                width=item.hashes.width,
                height=item.hashes.height,
                filename=item.filename.rsplit("/", 1)[-1][:255],
                variants=keypoints_dropped(item.variants),
                colour=item.hashes.colour,
                # The photo's own and its mirror image's, both computed here.
                keypoints=photo_keypoints(item.hashes.keypoints, item.variants),
            ),
        )
        for index, item in enumerate(item_list)
        if item.hashes is not None
    ]
    registered = _register_lines(creator=creator, lines=lines, channel=channel)
    outcomes = []
    for index, item in enumerate(item_list):
        if index in registered:
            status, photo_id = registered[index]
            outcomes.append(PhotoOutcome(index, item.filename, status, photo=photo_id))
        else:
            outcomes.append(
                PhotoOutcome(
                    index, item.filename, "error", error_code=item.error_code, error=item.error
                )
            )
    return outcomes


@transaction.atomic
def photos_register_from_hashes(
    *,
    creator: Creator,
    items: list[tuple[int | None, HashLine | str]],
    channel: str,
) -> list[PhotoOutcome]:
    """Register locally computed hashes. ``items`` are (line number or None, line
    or the reason it is invalid), in order; bad items are reported, good ones kept."""
    lines = [(index, item) for index, (_, item) in enumerate(items) if isinstance(item, HashLine)]
    registered = _register_lines(creator=creator, lines=lines, channel=channel)
    outcomes = []
    for index, (line_number, item) in enumerate(items):
        if isinstance(item, HashLine):
            status, photo_id = registered[index]
            outcomes.append(
                PhotoOutcome(index, item.filename, status, photo=photo_id, line=line_number)
            )
        else:
            outcomes.append(
                PhotoOutcome(index, "", "error", error_code="invalid", error=item, line=line_number)
            )
    return outcomes


# --- claims ---------------------------------------------------------------


@transaction.atomic
def claim_add(*, creator: Creator, kind: str, value: str, channel: str) -> tuple[Claim, bool]:
    """Add a claim; returns (claim, created). Raises ValidationError naming the problem."""
    try:
        normalized = claim_rules.normalize_claim(kind, value)
    except claim_rules.ClaimInvalid as error:
        raise ValidationError({"value": str(error)}) from None
    Creator.objects.select_for_update().filter(pk=creator.pk).first()
    existing = Claim.objects.filter(creator=creator, kind=kind, value=normalized).first()
    if existing is not None:
        return existing, False
    claim = Claim(public_id=uuid.uuid4(), creator=creator, kind=kind, value=normalized)
    event = entry_append(
        entry=LedgerEntry(
            kind=ConsentEvent.Kind.CLAIM_ADDED,
            creator_public_id=creator.public_id,
            subject_public_id=claim.public_id,
            details={"kind": kind, "value": normalized},
        ),
        actor=ACTOR_CREATOR,
        channel=channel,
        notice_version=_notice_version(),
    )
    claim.registered_version = event.registry_version
    claim.channel = channel
    claim.save()
    return claim, True


def creator_suspend(*, creator: Creator) -> Creator:
    if creator.suspended_at is None:
        Creator.objects.filter(pk=creator.pk, suspended_at__isnull=True).update(
            suspended_at=timezone.now()
        )
        creator.refresh_from_db(fields=["suspended_at"])
    return creator


def creator_unsuspend(*, creator: Creator) -> Creator:
    """Lift a suspension (the creator can log in and use tokens again).

    Like creator_suspend it changes no consent and so writes no ledger event;
    the admin action that calls it leaves an entry in the admin's history."""
    if creator.suspended_at is not None:
        Creator.objects.filter(pk=creator.pk, suspended_at__isnull=False).update(suspended_at=None)
        creator.refresh_from_db(fields=["suspended_at"])
    return creator


__all__ = [
    "ACTOR_CREATOR",
    "Channel",
    "PhotoOutcome",
    "claim_add",
    "creator_confirm_email",
    "creator_create_confirmed",
    "creator_for_user",
    "creator_sign_up",
    "creator_suspend",
    "creator_unsuspend",
    "photos_register_from_hashes",
    "photos_register_hashed",
    "token_create",
    "token_digest",
    "token_revoke",
]
