"""Reads behind the creator pages of the optout app. Every query is filtered by
the creator it is given: nothing here can reach another creator's rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from optout.models import OptOut, Organization
from registry.models import (
    PACKED_VARIANT_SIZE,
    Claim,
    ConsentEvent,
    Creator,
    PersonalToken,
    Photo,
)

# The opt-out form lists this many of the creator's newest photos as checkboxes:
# enough to pick from a recent upload, small enough for a phone. Older photos are
# covered by the "all my photos" scope or chosen through the API.
OPT_OUT_FORM_MAX_PHOTOS = 500
DASHBOARD_RECENT_EVENTS = 10


@dataclass(frozen=True)
class DashboardCounts:
    photos: int
    claims: int
    active_opt_outs: int


def dashboard_counts(*, creator: Creator) -> DashboardCounts:
    return DashboardCounts(
        photos=Photo.objects.filter(creator=creator).count(),
        claims=Claim.objects.filter(creator=creator).count(),
        active_opt_outs=OptOut.objects.filter(creator=creator, withdrawn_at__isnull=True).count(),
    )


def consent_events_for_creator(*, creator: Creator) -> QuerySet[ConsentEvent]:
    """The creator's ledger rows, newest first (index consent_creator_idx)."""
    return ConsentEvent.objects.filter(creator_public_id=creator.public_id).order_by(
        "-registry_version"
    )


def opt_outs_for_creator(*, creator: Creator) -> QuerySet[OptOut]:
    """The creator's opt-outs, newest first, with what each one covers."""
    return (
        OptOut.objects.filter(creator=creator)
        .annotate(photo_count=Count("photos", distinct=True))
        .annotate(claim_count=Count("claims", distinct=True))
        # Ended by a change (superseded) rather than withdrawn.
        .annotate(changed=Exists(OptOut.objects.filter(replaces=OuterRef("pk"))))
        .prefetch_related(
            Prefetch("exceptions", queryset=Organization.objects.order_by("name")),
            Prefetch("claims", queryset=Claim.objects.order_by("kind", "value")),
        )
        .order_by("-created_at", "-id")
    )


@dataclass(frozen=True)
class OptOutChoices:
    photos: list[Photo]
    photos_total: int
    claims: list[Claim]
    organizations: list[Organization]


def opt_out_choices(*, creator: Creator, opt_out: OptOut | None = None) -> OptOutChoices:
    """What the opt-out form offers: the creator's newest photos, their claims,
    and the organizations that may receive an exception. Changing ``opt_out``
    also offers everything it covers now (an older photo, a suspended
    organization), so the prefilled form keeps what the creator does not untick."""
    photos = Photo.objects.filter(creator=creator).order_by("-created_at", "-id")
    fields = ("public_id", "original_filename", "sha256", "created_at")
    newest = list(photos.only(*fields)[:OPT_OUT_FORM_MAX_PHOTOS])
    organizations = Organization.objects.filter(suspended_at__isnull=True)
    if opt_out is not None:
        shown = {photo.pk for photo in newest}
        newest += list(photos.filter(opt_outs=opt_out).exclude(pk__in=shown).only(*fields))
        organizations = Organization.objects.filter(
            Q(suspended_at__isnull=True) | Q(opt_out_exceptions=opt_out)
        ).distinct()
    return OptOutChoices(
        photos=newest,
        photos_total=photos.count(),
        claims=list(Claim.objects.filter(creator=creator).order_by("kind", "value")),
        organizations=list(organizations.order_by("name")),
    )


def opt_out_active_for_creator(*, creator: Creator, public_id: uuid.UUID) -> OptOut | None:
    """One of the creator's active opt-outs, with what it covers; None if it is
    withdrawn, another creator's or unknown."""
    return (
        OptOut.objects.filter(creator=creator, public_id=public_id, withdrawn_at__isnull=True)
        .prefetch_related("photos", "claims", "exceptions")
        .first()
    )


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def creator_export(creator: Creator) -> dict[str, Any]:
    """Everything the registry holds about a creator, as JSON-ready data.

    Personal tokens appear without their digests (the secret's only trace).
    """
    user = creator.user
    photos = [
        {
            "id": str(photo["public_id"]),
            "sha256": photo["sha256"],
            "pdq": photo["pdq"],
            "pdq_quality": photo["pdq_quality"],
            "phash": photo["phash"],
            # registry.colour signature; "" when unknown.
            "colour": photo["colour"],
            # Derived variants stored with the photo (registry.variants).
            "variant_count": photo["variant_bytes"] // PACKED_VARIANT_SIZE,
            "width": photo["width"],
            "height": photo["height"],
            "filename": photo["original_filename"],
            "channel": photo["channel"],
            "registered_version": photo["registered_version"],
            "created_at": _iso(photo["created_at"]),
        }
        for photo in Photo.objects.filter(creator=creator)
        .order_by("created_at", "id")
        .annotate(variant_bytes=Length("variants"))
        .values(
            "public_id",
            "sha256",
            "pdq",
            "pdq_quality",
            "phash",
            "colour",
            "width",
            "height",
            "original_filename",
            "channel",
            "registered_version",
            "created_at",
            "variant_bytes",
        )
        .iterator(chunk_size=2_000)
    ]
    claims = [
        {
            "id": str(claim.public_id),
            "kind": claim.kind,
            "value": claim.value,
            "channel": claim.channel,
            "registered_version": claim.registered_version,
            "created_at": _iso(claim.created_at),
        }
        for claim in Claim.objects.filter(creator=creator).order_by("created_at", "id")
    ]
    opt_outs = [
        {
            "id": str(opt_out.public_id),
            "uses": list(opt_out.uses),
            "scope": opt_out.scope,
            "photos": sorted(str(photo.public_id) for photo in opt_out.photos.all()),
            "claims": sorted(str(claim.public_id) for claim in opt_out.claims.all()),
            "exceptions": [
                {"id": str(org.public_id), "name": org.name} for org in opt_out.exceptions.all()
            ],
            "channel": opt_out.channel,
            "notice_version": opt_out.notice_version,
            "filed_version": opt_out.filed_version,
            "effective_at": _iso(opt_out.effective_at),
            "withdrawn_version": opt_out.withdrawn_version,
            "withdrawn_at": _iso(opt_out.withdrawn_at),
            # The opt-out this one changed (superseded), or None.
            "replaces": None if opt_out.replaces is None else str(opt_out.replaces.public_id),
        }
        for opt_out in OptOut.objects.filter(creator=creator)
        .order_by("created_at", "id")
        .select_related("replaces")
        .prefetch_related(
            Prefetch("photos", queryset=Photo.objects.only("public_id")),
            Prefetch("claims", queryset=Claim.objects.only("public_id")),
            Prefetch("exceptions", queryset=Organization.objects.order_by("name")),
        )
    ]
    consent_events = [
        {
            "registry_version": event.registry_version,
            "kind": event.kind,
            "subject": None if event.subject_public_id is None else str(event.subject_public_id),
            "actor": event.actor,
            "channel": event.channel,
            "notice_version": event.notice_version,
            "details": event.details,
            "created_at": _iso(event.created_at),
        }
        for event in ConsentEvent.objects.filter(creator_public_id=creator.public_id).order_by(
            "registry_version"
        )
    ]
    tokens = [
        {
            "id": str(token.public_id),
            "name": token.name,
            "prefix": token.prefix,
            "created_at": _iso(token.created_at),
            "last_used_at": _iso(token.last_used_at),
            "revoked_at": _iso(token.revoked_at),
        }
        for token in PersonalToken.objects.filter(creator=creator).order_by("created_at", "id")
    ]
    return {
        "exported_at": timezone.now().isoformat(),
        "account": {
            "id": str(creator.public_id),
            "email": "" if user is None else getattr(user, "email", ""),
            "created_at": _iso(creator.created_at),
            "email_confirmed_at": _iso(creator.email_confirmed_at),
            "last_login_at": None if user is None else _iso(user.last_login),
        },
        "photos": photos,
        "claims": claims,
        "opt_outs": opt_outs,
        "consent_events": consent_events,
        "tokens": tokens,
    }
