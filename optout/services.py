"""Every write of the optout app: filing, changing and withdrawing opt-outs, deleting a
creator's account (it must settle their opt-outs, so it lives here, not in
registry, which never imports optout)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from config.messages import listing
from optout.models import Batch, OptOut, Organization, OrganizationAPIKey, PipelineRequest
from optout.uses import USE_LABELS, USES, unknown_uses
from registry.ledger import LedgerEntry, entries_append, entry_append
from registry.models import Claim, ConsentEvent, Creator, Photo
from registry.services import ACTOR_CREATOR

pipeline_logger = logging.getLogger("optout.pipeline")


def _owned(
    model: type[Photo] | type[Claim], creator: Creator, ids: Sequence[uuid.UUID], field: str
) -> list:
    unique_ids = list(dict.fromkeys(ids))
    found = list(model.objects.filter(creator=creator, public_id__in=unique_ids))
    missing = set(unique_ids) - {item.public_id for item in found}  # type: ignore[attr-defined]
    if missing:
        # Another creator's object is reported exactly like one that does not exist.
        raise ValidationError({field: f"not found: {listing(sorted(map(str, missing)))}"})
    return found


@dataclass(frozen=True)
class _OptOutRequest:
    """An opt-out as asked for, validated: what filing or changing one records."""

    uses: list[str]  # in USES order
    scope: str
    photos: list[Photo]
    claims: list[Claim]
    exceptions: list[Organization]

    def details(self) -> dict[str, Any]:
        """The ledger details of filing (or changing to) this opt-out."""
        return {
            "uses": self.uses,
            "scope": self.scope,
            "photos": sorted(str(photo.public_id) for photo in self.photos),
            "claims": sorted(str(claim.public_id) for claim in self.claims),
            "exceptions": sorted(str(org.public_id) for org in self.exceptions),
        }


def _opt_out_request_validate(
    creator: Creator,
    uses: Sequence[str],
    scope: str,
    photos: Sequence[uuid.UUID],
    claims: Sequence[uuid.UUID],
    exceptions: Sequence[uuid.UUID],
) -> _OptOutRequest:
    """The rules every opt-out obeys, filed or changed. Raises ValidationError."""
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
            {"exceptions": f"unknown organization: {listing(sorted(map(str, missing)))}"}
        )
    return _OptOutRequest(
        uses=[use for use in USES if use in set(uses)],
        scope=scope,
        photos=chosen_photos,
        claims=chosen_claims,
        exceptions=organizations,
    )


def _opt_out_create(
    *,
    creator: Creator,
    request: _OptOutRequest,
    kind: str,
    channel: str,
    actor: str,
    replaces: OptOut | None = None,
) -> OptOut:
    """Append the ledger event filing (or changing to) ``request`` and create the
    opt-out, effective from the event's registry version. A change also ends
    ``replaces`` at that same version: one event, both effects."""
    opt_out = OptOut(
        public_id=uuid.uuid4(),
        creator=creator,
        uses=request.uses,
        scope=request.scope,
        replaces=replaces,
    )
    details = request.details()
    if replaces is not None:
        details["replaces"] = str(replaces.public_id)
    event = entry_append(
        entry=LedgerEntry(
            kind=kind,
            creator_public_id=creator.public_id,
            subject_public_id=opt_out.public_id,
            details=details,
        ),
        actor=actor,
        channel=channel,
        notice_version=settings.OPTOUT_NOTICE_VERSION,
    )
    if replaces is not None:
        _end(replaces, event)
    opt_out.channel = channel
    opt_out.notice_version = settings.OPTOUT_NOTICE_VERSION
    opt_out.filed_version = event.registry_version
    opt_out.effective_at = event.created_at
    opt_out.save()
    opt_out.photos.set(request.photos)
    opt_out.claims.set(request.claims)
    opt_out.exceptions.set(request.exceptions)
    _opt_out_notice_enqueue_on_commit(opt_out_id=opt_out.pk)
    return opt_out


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
    request = _opt_out_request_validate(creator, uses, scope, photos, claims, exceptions)
    return _opt_out_create(
        creator=creator,
        request=request,
        kind=ConsentEvent.Kind.OPT_OUT_FILED,
        channel=channel,
        actor=actor,
    )


@transaction.atomic
def opt_out_change(
    *,
    creator: Creator,
    public_id: uuid.UUID,
    uses: Sequence[str],
    scope: str,
    photos: Sequence[uuid.UUID] = (),
    claims: Sequence[uuid.UUID] = (),
    exceptions: Sequence[uuid.UUID] = (),
    channel: str,
    actor: str = ACTOR_CREATOR,
) -> OptOut:
    """Change an opt-out: supersede it by a new one, validated as filing is.

    One ledger event (opt_out_changed, subject the new opt-out) gives one
    registry version v: the old opt-out is withdrawn at v and the new one,
    which ``replaces`` it, is filed at v, so no version has both or neither.
    Asking for what the opt-out already is changes nothing and returns it.
    Raises OptOut.DoesNotExist for another creator's opt-out, ValidationError
    for a withdrawn one (or an invalid request)."""
    current = _own_locked(creator, public_id)
    if not current.is_active:
        raise ValidationError(
            f"opt-out {current.public_id} is withdrawn: a withdrawn opt-out cannot be "
            "changed; file a new one"
        )
    request = _opt_out_request_validate(creator, uses, scope, photos, claims, exceptions)
    unchanged = (
        request.uses == list(current.uses)
        and request.scope == current.scope
        and {p.pk for p in request.photos} == set(current.photos.values_list("pk", flat=True))
        and {c.pk for c in request.claims} == set(current.claims.values_list("pk", flat=True))
        and {o.pk for o in request.exceptions}
        == set(current.exceptions.values_list("pk", flat=True))
    )
    if unchanged:
        return current
    return _opt_out_create(
        creator=creator,
        request=request,
        kind=ConsentEvent.Kind.OPT_OUT_CHANGED,
        channel=channel,
        actor=actor,
        replaces=current,
    )


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
    _end(opt_out, event)
    return opt_out


def _end(opt_out: OptOut, event: ConsentEvent) -> None:
    """The opt-out stops applying at ``event``'s registry version (a withdrawal,
    or the change that supersedes it)."""
    opt_out.withdrawn_at = event.created_at
    opt_out.withdrawn_version = event.registry_version
    opt_out.save(update_fields=["withdrawn_at", "withdrawn_version"])


def _own_locked(creator: Creator, public_id: uuid.UUID) -> OptOut:
    """One of the creator's opt-outs, row-locked. Raises OptOut.DoesNotExist
    for another creator's or an unknown one."""
    return (
        OptOut.objects.select_for_update()
        .select_related("creator")
        .get(creator=creator, public_id=public_id)
    )


@transaction.atomic
def opt_out_withdraw(
    *, creator: Creator, opt_out_id: uuid.UUID, channel: str, actor: str = ACTOR_CREATOR
) -> OptOut:
    """Withdraw an opt-out. Withdrawing one already withdrawn changes nothing.
    Raises OptOut.DoesNotExist for another creator's opt-out."""
    opt_out = _own_locked(creator, opt_out_id)
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


# --- API keys and the pipeline audit log --------------------------------------


def api_key_create(
    *,
    organization: Organization,
    name: str,
    scopes: Sequence[str] = tuple(OrganizationAPIKey.Scope.values),
    expires_at: datetime | None = None,
) -> tuple[OrganizationAPIKey, str]:
    """A new API key for ``organization``; the raw key is returned once and only
    its hash is stored. Raises ValidationError for unknown or no scopes, a blank
    name, or an expiry in the past."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "name the key (for example the pipeline using it)"})
    unknown = [scope for scope in scopes if scope not in OrganizationAPIKey.Scope.values]
    if unknown or not scopes:
        allowed = ", ".join(OrganizationAPIKey.Scope.values)
        problem = f"unknown scope {', '.join(unknown)}" if unknown else "choose at least one scope"
        raise ValidationError({"scopes": f"{problem}; allowed: {allowed}"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "the expiry must be in the future"})
    chosen = [scope for scope in OrganizationAPIKey.Scope.values if scope in set(scopes)]
    key, raw = OrganizationAPIKey.objects.create_key(
        organization=organization, name=name[:50], scopes=chosen, expiry_date=expires_at
    )
    assert isinstance(key, OrganizationAPIKey)
    return key, raw


def api_keys_revoke(*, key_ids: Sequence[str]) -> int:
    """Revoke keys (cannot be undone). Returns how many were still active."""
    return OrganizationAPIKey.objects.filter(pk__in=key_ids, revoked=False).update(revoked=True)


def pipeline_request_record(
    *,
    key: OrganizationAPIKey,
    endpoint: str,
    use: str = "",
    record_count: int = 0,
    excluded_count: int = 0,
    registry_version: int | None = None,
    batch: Batch | None = None,
) -> PipelineRequest:
    """The audit row (and log line) of one pipeline request."""
    row = PipelineRequest.objects.create(
        organization_id=key.organization_id,
        api_key=key,
        key_prefix=key.prefix,
        endpoint=endpoint,
        use=use,
        record_count=record_count,
        excluded_count=excluded_count,
        registry_version=registry_version,
        batch=batch,
    )
    pipeline_logger.info(
        "%s key=%s organization=%s use=%s records=%d excluded=%d registry_version=%s",
        endpoint,
        key.prefix,
        key.organization.name,
        use or "-",
        record_count,
        excluded_count,
        registry_version,
    )
    return row


# --- opt-out confirmation notices -------------------------------------------

# An opt-out whose notice is still unsent this long after filing lost its
# wake-up (Redis emptied, the enqueue failed, retries ran out); the sweeper
# enqueues it again. Ten minutes is far beyond a healthy worker's latency
# (seconds) and well inside "promptly" for a confirmation email.
NOTICE_STALE_AFTER = timedelta(minutes=10)
# Notices re-enqueued per sweep: bounds one sweep's work after a long outage;
# the next sweep (5 minutes later) takes the rest.
NOTICE_SWEEP_LIMIT = 1_000


def _opt_out_notice_enqueue_on_commit(*, opt_out_id: int) -> None:
    # Imported here: optout.tasks imports this module.
    from optout.tasks import opt_out_notice_send_task

    # robust: the opt-out is committed whatever happens to the wake-up; a broker
    # error is logged, not raised into the request, and the sweeper resends.
    transaction.on_commit(partial(opt_out_notice_send_task.delay, opt_out_id), robust=True)


def _notice_text(opt_out: OptOut) -> tuple[str, str]:
    uses = "\n".join(f"  - {use}: {USE_LABELS.get(use, use)}" for use in opt_out.uses)
    subject = f"Your opt-out {opt_out.public_id} is on file"
    replaced = (
        ""
        if opt_out.replaces is None
        else f"Replaces your opt-out {opt_out.replaces.public_id}, which stops applying "
        "at this registry version\n"
    )
    body = (
        "The Opt-Out Registry has recorded your opt-out.\n\n"
        f"Opt-out: {opt_out.public_id}\n"
        f"Refused uses:\n{uses}\n"
        f"Scope: {opt_out.scope} ({opt_out.get_scope_display()})\n"
        f"Filed at registry version: {opt_out.filed_version}\n"
        f"{replaced}"
        f"Effective since: {opt_out.effective_at.isoformat()}\n"
        f"Privacy notice version: {opt_out.notice_version}\n\n"
        "Training pipelines checking the registry exclude matching records from this "
        "registry version on. You can withdraw the opt-out at any time, in as many "
        "steps as it took to file it.\n"
    )
    return subject, body


def opt_out_notice_send(*, opt_out_id: int) -> bool:
    """Email the creator the confirmation of an opt-out. True if this call sent it.

    Idempotent: the notice is claimed with a conditional UPDATE, so a second call
    (a redelivered task, the sweeper) is a no-op returning False. Deliberately not
    one transaction: the claim commits before the email goes out, so concurrent
    workers never both send. If sending fails the claim is released and the
    error re-raised for the task to retry. A worker killed between claim and
    send leaves the notice marked sent: at most one email, never two.
    """
    opt_out = (
        OptOut.objects.select_related("creator__user", "replaces").filter(pk=opt_out_id).first()
    )
    if opt_out is None:
        return False
    user = opt_out.creator.user
    email = user.email if user is not None else ""
    if not email:
        # The account is gone (or has no address); nobody to notify. The row stays
        # unsent and the sweeper skips it, as it skips every address-less creator.
        return False
    sent_at = timezone.now()
    claimed = OptOut.objects.filter(pk=opt_out_id, notice_sent_at__isnull=True).update(
        notice_sent_at=sent_at
    )
    if not claimed:
        return False
    subject, body = _notice_text(opt_out)
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [email])
    except Exception:
        OptOut.objects.filter(pk=opt_out_id, notice_sent_at=sent_at).update(notice_sent_at=None)
        raise
    return True


def opt_out_notices_sweep(*, stale_after: timedelta = NOTICE_STALE_AFTER) -> list[int]:
    """Enqueue again every notice still unsent ``stale_after`` after filing.

    The database row is the queue of record; Redis only wakes workers up, and a
    wake-up can be lost. Returns the opt-out ids enqueued (oldest first).
    """
    pending = list(
        OptOut.objects.filter(
            notice_sent_at__isnull=True,
            created_at__lt=timezone.now() - stale_after,
            creator__user__isnull=False,
        )
        .exclude(creator__user__email="")
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:NOTICE_SWEEP_LIMIT]
    )
    for opt_out_id in pending:
        _opt_out_notice_enqueue_on_commit(opt_out_id=opt_out_id)
    return pending
