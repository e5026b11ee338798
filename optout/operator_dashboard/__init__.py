"""Reads behind the operator dashboard (/admin/dashboard/, staff only).

Every figure is an aggregate PostgreSQL computes: the page makes the same
number of queries however many organizations, batches or ledger events there
are, and never loops over a big table in Python. Creators appear only as
counts; nothing here names a creator or reads a photo's hashes.

The figures are read in ``registry`` (photos, creators, opt-outs, ledger,
index freshness), ``pipelines`` (batches, throughput, organizations) and
``broker`` (queue depths, with a short timeout: a broker that is down is
reported, never a failed page); ``operator_dashboard`` puts them together.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone

from optout.operator_dashboard.broker import (
    BROKER_TIMEOUT_SECONDS,
    QueueDepth,
    QueueDepths,
    broker_queue_names,
    queue_depths,
)
from optout.operator_dashboard.pipelines import (
    TOP_ORGANIZATIONS,
    BatchFigures,
    BatchWindows,
    OrganizationUsage,
    Throughput,
    batch_figures,
    organization_usage,
    throughput,
)
from optout.operator_dashboard.registry import (
    DayCount,
    EngineFreshness,
    IndexFreshness,
    RegistryFigures,
    consent_events_per_day,
    index_freshness,
    registry_figures,
)

__all__ = [
    "BROKER_TIMEOUT_SECONDS",
    "TOP_ORGANIZATIONS",
    "WINDOW_DAYS",
    "BatchFigures",
    "BatchWindows",
    "DayCount",
    "EngineFreshness",
    "IndexFreshness",
    "OperatorDashboard",
    "OrganizationUsage",
    "QueueDepth",
    "QueueDepths",
    "RegistryFigures",
    "Throughput",
    "operator_dashboard",
    "queue_depths",
]

# "The last 30 days": today (UTC) and the 29 calendar days before it, so that
# the chart's first bar is a whole day like the others.
WINDOW_DAYS = 30
# Throughput is measured over the last day: recent enough to show today's
# load, long enough to hold more than one batch on a quiet registry.
THROUGHPUT_WINDOW = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class OperatorDashboard:
    generated_at: datetime.datetime
    # Start of "the last 30 days" (midnight UTC, WINDOW_DAYS - 1 days before today).
    window_start: datetime.datetime
    registry: RegistryFigures
    consent_events_per_day: list[DayCount]
    batches: BatchWindows
    throughput: Throughput
    organizations: list[OrganizationUsage]
    queues: QueueDepths
    index: IndexFreshness

    # The charts' scales (properties: not part of the JSON form).
    @property
    def consent_events_peak(self) -> int:
        return max((day.count for day in self.consent_events_per_day), default=0)

    @property
    def organizations_peak(self) -> int:
        return max((row.records_checked for row in self.organizations), default=0)


def operator_dashboard(*, now: datetime.datetime | None = None) -> OperatorDashboard:
    """Every figure of the dashboard, as of ``now`` (default: the present)."""
    now = now or timezone.now()
    today = now.astimezone(datetime.UTC).date()
    first_day = today - datetime.timedelta(days=WINDOW_DAYS - 1)
    window_start = datetime.datetime.combine(first_day, datetime.time.min, tzinfo=datetime.UTC)
    return OperatorDashboard(
        generated_at=now,
        window_start=window_start,
        registry=registry_figures(),
        consent_events_per_day=consent_events_per_day(first_day=first_day, last_day=today),
        batches=batch_figures(since=window_start),
        throughput=throughput(since=now - THROUGHPUT_WINDOW),
        organizations=organization_usage(since=window_start),
        queues=queue_depths(queues=broker_queue_names()),
        index=index_freshness(),
    )
