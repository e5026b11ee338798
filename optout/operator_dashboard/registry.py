"""The registry's side of the operator dashboard: photos, creators, opt-outs,
ledger events per day, and how fresh the matching engines' indexes are."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from optout.engine import registry_status
from optout.models import OptOut
from registry.models import ConsentEvent, Creator, Photo


@dataclass(frozen=True)
class RegistryFigures:
    photos: int
    creators: int
    # Deleted accounts that kept their opt-outs as hash-only suppression records.
    anonymous_creators: int
    suspended_creators: int
    active_opt_outs: int


def registry_figures() -> RegistryFigures:
    creators = Creator.objects.aggregate(
        total=Count("id"),
        anonymous=Count("id", filter=Q(anonymized_at__isnull=False)),
        suspended=Count("id", filter=Q(suspended_at__isnull=False)),
    )
    return RegistryFigures(
        photos=Photo.objects.count(),
        creators=creators["total"],
        anonymous_creators=creators["anonymous"],
        suspended_creators=creators["suspended"],
        # Index opt_out_active_idx (partial on withdrawn_at IS NULL).
        active_opt_outs=OptOut.objects.filter(withdrawn_at__isnull=True).count(),
    )


@dataclass(frozen=True)
class DayCount:
    day: datetime.date
    count: int


def consent_events_per_day(*, first_day: datetime.date, last_day: datetime.date) -> list[DayCount]:
    """Ledger events per UTC day, every day of the range (0 where there were none)."""
    start = datetime.datetime.combine(first_day, datetime.time.min, tzinfo=datetime.UTC)
    end = datetime.datetime.combine(
        last_day + datetime.timedelta(days=1), datetime.time.min, tzinfo=datetime.UTC
    )
    # Index consent_created_idx: the ledger holds a row per registered photo.
    counted = dict(
        ConsentEvent.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .order_by()
        .values("day")
        .annotate(events=Count("id"))
        .values_list("day", "events")
    )
    days = (last_day - first_day).days + 1
    return [
        DayCount(day=day, count=counted.get(day, 0))
        for day in (first_day + datetime.timedelta(days=offset) for offset in range(days))
    ]


@dataclass(frozen=True)
class EngineFreshness:
    worker: str
    shards: int
    shard: int
    kind: str
    loaded_version: int
    size: int
    updated_at: datetime.datetime
    # Registry versions the engine has not loaded yet (GET /api/v1/registry's lag).
    behind: int


@dataclass(frozen=True)
class IndexFreshness:
    registry_version: int
    engines: list[EngineFreshness]


def index_freshness() -> IndexFreshness:
    """The registry's version against each matching engine that reported
    recently: the figures behind GET /api/v1/registry (optout.engine)."""
    status = registry_status()
    return IndexFreshness(
        registry_version=status.registry_version,
        engines=[
            EngineFreshness(
                worker=state.worker,
                shards=state.shards,
                shard=state.shard,
                kind=state.kind,
                loaded_version=state.loaded_version,
                size=state.size,
                updated_at=state.updated_at,
                behind=status.lag(state),
            )
            for state in status.engines
        ],
    )
