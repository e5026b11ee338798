"""The operator dashboard (/admin/dashboard/ and /admin/dashboard.json): its
figures against hand-built data, who may see it, the queue depths read from a
real Redis (and a broker that is not there), and its query count."""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django.fixtures import Settings

from config.celery import app
from optout.models import Batch, EngineState, OptOut, Organization, PipelineRequest
from optout.operator_dashboard import (
    BatchFigures,
    BatchWindows,
    DayCount,
    EngineFreshness,
    OrganizationUsage,
    QueueDepth,
    QueueDepths,
    Throughput,
    operator_dashboard,
    queue_depths,
)
from registry.models import ConsentEvent, Creator
from tests.factories import PASSWORD, CreatorFactory, OrganizationFactory, PhotoFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# The `broker` fixture's Redis database for this module (tests/workers.py).
WORKER_REDIS_DB = 10
# Nothing listens here: a broker that cannot be reached.
CLOSED_BROKER_URL = "redis://127.0.0.1:6391/0"
DAY = datetime.timedelta(days=1)


# --- hand-built data ---------------------------------------------------------------


def staff_user(username: str = "operator@example.org") -> AbstractBaseUser:
    return get_user_model().objects.create_user(
        username=username, email=username, password=PASSWORD, is_staff=True
    )


def consent_event(version: int, created_at: datetime.datetime, creator: Creator) -> None:
    # Written directly, not through registry.ledger: the ledger stamps the
    # present, and these events need days in the past.
    ConsentEvent.objects.create(
        registry_version=version,
        kind=ConsentEvent.Kind.PHOTO_REGISTERED,
        creator_public_id=creator.public_id,
        actor="creator",
        channel="web",
        notice_version="test",
        created_at=created_at,
    )


def opt_out(creator: Creator, *, withdrawn: bool = False) -> OptOut:
    now = timezone.now()
    return OptOut.objects.create(
        creator=creator,
        uses=["ai_training"],
        scope=OptOut.Scope.ALL_PHOTOS,
        channel="web",
        notice_version="test",
        filed_version=1,
        withdrawn_at=now if withdrawn else None,
        withdrawn_version=2 if withdrawn else None,
    )


def batch(
    organization: Organization,
    status: str,
    created_at: datetime.datetime,
    *,
    records: int = 0,
    excluded: int = 0,
    invalid: int = 0,
    seconds: float | None = None,
) -> Batch:
    """A batch submitted at ``created_at``; with ``seconds``, started then and
    finished that many seconds later."""
    started_at = created_at if seconds is not None else None
    finished_at = created_at + datetime.timedelta(seconds=seconds) if seconds is not None else None
    return Batch.objects.create(
        organization=organization,
        use="ai_training",
        format=Batch.Format.JSONL,
        manifest_sha256=secrets.token_hex(32),
        manifest_bytes=1,
        idempotency_key=secrets.token_hex(8),
        request_digest=secrets.token_hex(32),
        status=status,
        record_count=records,
        excluded_count=excluded,
        invalid_count=invalid,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
    )


def pipeline_request(
    organization: Organization,
    endpoint: str,
    created_at: datetime.datetime,
    *,
    records: int,
    excluded: int = 0,
) -> None:
    PipelineRequest.objects.create(
        organization=organization,
        key_prefix="test",
        endpoint=endpoint,
        record_count=records,
        excluded_count=excluded,
        created_at=created_at,
    )


def engine_state(worker: str, loaded_version: int, updated_at: datetime.datetime) -> None:
    EngineState.objects.create(
        worker=worker,
        kind="pdq",
        loaded_version=loaded_version,
        size=1_000,
        updated_at=updated_at,
    )


@pytest.fixture
def registry_data() -> datetime.datetime:
    """Creators, photos, opt-outs, ledger events, organizations with batches and
    lookups, and engine states, at known times; returns the present they were
    built against."""
    now = timezone.now()
    alice, bob = CreatorFactory(), CreatorFactory()
    CreatorFactory(user=None, anonymized_at=now)
    CreatorFactory(suspended_at=now)
    PhotoFactory.create_batch(3, creator=alice)
    PhotoFactory(creator=bob)
    opt_out(alice)
    opt_out(bob)
    opt_out(bob, withdrawn=True)
    # Ledger events: two today, three three days ago, one on the window's
    # first day, one the day before it (outside).
    for version, days_ago in enumerate([0, 0, 3, 3, 3, 29, 30], start=1):
        consent_event(version, now - days_ago * DAY, alice)

    lab, studio = OrganizationFactory(name="Lab"), OrganizationFactory(name="Studio")
    OrganizationFactory(name="Idle")
    hours = datetime.timedelta(hours=1)
    batch(lab, "done", now - 2 * hours, records=100, excluded=10, invalid=2, seconds=50)
    batch(lab, "done", now - 40 * DAY, records=1_000, excluded=5, seconds=500)
    batch(lab, "failed", now - 5 * DAY)
    batch(lab, "queued", now - hours)
    batch(lab, "running", now - hours, records=50, excluded=1)
    batch(studio, "done", now - hours, records=300, excluded=30, seconds=150)
    pipeline_request(lab, "lookup", now - hours, records=10, excluded=1)
    pipeline_request(lab, "urls", now - 2 * hours, records=5)
    pipeline_request(lab, "changes", now, records=7)  # not a lookup
    pipeline_request(lab, "batch", now, records=100)  # counted as a batch, not here
    pipeline_request(lab, "lookup", now - 3 * DAY, records=20, excluded=2)
    pipeline_request(lab, "lookup", now - 40 * DAY, records=1_000, excluded=9)
    pipeline_request(studio, "lookup", now - hours / 2, records=4, excluded=4)

    engine_state("worker-a:1", loaded_version=5, updated_at=now)
    engine_state("worker-b:2", loaded_version=7, updated_at=now)
    engine_state("gone:3", loaded_version=1, updated_at=now - DAY)  # not seen lately
    return now


# --- figures ----------------------------------------------------------------------


def test_registry_figures_count_photos_creators_and_active_opt_outs(
    registry_data: datetime.datetime,
) -> None:
    dashboard = operator_dashboard(now=registry_data)

    registry = dashboard.registry
    assert (registry.photos, registry.creators, registry.active_opt_outs) == (4, 4, 2)
    assert (registry.anonymous_creators, registry.suspended_creators) == (1, 1)


def test_consent_events_are_counted_per_day_over_the_last_30_days(
    registry_data: datetime.datetime,
) -> None:
    today = registry_data.date()

    days = operator_dashboard(now=registry_data).consent_events_per_day

    assert len(days) == 30
    assert days[0].day == today - 29 * DAY
    assert days[-1] == DayCount(day=today, count=2)
    assert days[-4] == DayCount(day=today - 3 * DAY, count=3)
    assert days[0] == DayCount(day=today - 29 * DAY, count=1)
    assert sum(day.count for day in days) == 6  # the event 30 days ago is outside
    assert [day.day for day in days] == [today - (29 - n) * DAY for n in range(30)]


def test_batches_are_counted_by_status_with_records_and_exclusion_rate(
    registry_data: datetime.datetime,
) -> None:
    batches = operator_dashboard(now=registry_data).batches

    assert batches == BatchWindows(
        recent=BatchFigures(
            by_status={"queued": 1, "running": 1, "done": 2, "failed": 1},
            total=5,
            records_checked=400,
            records_excluded=40,
            records_invalid=2,
            exclusion_rate=0.1,
        ),
        all_time=BatchFigures(
            by_status={"queued": 1, "running": 1, "done": 3, "failed": 1},
            total=6,
            records_checked=1_400,
            records_excluded=45,
            records_invalid=2,
            exclusion_rate=45 / 1_400,
        ),
    )


def test_throughput_is_records_per_second_of_the_batches_done_in_the_last_day(
    registry_data: datetime.datetime,
) -> None:
    throughput = operator_dashboard(now=registry_data).throughput

    # 400 records in 50 + 150 seconds; three lookups (lookup, urls, lookup).
    assert throughput == Throughput(
        batches_done=2,
        records_decided=400,
        batch_seconds=200.0,
        records_per_second=2.0,
        lookups=3,
        records_looked_up=19,
    )


def test_organizations_are_listed_most_active_first_and_idle_ones_are_left_out(
    registry_data: datetime.datetime,
) -> None:
    organizations = operator_dashboard(now=registry_data).organizations

    studio, lab = Organization.objects.get(name="Studio"), Organization.objects.get(name="Lab")
    assert organizations == [
        OrganizationUsage(
            public_id=studio.public_id,
            name="Studio",
            lookups=1,
            records_looked_up=4,
            batches=1,
            batch_records=300,
            records_checked=304,
            records_excluded=34,
        ),
        OrganizationUsage(
            public_id=lab.public_id,
            name="Lab",
            lookups=3,
            records_looked_up=35,
            batches=4,
            batch_records=100,
            records_checked=135,
            records_excluded=13,
        ),
    ]


def test_index_freshness_says_how_many_versions_each_recent_engine_is_behind(
    registry_data: datetime.datetime,
) -> None:
    index = operator_dashboard(now=registry_data).index

    assert index.registry_version == 7
    assert [(engine.worker, engine.loaded_version, engine.behind) for engine in index.engines] == [
        ("worker-a:1", 5, 2),
        ("worker-b:2", 7, 0),
    ]
    assert index.engines[0] == EngineFreshness(
        worker="worker-a:1",
        shards=1,
        shard=0,
        kind="pdq",
        loaded_version=5,
        size=1_000,
        updated_at=registry_data,
        behind=2,
    )


def test_an_empty_registry_has_zero_figures_and_no_exclusion_rate() -> None:
    dashboard = operator_dashboard()

    assert dashboard.registry.photos == 0
    assert sum(day.count for day in dashboard.consent_events_per_day) == 0
    assert dashboard.batches.all_time.total == 0
    assert dashboard.batches.all_time.exclusion_rate is None
    assert dashboard.throughput.records_per_second is None
    assert dashboard.organizations == []
    assert dashboard.index.engines == []


def test_the_usage_table_stops_at_the_20_most_active_organizations() -> None:
    now = timezone.now()
    for n in range(25):
        pipeline_request(OrganizationFactory(name=f"Org {n:02}"), "lookup", now, records=n + 1)

    organizations = operator_dashboard(now=now).organizations

    assert [row.name for row in organizations] == [f"Org {n:02}" for n in range(24, 4, -1)]
    assert [row.records_checked for row in organizations] == list(range(25, 5, -1))


# --- the page and its JSON --------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/dashboard/", "/admin/dashboard.json"])
def test_anonymous_visitors_are_sent_to_the_admin_login(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"


@pytest.mark.parametrize("path", ["/admin/dashboard/", "/admin/dashboard.json"])
def test_a_creator_who_is_not_staff_is_not_let_in(
    client: Client, registry_data: datetime.datetime, path: str
) -> None:
    creator = CreatorFactory()
    client.force_login(creator.user)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"
    assert b"photos registered" not in response.content


def test_staff_see_the_dashboard_with_its_figures(
    client: Client, registry_data: datetime.datetime
) -> None:
    client.force_login(staff_user())

    response = client.get("/admin/dashboard/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Operator dashboard</h1>" in page
    assert '<span class="number">4</span><span class="label">photos registered</span>' in page
    assert '<span class="number">2</span><span class="label">active opt-outs</span>' in page
    assert '<th scope="row">exclusion rate</th><td class="num">10.00 %</td>' in page
    assert '<th scope="row">Studio</th><td class="num">1</td>' in page
    assert page.count("<rect ") == 30
    # No creator is named: not even the creators' email addresses.
    for email in Creator.objects.filter(user__isnull=False).values_list("user__email", flat=True):
        assert email not in page


def test_staff_get_the_same_figures_as_json(
    client: Client, registry_data: datetime.datetime
) -> None:
    client.force_login(staff_user())

    response = client.get("/admin/dashboard.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["registry"] == {
        "photos": 4,
        "creators": 4,
        "anonymous_creators": 1,
        "suspended_creators": 1,
        "active_opt_outs": 2,
    }
    assert body["batches"]["recent"]["exclusion_rate"] == 0.1
    assert body["consent_events_per_day"][-1] == {
        "day": registry_data.date().isoformat(),
        "count": 2,
    }
    assert [row["name"] for row in body["organizations"]] == ["Studio", "Lab"]
    assert [engine["behind"] for engine in body["index"]["engines"]] == [2, 0]


def test_the_admin_index_links_to_the_dashboard(client: Client) -> None:
    client.force_login(staff_user())

    response = client.get("/admin/")

    assert response.status_code == 200
    assert '<a href="/admin/dashboard/" class="section">Operator dashboard</a>' in (
        response.content.decode()
    )


def test_the_page_makes_as_many_queries_for_many_organizations_as_for_one(
    client: Client, registry_data: datetime.datetime
) -> None:
    client.force_login(staff_user())
    with CaptureQueriesContext(connection) as few:
        assert client.get("/admin/dashboard/").status_code == 200
    now = timezone.now()
    for n in range(30):
        organization = OrganizationFactory(name=f"Busy {n}")
        batch(organization, "done", now - DAY, records=10, excluded=1, seconds=5)
        pipeline_request(organization, "lookup", now, records=3)

    with CaptureQueriesContext(connection) as many:
        response = client.get("/admin/dashboard/")

    assert response.status_code == 200
    assert len(response.context["dashboard"].organizations) == 20
    assert len(many) == len(few)
    # Session, user and the staff user's permissions (2, the admin's app
    # list), then creators, photos, opt-outs, events per day, batches,
    # throughput (2), organizations, registry version and engines.
    assert len(many) == 14


# --- queue depth: a real Redis, and a broker that is not there -------------------


@pytest.fixture
def broker_emptied(broker: str) -> Iterator[str]:
    """The module's broker database, emptied of every key before and after
    (the `broker` fixture purges only the default queue)."""
    redis.Redis.from_url(broker).flushdb()
    yield broker
    redis.Redis.from_url(broker).flushdb()


def enqueue(queue: str, count: int) -> None:
    # A task no worker runs, on a broker database no worker consumes.
    for _ in range(count):
        app.send_task("tests.operator_dashboard.never_run", queue=queue)


@pytest.mark.worker
def test_queue_depth_counts_the_messages_waiting_in_each_queue(
    broker_emptied: str, settings: Settings, client: Client
) -> None:
    settings.OPTOUT_SHARDS = 3
    enqueue("default", 3)
    enqueue("match.shard1", 2)

    depths = queue_depths(queues=["default", "match.shard0", "match.shard1", "match.shard2"])
    client.force_login(staff_user())
    page = client.get("/admin/dashboard/").content.decode()

    assert depths == QueueDepths(
        broker="ok",
        queues=[
            QueueDepth("default", 3),
            QueueDepth("match.shard0", 0),
            QueueDepth("match.shard1", 2),
            QueueDepth("match.shard2", 0),
        ],
    )
    assert '<th scope="row">default</th><td class="num">3</td>' in page
    assert '<th scope="row">match.shard1</th><td class="num">2</td>' in page
    assert '<th scope="row">match.shard2</th><td class="num">0</td>' in page


@pytest.fixture
def closed_broker() -> Iterator[None]:
    saved = app.conf.broker_url, app.conf.task_always_eager
    app.conf.broker_url, app.conf.task_always_eager = CLOSED_BROKER_URL, False
    yield
    app.conf.broker_url, app.conf.task_always_eager = saved


def test_an_unreachable_broker_is_reported_and_the_page_still_renders(
    closed_broker: None, client: Client, registry_data: datetime.datetime
) -> None:
    client.force_login(staff_user())

    page = client.get("/admin/dashboard/")
    body: dict[str, Any] = client.get("/admin/dashboard.json").json()

    assert page.status_code == 200
    assert "Broker unreachable" in page.content.decode()
    assert '<span class="number">4</span><span class="label">photos registered</span>' in (
        page.content.decode()
    )
    assert body["queues"] == {"broker": "unreachable", "queues": []}
    assert body["registry"]["photos"] == 4
