"""The change feed: what changed since a registry version, as far as a pipeline's
decisions are concerned. Reads only.

A ledger event changes decisions when it is
- ``opt_out_filed``: the opt-out matches from its version;
- ``opt_out_changed``: the new opt-out matches from its version and the one it
  ``replaces`` stops matching at that same version (one event, both effects);
- ``opt_out_withdrawn``: the opt-out stops matching from its version;
- ``photo_registered`` for a creator with an ``all_photos`` opt-out active at that
  version (such an opt-out covers future photos too).
No other event does: a photo no opt-out covers cannot exclude anything, and a
claim is covered only by opt-outs that name it, which are filed after the claim
exists and whose ``opt_out_filed`` change lists it. Opt-outs granting the
caller's organization an exception never change its decisions and are left out:
a change into an opt-out excepting the organization is, for it, the withdrawal
of the replaced one (listed as ``opt_out_withdrawn``), and a change of an
opt-out that excepted it lists no ``replaces``.

A change lists the hashes and claims it affects and never who: no creator, no
photo or claim id. The hashes are the photos as registered now (a photo deleted
with its creator's account since is no longer listed); the ``opt_out`` id, which
lookup matches name too, identifies an opt-out's effect completely.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Prefetch, QuerySet

from optout.models import OptOut
from optout.uses import USES
from registry.ledger import registry_version_current
from registry.models import Claim, ConsentEvent, Photo
from registry.variants import colours_unpack, variants_unpack

Kind = ConsentEvent.Kind
OPT_OUT_KINDS = (Kind.OPT_OUT_FILED, Kind.OPT_OUT_CHANGED, Kind.OPT_OUT_WITHDRAWN)
CHANGE_KINDS = (*OPT_OUT_KINDS, Kind.PHOTO_REGISTERED)

# Hashes on one page at most (about 2 MB of JSON). An opt-out covering more (all
# of a creator's 100 000 photos) is split into parts over several pages: each
# part repeats the change with the next hashes in sha256 order, and every part
# but the last has `hashes_complete: false`.
PAGE_MAX_HASHES = 10_000
# Ledger rows a page reads at most. Most rows are photo registrations that no
# opt-out covers; without this bound one page could read the whole ledger to
# find `limit` changes. A page may then hold fewer changes (even none) and a
# `next` cursor.
PAGE_MAX_SCANNED_EVENTS = 20_000
SCAN_CHUNK = 2_000


@dataclass(frozen=True)
class Change:
    registry_version: int
    kind: str
    opt_out: str | None
    uses: list[str]
    scope: str
    hashes: list[dict[str, Any]]
    claims: list[dict[str, str]]
    at: datetime
    hashes_complete: bool = True
    replaces: str | None = None  # opt_out_changed: the opt-out that stops here

    def as_dict(self) -> dict[str, Any]:
        return {
            "registry_version": self.registry_version,
            "kind": self.kind,
            "opt_out": self.opt_out,
            "replaces": self.replaces,
            "uses": self.uses,
            "scope": self.scope,
            "hashes": self.hashes,
            "hashes_complete": self.hashes_complete,
            "claims": self.claims,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class ChangesCursor:
    """Changes after registry version ``since``; ``hashes_after`` continues a
    split change (the first one after ``since``) after that sha256."""

    since: int
    hashes_after: str = ""


@dataclass(frozen=True)
class ChangesPage:
    registry_version: int  # the newest committed version; nothing newer is listed
    changes: list[Change]
    next: ChangesCursor | None  # None: every change up to registry_version is listed


@dataclass(frozen=True)
class _OptOutEvent:
    event: ConsentEvent
    opt_out: OptOut
    kind: str  # the event's, or opt_out_withdrawn for a change the caller sees half of
    replaces: OptOut | None = None


@dataclass(frozen=True)
class _PhotoEvent:
    event: ConsentEvent
    photo: Mapping[str, Any]
    uses: list[str]


# A photo's hashes as the change feed lists them: its own, with the PDQ
# quality, and its derived variants (the registry matches records against
# every one of them: docs/matching.md), so a pipeline re-checking earlier
# batches can match as the registry does.
_HASH_FIELDS = ("sha256", "pdq", "pdq_quality", "phash", "colour", "variants", "variant_colours")


def _hash(
    sha256: str,
    pdq: str,
    pdq_quality: int | None,
    phash: str,
    colour: str,
    variants: bytes,
    variant_colours: bytes,
) -> dict[str, Any]:
    unpacked = colours_unpack(bytes(variant_colours), variants_unpack(bytes(variants)))
    return {
        "sha256": sha256,
        "pdq": pdq or None,
        "pdq_quality": pdq_quality,
        "phash": phash or None,
        "colour": colour or None,
        "variants": [{**v.as_dict(), "colour": v.colour or None} for v in unpacked],
    }


def _active_at(opt_out: OptOut, version: int) -> bool:
    withdrawn = opt_out.withdrawn_version
    return opt_out.filed_version <= version and (withdrawn is None or withdrawn > version)


def _opt_out_event(event: ConsentEvent, opt_out: OptOut, excepted: set[int]) -> _OptOutEvent | None:
    """The event as the organization sees it; None if it changes nothing for it."""
    applies = opt_out.pk not in excepted
    if event.kind != Kind.OPT_OUT_CHANGED:
        return _OptOutEvent(event, opt_out, event.kind) if applies else None
    old = opt_out.replaces
    old_applied = old is not None and old.pk not in excepted
    if applies:
        return _OptOutEvent(event, opt_out, event.kind, old if old_applied else None)
    if old_applied:
        assert old is not None
        return _OptOutEvent(event, old, Kind.OPT_OUT_WITHDRAWN)
    return None


def _opt_out_events(events: list[ConsentEvent], organization_id: int) -> dict[int, _OptOutEvent]:
    subjects = {
        event.subject_public_id
        for event in events
        if event.kind in OPT_OUT_KINDS and event.subject_public_id is not None
    }
    if not subjects:
        return {}
    claims = Prefetch("claims", queryset=Claim.objects.order_by("kind", "value"))
    opt_outs = {
        opt_out.public_id: opt_out
        for opt_out in OptOut.objects.filter(public_id__in=subjects)
        .select_related("replaces")
        .prefetch_related(claims, Prefetch("replaces__claims", queryset=claims.queryset))
    }
    ids = {o.pk for o in opt_outs.values()} | {
        o.replaces_id for o in opt_outs.values() if o.replaces_id is not None
    }
    excepted = set(
        OptOut.exceptions.through.objects.filter(
            optout_id__in=ids, organization_id=organization_id
        ).values_list("optout_id", flat=True)
    )
    found = {}
    for event in events:
        subject = event.subject_public_id
        opt_out = opt_outs.get(subject) if subject and event.kind in OPT_OUT_KINDS else None
        item = None if opt_out is None else _opt_out_event(event, opt_out, excepted)
        if item is not None:
            found[event.registry_version] = item
    return found


def _photo_events(events: list[ConsentEvent], organization_id: int) -> dict[int, _PhotoEvent]:
    subjects = {
        event.subject_public_id
        for event in events
        if event.kind == Kind.PHOTO_REGISTERED and event.subject_public_id is not None
    }
    if not subjects:
        return {}
    photos: dict[Any, Mapping[str, Any]] = {
        photo["public_id"]: photo
        for photo in Photo.objects.filter(public_id__in=subjects).values(
            "public_id", "creator_id", *_HASH_FIELDS
        )
    }
    covering: dict[int, list[OptOut]] = defaultdict(list)
    for opt_out in (
        OptOut.objects.filter(
            creator_id__in={photo["creator_id"] for photo in photos.values()},
            scope=OptOut.Scope.ALL_PHOTOS,
        )
        .exclude(exceptions=organization_id)
        .only("creator_id", "uses", "filed_version", "withdrawn_version")
    ):
        covering[opt_out.creator_id].append(opt_out)
    found = {}
    for event in events:
        photo = photos.get(event.subject_public_id) if event.kind == Kind.PHOTO_REGISTERED else None
        if photo is None:
            continue
        version = event.registry_version
        active = [o for o in covering[photo["creator_id"]] if _active_at(o, version)]
        if active:
            refused = {use for opt_out in active for use in opt_out.uses}
            found[version] = _PhotoEvent(event, photo, [use for use in USES if use in refused])
    return found


def _covered_photos(opt_out: OptOut, version: int) -> QuerySet[Photo]:
    if opt_out.scope == OptOut.Scope.ALL_PHOTOS:
        # Index photo_unique_per_creator (creator, sha256) serves the sha256 order.
        return Photo.objects.filter(creator_id=opt_out.creator_id, registered_version__lte=version)
    if opt_out.scope == OptOut.Scope.PHOTOS:
        return Photo.objects.filter(opt_outs=opt_out)
    return Photo.objects.none()


def _opt_out_change(found: _OptOutEvent, *, after: str, budget: int) -> Change:
    event, opt_out = found.event, found.opt_out
    rows = list(
        _covered_photos(opt_out, event.registry_version)
        .filter(sha256__gt=after)
        .order_by("sha256")
        .values_list(*_HASH_FIELDS)[: budget + 1]
    )
    claims = opt_out.claims.all() if opt_out.scope == OptOut.Scope.CLAIMS else []
    return Change(
        registry_version=event.registry_version,
        kind=found.kind,
        opt_out=str(opt_out.public_id),
        replaces=None if found.replaces is None else str(found.replaces.public_id),
        uses=list(opt_out.uses),
        scope=opt_out.scope,
        hashes=[_hash(*row) for row in rows[:budget]],
        hashes_complete=len(rows) <= budget,
        # A split change lists its claims with its first part only.
        claims=[] if after else [{"kind": c.kind, "value": c.value} for c in claims],
        at=event.created_at,
    )


def _photo_change(found: _PhotoEvent) -> Change:
    photo = found.photo
    return Change(
        registry_version=found.event.registry_version,
        kind=found.event.kind,
        # Possibly several opt-outs cover the photo; `uses` is what they refuse together.
        opt_out=None,
        uses=found.uses,
        scope=OptOut.Scope.ALL_PHOTOS,
        hashes=[_hash(*(photo[name] for name in _HASH_FIELDS))],
        claims=[],
        at=found.event.created_at,
    )


def _events(position: int, current: int) -> QuerySet[ConsentEvent]:
    return ConsentEvent.objects.filter(
        kind__in=CHANGE_KINDS, registry_version__gt=position, registry_version__lte=current
    ).order_by("registry_version")


def _events_after(position: int, current: int) -> Iterable[list[ConsentEvent]]:
    """Ledger rows after ``position``, in chunks, up to PAGE_MAX_SCANNED_EVENTS."""
    scanned = 0
    while scanned < PAGE_MAX_SCANNED_EVENTS:
        events = list(
            _events(position, current).only(
                "registry_version", "kind", "subject_public_id", "created_at"
            )[:SCAN_CHUNK]
        )
        if not events:
            return
        yield events
        scanned += len(events)
        position = events[-1].registry_version


def changes_page(*, organization_id: int, cursor: ChangesCursor, limit: int) -> ChangesPage:
    """At most ``limit`` changes after ``cursor``, oldest first, for the organization."""
    current = registry_version_current()
    changes: list[Change] = []
    budget = PAGE_MAX_HASHES
    position = cursor.since  # every version up to here is listed (or irrelevant)
    after = cursor.hashes_after
    for events in _events_after(position, current):
        found: dict[int, _OptOutEvent | _PhotoEvent] = {
            **_opt_out_events(events, organization_id),
            **_photo_events(events, organization_id),
        }
        for event in events:
            item = found.get(event.registry_version)
            if item is not None:
                if len(changes) >= limit or budget <= 0:
                    return ChangesPage(current, changes, ChangesCursor(position))
                if isinstance(item, _OptOutEvent):
                    change = _opt_out_change(item, after=after, budget=budget)
                else:
                    change = _photo_change(item)
                changes.append(change)
                budget -= max(1, len(change.hashes))
                if not change.hashes_complete:
                    last = change.hashes[-1]["sha256"] or ""
                    return ChangesPage(
                        current, changes, ChangesCursor(event.registry_version - 1, last)
                    )
            after = ""
            position = event.registry_version
    more = _events(position, current).exists()
    return ChangesPage(current, changes, ChangesCursor(position) if more else None)
