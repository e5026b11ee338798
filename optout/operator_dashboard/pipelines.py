"""The pipelines' side of the operator dashboard: batches, throughput and
per-organization usage, each read in one or two aggregate queries."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, DurationField, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from optout.models import Batch, Organization, PipelineRequest

# The usage table lists the most active organizations only, so the page stays
# one screen long whatever the number of organizations.
TOP_ORGANIZATIONS = 20
# What the synchronous endpoints log as one lookup (the change feed is not one).
LOOKUP_ENDPOINTS = (PipelineRequest.Endpoint.LOOKUP, PipelineRequest.Endpoint.URLS)


@dataclass(frozen=True)
class BatchFigures:
    # Every status, 0 included, in the order of Batch.Status.
    by_status: dict[str, int]
    total: int
    # Records of the batches that are done (a running batch's are not all decided).
    records_checked: int
    records_excluded: int
    records_invalid: int
    # records_excluded / records_checked; None when nothing was checked.
    exclusion_rate: float | None

    @property
    def exclusion_percent(self) -> float | None:
        return None if self.exclusion_rate is None else 100 * self.exclusion_rate


def _batch_aggregates(prefix: str, window: Q) -> dict[str, Any]:
    done = window & Q(status=Batch.Status.DONE)
    aggregates: dict[str, Any] = {
        f"{prefix}_{status}": Count("id", filter=window & Q(status=status))
        for status in Batch.Status.values
    }
    aggregates[f"{prefix}_records"] = Coalesce(Sum("record_count", filter=done), 0)
    aggregates[f"{prefix}_excluded"] = Coalesce(Sum("excluded_count", filter=done), 0)
    aggregates[f"{prefix}_invalid"] = Coalesce(Sum("invalid_count", filter=done), 0)
    return aggregates


def _batch_figures(prefix: str, row: dict[str, Any]) -> BatchFigures:
    by_status = {status: row[f"{prefix}_{status}"] for status in Batch.Status.values}
    records, excluded = row[f"{prefix}_records"], row[f"{prefix}_excluded"]
    return BatchFigures(
        by_status=by_status,
        total=sum(by_status.values()),
        records_checked=records,
        records_excluded=excluded,
        records_invalid=row[f"{prefix}_invalid"],
        exclusion_rate=excluded / records if records else None,
    )


@dataclass(frozen=True)
class BatchWindows:
    recent: BatchFigures  # submitted since the window's start
    all_time: BatchFigures

    @property
    def status_rows(self) -> list[tuple[str, int, int]]:
        """(status, batches in the window, batches all time), for the page."""
        return [
            (status, count, self.all_time.by_status[status])
            for status, count in self.recent.by_status.items()
        ]


def batch_figures(*, since: datetime.datetime) -> BatchWindows:
    """Batches by status and their records, since ``since`` and all time, in
    one pass over the batch table (a row per manifest: small next to the
    ledger, and the all-time figures read all of it anyway)."""
    row = Batch.objects.aggregate(
        **_batch_aggregates("recent", Q(created_at__gte=since)),
        **_batch_aggregates("all", Q()),
    )
    return BatchWindows(recent=_batch_figures("recent", row), all_time=_batch_figures("all", row))


@dataclass(frozen=True)
class Throughput:
    batches_done: int
    records_decided: int
    # The done batches' start-to-finish times added up.
    batch_seconds: float
    # records_decided / batch_seconds: how fast a batch is decided once it
    # runs (batches that ran side by side each count their own time). None
    # when no batch finished in the window.
    records_per_second: float | None
    lookups: int
    records_looked_up: int


def throughput(*, since: datetime.datetime) -> Throughput:
    """Batches finished and lookups answered since ``since``."""
    batches = Batch.objects.filter(
        status=Batch.Status.DONE, finished_at__gte=since, started_at__isnull=False
    ).aggregate(
        batches=Count("id"),
        records=Coalesce(Sum("record_count"), 0),
        duration=Sum(F("finished_at") - F("started_at"), output_field=DurationField()),
    )
    # Index pipeline_request_created_idx.
    lookups = PipelineRequest.objects.filter(
        created_at__gte=since, endpoint__in=LOOKUP_ENDPOINTS
    ).aggregate(requests=Count("id"), records=Coalesce(Sum("record_count"), 0))
    seconds = batches["duration"].total_seconds() if batches["duration"] is not None else 0.0
    return Throughput(
        batches_done=batches["batches"],
        records_decided=batches["records"],
        batch_seconds=seconds,
        records_per_second=batches["records"] / seconds if seconds > 0 else None,
        lookups=lookups["requests"],
        records_looked_up=lookups["records"],
    )


@dataclass(frozen=True)
class OrganizationUsage:
    public_id: uuid.UUID
    name: str
    lookups: int
    records_looked_up: int
    batches: int  # submitted, whatever their status
    batch_records: int  # of the done ones
    records_checked: int  # looked up + in done batches
    records_excluded: int


def _per_organization(rows: QuerySet[Any], aggregate: Count | Sum) -> Coalesce:
    """``aggregate`` over the organization's ``rows``, as a correlated subquery."""
    total = (
        rows.filter(organization=OuterRef("pk"))
        .order_by()
        .values("organization")
        .annotate(total=aggregate)
        .values("total")
    )
    return Coalesce(Subquery(total), 0)


def organization_usage(
    *, since: datetime.datetime, limit: int = TOP_ORGANIZATIONS
) -> list[OrganizationUsage]:
    """The ``limit`` organizations that checked the most records since
    ``since`` (then by requests, then name); organizations with no activity
    are left out. One query: a correlated subquery per figure, each read
    through an index that leads with the organization (pipeline_request_org_idx,
    batch_idempotency_per_org), so the cost grows with the organizations'
    activity in the window, not with the tables' history."""
    lookups = PipelineRequest.objects.filter(created_at__gte=since, endpoint__in=LOOKUP_ENDPOINTS)
    batches = Batch.objects.filter(created_at__gte=since)
    done = batches.filter(status=Batch.Status.DONE)
    rows = (
        Organization.objects.annotate(
            lookups=_per_organization(lookups, Count("id")),
            looked_up=_per_organization(lookups, Sum("record_count")),
            lookups_excluded=_per_organization(lookups, Sum("excluded_count")),
            batch_count=_per_organization(batches, Count("id")),
            batch_records=_per_organization(done, Sum("record_count")),
            batches_excluded=_per_organization(done, Sum("excluded_count")),
        )
        .annotate(
            checked=F("looked_up") + F("batch_records"),
            excluded=F("lookups_excluded") + F("batches_excluded"),
            requests=F("lookups") + F("batch_count"),
        )
        .order_by("-checked", "-requests", "name")
        .values(
            "public_id",
            "name",
            "lookups",
            "looked_up",
            "batch_count",
            "batch_records",
            "checked",
            "excluded",
            "requests",
        )[:limit]
    )
    # Inactive organizations sort last, so dropping them after the limit
    # leaves exactly the active ones among the first ``limit``.
    return [
        OrganizationUsage(
            public_id=row["public_id"],
            name=row["name"],
            lookups=row["lookups"],
            records_looked_up=row["looked_up"],
            batches=row["batch_count"],
            batch_records=row["batch_records"],
            records_checked=row["checked"],
            records_excluded=row["excluded"],
        )
        for row in rows
        if row["requests"] > 0
    ]
