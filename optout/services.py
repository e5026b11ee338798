"""Every write of the optout app: filing and withdrawing opt-outs, deleting a
creator's account (it must settle their opt-outs, so it lives here, not in
registry, which never imports optout)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from optout.models import Organization, OptOut
from optout.uses import USES, unknown_uses
from registry.ledger import LedgerEntry, entries_append, entry_append
from registry.models import Claim, ConsentEvent, Creator, Photo
from registry.services import ACTOR_CREATOR


def _owned(model: type[Photo] | type[Claim], creator: Creator, ids: Sequence[uuid.UUID], field: str) -> list:
    unique_ids = list(dict.fromkeys(ids))
    found = list(model.objects.filter(creator=creator, public_id__in=unique_ids))
    missing = set(unique_ids) - {item.public_id for item in found}
    if missing:
        # Another creator's object is reported exactly like one that does not exist.
        raise ValidationError({field: f"not found: {', '.join(sorted(map(str, missing)))}"})
    return found


@transaction.atomic
def opt_out_file(
    *,
    creator: Creator,
    uses: Sequence[str],
    scope: str,
    photos: Sequence[uuid.UUID] = (),
    claims: Sequence[uuid.UUID] = (),
    exceptions: Sequence[uuid.UUID] = (),
    channel: str,
    actor: str = ACTOR_CREATOR,
) -> OptOut:
    """File an opt-out; effective from the registry version it is given."""
    if not uses:
        raise ValidationError({"uses": f"choose at least one use from {', '.join(USES)}"})
    unknown = unknown_uses(list(uses))
    if unknown:
        raise ValidationError(
            {"uses": f"unknown use {', '.join(unknown)}; allowed: {', '.join(USES)}"}
        )
    if scope not in OptOut.Scope.values:
        raise ValidationError(
            {"scope": f"unknown scope {scope!r}; allowed: {', '.join(OptOut.Scope.values)}"}
        )
    if scope == OptOut.Scope.PHOTOS and not photos:
        raise ValidationError({"photos": "choose at least one photo for scope 'photos'"})
    if scope == OptOut.Scope.CLAIMS and not claims:
        raise ValidationError({"claims": "choose at least one claim for scope 'claims'"})
    if scope != OptOut.Scope.PHOTOS and photos:
        raise ValidationError({"photos": "photos can only be chosen with scope 'photos'"})
    if scope != OptOut.Scope.CLAIMS and claims:
        raise ValidationError({"claims": "claims can only be chosen with scope 'claims'"})
    chosen_photos = _owned(Photo, creator, photos, "photos")
    chosen_claims = _owned(Claim, creator, claims, "claims")
    exception_ids = list(dict.fromkeys(exceptions))
    organizations = list(Organization.objects.filter(public_id__in=exception_ids))
    missing = set(exception_ids) - {org.public_id for org in organizations}
    if missing:
        raise ValidationError(
            {"exceptions": f"unknown organization: {', '.join(sorted(map(str, missing)))}"}
        )

    refused = [use for use in USES if use in set(uses)]
    opt_out = OptOut(public_id=uuid.uuid4(), creator=creator, uses=refused, scope=scope)
    event = entry_append(
        entry=LedgerEntry(
            kind=ConsentEvent.Kind.OPT_OUT_FILED,
            creator_public_id=creator.public_id,
            subject_public_id=opt_out.public_id,
            details={
                "uses": refused,
                "scope": scope,
                "photos": sorted(str(photo.public_id) for photo in chosen_photos),
                "claims": sorted(str(claim.public_id) for claim in chosen_claims),
                "exceptions": sorted(str(org.public_id) for org in organizations),
            },
        ),
        actor=actor,
        channel=channel,
        notice_version=settings.OPTOUT_NOTICE_VERSION,
    )
    opt_out.channel = channel
    opt_out.notice_version = settings.OPTOUT_NOTICE_VERSION
    opt_out.filed_version = event.registry_version
    opt_out.effective_at = event.created_at
    opt_out.save()
    opt_out.photos.set(chosen_photos)
    opt_out.claims.set(chosen_claims)
    opt_out.exceptions.set(organizations)
    return opt_out


def _withdraw_locked(*, opt_out: OptOut, channel: str, actor: str) -> OptOut:
    event = entry_append(
        entry=LedgerEntry(
            kind=ConsentEvent.Kind.OPT_OUT_WITHDRAWN,
            creator_public_id=opt_out.creator.public_id,
            subject_public_id=opt_out.public_id,
            details={"uses": opt_out.uses, "scope": opt_out.scope},
        ),
        actor=actor,
        channel=channel,
        notice_version=settings.OPTOUT_NOTICE_VERSION,
    )
    opt_out.withdrawn_at = event.created_at
    opt_out.withdrawn_version = event.registry_version
    opt_out.save(update_fields=["withdrawn_at", "withdrawn_version"])
    return opt_out


@transaction.atomic
def opt_out_withdraw(
    *, creator: Creator, opt_out_id: uuid.UUID, channel: str, actor: str = ACTOR_CREATOR
) -> OptOut:
    """Withdraw an opt-out. Withdrawing one already withdrawn changes nothing.
    Raises OptOut.DoesNotExist for another creator's opt-out."""
    opt_out = (
        OptOut.objects.select_for_update()
        .select_related("creator")
        .get(creator=creator, public_id=opt_out_id)
    )
    if opt_out.withdrawn_at is not None:
        return opt_out
    return _withdraw_locked(opt_out=opt_out, channel=channel, actor=actor)


@transaction.atomic
def creator_delete(
    *, creator: Creator, keep_opt_outs: bool, channel: str, actor: str = ACTOR_CREATOR
) -> Creator:
    """Delete a creator's account.

    The login (email, password) and tokens always go. With ``keep_opt_outs`` the
    active opt-outs stay in force as anonymous hash-only suppression records:
    the photos they cover keep their hashes but lose their file names, and
    nothing links them to a person any more. Without it every active opt-out is
    withdrawn (the ledger records it) and photos and claims are deleted. Opt-out
    rows themselves are never deleted: they are evidence.
    """
    creator = Creator.objects.select_for_update().get(pk=creator.pk)
    if creator.anonymized_at is not None:
        return creator
    active = list(
        OptOut.objects.select_for_update()
        .select_related("creator")
        .filter(creator=creator, withdrawn_at__isnull=True)
    )
    if keep_opt_outs:
        covers_all = any(opt_out.scope == OptOut.Scope.ALL_PHOTOS for opt_out in active)
        if not covers_all:
            Photo.objects.filter(creator=creator).exclude(
                opt_outs__in=[opt_out.pk for opt_out in active]
            ).delete()
            Claim.objects.filter(creator=creator).exclude(
                opt_outs__in=[opt_out.pk for opt_out in active]
            ).delete()
        Photo.objects.filter(creator=creator).update(original_filename="")
    else:
        for opt_out in active:
            _withdraw_locked(opt_out=opt_out, channel=channel, actor=actor)
        Photo.objects.filter(creator=creator).delete()
        Claim.objects.filter(creator=creator).delete()
    entries_append(
        entries=[
            LedgerEntry(
                kind=ConsentEvent.Kind.ACCOUNT_DELETED,
                creator_public_id=creator.public_id,
                details={
                    "opt_outs_kept": keep_opt_outs,
                    "active_opt_outs": len(active) if keep_opt_outs else 0,
                },
            )
        ],
        actor=actor,
        channel=channel,
        notice_version=settings.OPTOUT_NOTICE_VERSION,
    )
    creator.tokens.all().delete()
    user = creator.user
    creator.user = None
    creator.anonymized_at = timezone.now()
    creator.save(update_fields=["user", "anonymized_at"])
    if user is not None:
        user.delete()
    return creator


def organization_get_or_create(*, name: str) -> tuple[Organization, bool]:
    return Organization.objects.get_or_create(name=name.strip())
