"""The matching engine of one process: the registry in memory, following the
registry versions.

``MatchingEngine`` holds a LiveIndex (optout/matching/live.py) of one index
shard (or of everything) and loads it from PostgreSQL once; afterwards
``catch_up`` reads only what changed after the version it has loaded — opt-outs
filed or withdrawn, photos registered under an ``all_photos`` opt-out or chosen
by a new one, claims of new opt-outs, accounts deleted — and appends or
tombstones. Nothing is ever reloaded except after the registry went backwards
(a restored database, a test database flushed).

Decisions as of version V are exact for every V from the engine's horizon up to
its loaded version: entries carry their versions and views filter on them
(live.py). The horizon is the oldest version a running batch was fixed at (or
the loaded version when none runs); entries whose coverage ended at or before
it are tombstoned. A chunk whose batch is older than the horizon (a batch that
started while the engine moved on) is decided against a one-off engine loaded
for that version: slower, never wrong. ``at(V)`` catches up first when the
engine is older than V.

Every process has its own engines (``engine_for``): web processes one with
everything, for lookups; workers the one of their shard. After following the
registry an engine upserts an EngineState row per hash kind, at most every
OPTOUT_ENGINE_REPORT_SECONDS (GET /api/v1/registry shows them).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Min, Q, QuerySet
from django.utils import timezone

from optout.matching.live import (
    COMPACT_DEAD_SHARE,
    HASH_KINDS,
    LiveClaim,
    LiveIndex,
    LiveOptOut,
    LivePhoto,
    LiveView,
)
from optout.matching.snapshot import SnapshotOptOut
from optout.models import Batch, EngineState, OptOut
from registry.ledger import registry_version_current
from registry.models import Claim, ConsentEvent, Creator, Photo

logger = logging.getLogger("optout.engine")

_PHOTO_FIELDS = (
    "id",
    "creator_id",
    "registered_version",
    "sha256",
    "pdq",
    "phash",
    "pdq_quality",
    "variants",
    "colour",
    "variant_colours",
)
_READ_BATCH = 10_000


# The last count of registry_photos_at, (version, photos): lookups at the
# same version (most of them, between registrations) reuse it.
_photos_counted: tuple[int, int] | None = None


def registry_photos_at(version: int) -> int:
    """The photos the registry held at ``version`` (registered at or before
    it and not deleted since): the size by which a match that nothing
    confirms is held back (optout/matching/scale.py). Every photo counts,
    covered by an opt-out or not, so the count errs towards strictness.

    Counting a million photos takes PostgreSQL tens of milliseconds
    (docs/performance.md), so the last version's count is kept: a photo is
    registered with a new version of its own, so a version's count only
    falls (an account deleted), and a kept count errs towards strictness too."""
    global _photos_counted
    counted = _photos_counted
    if counted is not None and counted[0] == version:
        return counted[1]
    photos = Photo.objects.filter(registered_version__lte=version).count()
    _photos_counted = (version, photos)
    return photos


def photo_keypoints_read(photos: Sequence[int]) -> dict[int, bytes]:
    """The registered keypoints of those photos that have them: read from the
    database when a match needs them (a few kilobytes per photo is too much
    to hold in the index)."""
    return {
        key: bytes(value)
        for key, value in Photo.objects.filter(id__in=list(photos))
        .exclude(keypoints=b"")
        .values_list("id", "keypoints")
    }


class _ReadWriteLock:
    """Many readers (decisions) or one writer (catch-up); writers go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass(frozen=True)
class Shard:
    """Photos with key % count == index (claims on shard 0); Shard(1, 0) is everything."""

    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} out of range for {self.count} shards")

    def photos(self, queryset: QuerySet[Photo]) -> QuerySet[Photo]:
        if self.count == 1:
            return queryset
        return queryset.annotate(_shard=F("id") % self.count).filter(_shard=self.index)

    @property
    def holds_claims(self) -> bool:
        return self.index == 0


# --- reading the registry --------------------------------------------------------------


def _active_from(horizon: int, target: int) -> Q:
    """Opt-outs filed by ``target`` and active at some version from ``horizon`` on."""
    return Q(filed_version__lte=target) & (
        Q(withdrawn_version__isnull=True) | Q(withdrawn_version__gt=horizon)
    )


def _opt_outs_read(condition: Q, target: int) -> list[LiveOptOut]:
    """Opt-outs matching ``condition`` with their photos, claims and exceptions;
    a withdrawal after ``target`` is not known yet at ``target``."""
    rows = list(
        OptOut.objects.filter(condition).values_list(
            "id", "public_id", "creator_id", "uses", "scope", "filed_version", "withdrawn_version"
        )
    )
    chosen = OptOut.objects.filter(condition).values("id")
    related: dict[str, dict[int, set[int]]] = {}
    for name, field in (("photos", "photo_id"), ("claims", "claim_id"), ("exceptions", None)):
        through = getattr(OptOut, name).through
        column = field or "organization_id"
        of: dict[int, set[int]] = defaultdict(set)
        for opt_out_id, value in through.objects.filter(optout_id__in=chosen).values_list(
            "optout_id", column
        ):
            of[opt_out_id].add(value)
        related[name] = of
    return [
        LiveOptOut(
            SnapshotOptOut(
                key=key,
                public_id=str(public_id),
                creator=creator,
                uses=tuple(uses),
                scope=scope,
                photos=frozenset(related["photos"][key]),
                claims=frozenset(related["claims"][key]),
                exceptions=frozenset(related["exceptions"][key]),
            ),
            filed_version=filed,
            withdrawn_version=withdrawn if withdrawn is not None and withdrawn <= target else None,
        )
        for key, public_id, creator, uses, scope, filed, withdrawn in rows
    ]


def _photos_read(queryset: QuerySet[Photo]) -> list[LivePhoto]:
    rows = queryset.order_by().values_list(*_PHOTO_FIELDS).iterator(chunk_size=_READ_BATCH)
    return [
        LivePhoto(
            key,
            creator,
            version,
            sha256,
            pdq,
            phash,
            quality,
            bytes(packed),
            colour,
            bytes(colours),
        )
        for key, creator, version, sha256, pdq, phash, quality, packed, colour, colours in rows
    ]


def _claims_read(queryset: QuerySet[Claim]) -> list[LiveClaim]:
    return [
        LiveClaim(key, creator, kind, value, version)
        for key, creator, kind, value, version in queryset.order_by().values_list(
            "id", "creator_id", "kind", "value", "registered_version"
        )
    ]


def _all_photos_creators(condition: Q) -> QuerySet[Any, Any]:
    """Subquery: creators with an all_photos opt-out matching ``condition``."""
    return OptOut.objects.filter(condition, scope=OptOut.Scope.ALL_PHOTOS).values("creator_id")


def _chosen_photos(condition: Q) -> QuerySet[Any, Any]:
    """Subquery: photos chosen by an opt-out matching ``condition``."""
    chosen = OptOut.objects.filter(condition).values("id")
    return OptOut.photos.through.objects.filter(optout_id__in=chosen).values("photo_id")


def _horizon(target: int) -> int:
    """The oldest version still needed: that of the oldest batch not finished
    (running, or queued with its version fixed while its shard is hashed), or
    ``target``."""
    oldest = Batch.objects.filter(
        status__in=(Batch.Status.QUEUED, Batch.Status.RUNNING), registry_version__isnull=False
    ).aggregate(oldest=Min("registry_version"))["oldest"]
    return target if oldest is None else min(oldest, target)


# --- the engine ----------------------------------------------------------------------


class MatchingEngine:
    def __init__(self, shard: Shard | None = None) -> None:
        self.shard = shard or Shard()
        self.index: LiveIndex | None = None
        self.loaded_version = -1
        self.horizon = 0
        self.full_loads = 0
        self.catch_ups = 0
        self.compactions = 0
        self._lock = _ReadWriteLock()
        self._reported: tuple[float, int] | None = None  # (monotonic time, version)
        # The engine loaded for a version before the horizon, kept while that
        # version's batch may still need it (dropped once no running batch does).
        self._one_off: MatchingEngine | None = None

    # --- following the registry ----------------------------------------------------

    def load(self, target: int, horizon: int) -> None:
        """Read everything that can match at a version from ``horizon`` to ``target``."""
        index = LiveIndex()
        index.keypoints_source = photo_keypoints_read
        needed = _active_from(horizon, target)
        opt_outs = _opt_outs_read(needed, target)
        index.opt_outs_add(opt_outs)
        covered = Photo.objects.filter(
            Q(creator_id__in=_all_photos_creators(needed)) | Q(id__in=_chosen_photos(needed)),
            registered_version__lte=target,
        )
        index.photos_add(_photos_read(self.shard.photos(covered)))
        if self.shard.holds_claims:
            claim_ids = {c for o in opt_outs for c in o.opt_out.claims}
            index.claims_add(
                _claims_read(Claim.objects.filter(id__in=claim_ids, registered_version__lte=target))
            )
        self.index, self.loaded_version, self.horizon = index, target, horizon
        self.full_loads += 1
        logger.info(
            "matching engine shard %s/%s loaded version %s (horizon %s): %s",
            self.shard.index,
            self.shard.count,
            target,
            horizon,
            index.sizes(),
        )

    def catch_up(self, target: int) -> None:
        """Apply what changed in (loaded version, ``target``]; then retire what no
        needed version can match and compact when tombstones pile up."""
        index, loaded = self.index, self.loaded_version
        assert index is not None and target >= loaded
        if target > loaded:
            self._apply_opt_outs(index, loaded, target)
            self._apply_photos(index, loaded, target)
            self._apply_deletions(index, loaded, target)
            self.loaded_version = target
            self.catch_ups += 1
        horizon = _horizon(target)
        if self._one_off is not None and horizon > self._one_off.horizon:
            self._one_off = None
        if horizon > self.horizon:
            index.retire(horizon)
            self.horizon = horizon
        if index.dead_share() > COMPACT_DEAD_SHARE:
            index.compact()
            self.compactions += 1

    def _apply_opt_outs(self, index: LiveIndex, loaded: int, target: int) -> None:
        new = _opt_outs_read(Q(filed_version__gt=loaded, filed_version__lte=target), target)
        index.opt_outs_add(new)
        for key, version in OptOut.objects.filter(
            withdrawn_version__gt=loaded, withdrawn_version__lte=target
        ).values_list("id", "withdrawn_version"):
            assert version is not None
            index.withdraw(key, version)
        all_photos = {o.opt_out.creator for o in new if o.opt_out.scope == "all_photos"}
        chosen = {p for o in new for p in o.opt_out.photos}
        if all_photos or chosen:
            photos = Photo.objects.filter(
                Q(creator_id__in=all_photos) | Q(id__in=chosen), registered_version__lte=target
            )
            index.photos_add(_photos_read(self.shard.photos(photos)))
        claims = {c for o in new for c in o.opt_out.claims}
        if claims and self.shard.holds_claims:
            index.claims_add(
                _claims_read(Claim.objects.filter(id__in=claims, registered_version__lte=target))
            )

    def _apply_photos(self, index: LiveIndex, loaded: int, target: int) -> None:
        """Photos registered in the range by a creator with an all_photos opt-out
        the index holds. The range is read and filtered here: its size follows the
        registrations, whatever the number of opt-outs (an index range scan)."""
        creators = index.creators_with_all_photos()
        if not creators:
            return
        registered = Photo.objects.filter(
            registered_version__gt=loaded, registered_version__lte=target
        )
        index.photos_add(
            [p for p in _photos_read(self.shard.photos(registered)) if p.creator in creators]
        )

    def _apply_deletions(self, index: LiveIndex, loaded: int, target: int) -> None:
        """A deleted account may take photos and claims with it (creator_delete):
        forget the ones held that no longer exist."""
        deleted = ConsentEvent.objects.filter(
            kind=ConsentEvent.Kind.ACCOUNT_DELETED,
            registry_version__gt=loaded,
            registry_version__lte=target,
        ).values("creator_public_id")
        for creator in Creator.objects.filter(public_id__in=deleted).values_list("id", flat=True):
            photos = index.photos.of_creator(creator)
            if photos:
                kept = set(Photo.objects.filter(id__in=photos).values_list("id", flat=True))
                index.photos_remove(photos - kept)
            claims = set(index.claims_of_creator.get(creator, ()))
            if claims:
                kept = set(Claim.objects.filter(id__in=claims).values_list("id", flat=True))
                index.claims_remove(claims - kept)

    def _holds(self, version: int | None) -> bool:
        return version is not None and self.index is not None and version <= self.loaded_version

    def _follow(self, version: int | None) -> None:
        """Make the engine hold at least ``version`` (default: the newest committed)."""
        if not self._holds(version):
            with self._lock.writing():
                if not self._holds(version):  # another thread may have caught up meanwhile
                    target = registry_version_current()
                    if self.index is None or target < self.loaded_version:
                        self.load(target, _horizon(target))
                    elif target > self.loaded_version:
                        self.catch_up(target)
        self._report()

    def compact(self) -> None:
        """Retire what ended before the oldest needed version and rebuild the
        indexes from their live entries (the only full rebuild, in memory)."""
        with self._lock.writing():
            if self.index is None:
                return
            self.horizon = max(self.horizon, _horizon(self.loaded_version))
            self.index.retire(self.horizon)
            self.index.compact()
            self.compactions += 1

    # --- deciding ---------------------------------------------------------------------------

    @contextmanager
    def current(self) -> Iterator[LiveView]:
        """The registry at the newest committed version (caught up first)."""
        self._follow(None)
        with self._lock.reading():
            assert self.index is not None
            yield self.index.view(self.loaded_version)

    @contextmanager
    def at(self, version: int) -> Iterator[LiveView]:
        """The registry exactly as of ``version``; catches up first if the engine
        is older. A version before the horizon gets a one-off engine."""
        self._follow(version)
        with self._lock.reading():
            assert self.index is not None
            if version >= self.horizon:
                yield self.index.view(version)
                return
        logger.warning(
            "matching engine shard %s/%s: version %s is before the horizon %s; loading it",
            self.shard.index,
            self.shard.count,
            version,
            self.horizon,
        )
        one_off = self._one_off
        if one_off is None or one_off.horizon != version:
            one_off = MatchingEngine(self.shard)
            one_off.load(max(version, self.loaded_version), version)
            self._one_off = one_off
        assert one_off.index is not None
        with one_off._lock.reading():
            yield one_off.index.view(version)

    # --- reporting -------------------------------------------------------------------------

    def _report(self) -> None:
        """Upsert this engine's EngineState rows, throttled. A failure to write
        status never fails a decision (it runs in a savepoint and is logged)."""
        now = time.monotonic()
        version = self.loaded_version
        if self._reported is not None:
            since, reported = now - self._reported[0], self._reported[1]
            changed = version != reported and since >= settings.OPTOUT_ENGINE_REPORT_SECONDS
            if not changed and since < settings.OPTOUT_ENGINE_HEARTBEAT_SECONDS:
                return
        self._reported = (now, version)
        try:
            with transaction.atomic():
                engine_states_upsert(self._states())
        except DatabaseError:
            logger.exception("matching engine state could not be written")

    def _states(self) -> list[EngineState]:
        with self._lock.reading():
            sizes = self.index.sizes() if self.index is not None else {}
            version = self.loaded_version
        updated_at = timezone.now()
        return [
            EngineState(
                worker=process_name(),
                shards=self.shard.count,
                shard=self.shard.index,
                kind=kind,
                loaded_version=version,
                size=sizes.get(kind, 0),
                updated_at=updated_at,
            )
            for kind in HASH_KINDS
        ]


def engine_states_upsert(states: Iterable[EngineState]) -> None:
    EngineState.objects.bulk_create(
        list(states),
        update_conflicts=True,
        unique_fields=["worker", "shards", "shard", "kind"],
        update_fields=["loaded_version", "size", "updated_at"],
    )


def process_name() -> str:
    """The Celery worker's hostname (or the host's name) and the process id."""
    from celery import current_task

    hostname = getattr(getattr(current_task, "request", None), "hostname", None)
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


# --- one engine per shard per process ---------------------------------------------------


class _Engines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[Shard, MatchingEngine] = {}

    def get(self, shard: Shard) -> MatchingEngine:
        with self._lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = self._engines[shard] = MatchingEngine(shard)
            return engine

    def reset(self) -> None:
        """Forget every engine of this process (tests: the database was rolled back)."""
        with self._lock:
            self._engines.clear()


engines = _Engines()


def engine_for(*, shards: int = 1, shard: int = 0) -> MatchingEngine:
    """This process's engine of ``shard`` of ``shards`` (default: everything)."""
    return engines.get(Shard(shards, shard))


# --- what the engines report --------------------------------------------------------------


@dataclass(frozen=True)
class RegistryStatus:
    registry_version: int
    engines: list[EngineState]

    def lag(self, state: EngineState) -> int:
        """How many registry versions ``state``'s engine has not loaded yet."""
        return self.registry_version - state.loaded_version


def registry_status() -> RegistryStatus:
    """The newest registry version and the engines that reported within
    OPTOUT_ENGINE_SEEN_SECONDS (one row per process, shard and hash kind)."""
    seen_since = timezone.now() - timedelta(seconds=settings.OPTOUT_ENGINE_SEEN_SECONDS)
    return RegistryStatus(
        registry_version=registry_version_current(),
        engines=list(EngineState.objects.filter(updated_at__gte=seen_since)),
    )
