"""Shared test setup.

Service-dependent tests carry a marker (postgres, worker, browser). Outside CI
they skip when the service is missing; with CI=true any skipped test fails the
run, so nothing that depends on a service can pass by not running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.conf import settings

if TYPE_CHECKING:
    # Models load once Django is set up; fixtures import them when they run.
    from pytest_django.fixtures import Settings
    from rest_framework.test import APIClient

    from registry.models import Creator

FIXTURES = Path(__file__).parent / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_skipped: list[str] = []


def postgres_available() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def redis_available() -> bool:
    return bool(os.environ.get("REDIS_URL"))


def chromium_available() -> bool:
    return Path("/usr/bin/chromium").exists() and shutil.which("chromium") is not None


@pytest.fixture(autouse=True)
def _matching_engines_reset() -> None:
    """The per-process matching engines follow registry versions, but the test
    database is rolled back or flushed between tests, so one version number can
    stand for different contents in two tests: start every test without them."""
    from optout.engine import engines

    engines.reset()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "postgres": (postgres_available(), "needs PostgreSQL: set DATABASE_URL"),
        "worker": (redis_available(), "needs Redis: set REDIS_URL"),
        "browser": (chromium_available(), "needs /usr/bin/chromium: run `make browser`"),
    }
    for item in items:
        for marker, (available, reason) in reasons.items():
            if item.get_closest_marker(marker) and not available:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if IN_CI and _skipped:
        terminalreporter.write_line(
            f"CI: {len(_skipped)} skipped test(s) count as failures: " + ", ".join(_skipped),
            red=True,
        )


# --- the creator API, authenticated with a personal token ------------------------

ClientFor = Callable[["Creator"], "APIClient"]


@pytest.fixture
def client_for() -> ClientFor:
    from rest_framework.test import APIClient

    from registry import services

    def make(creator: Creator) -> APIClient:
        _, raw = services.token_create(creator=creator, name="tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        return client

    return make


@pytest.fixture
def creator() -> Creator:
    from tests.factories import CreatorFactory

    return CreatorFactory()


@pytest.fixture
def api(creator: Creator, client_for: ClientFor) -> APIClient:
    return client_for(creator)


# --- real workers (tests/workers.py) ---------------------------------------------


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker on the Redis database of the test's module (its
    ``WORKER_REDIS_DB``: each real-worker module has its own, so their queues
    never mix), emptied before and after."""
    from tests.workers import broker_at

    db = getattr(request.module, "WORKER_REDIS_DB", None)
    assert isinstance(db, int), f"{request.module.__name__} sets no WORKER_REDIS_DB"
    with broker_at(db) as url:
        yield url


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real worker's batch settings and environment (batch_helpers.worker_environment)."""
    from tests.optout.batch_helpers import worker_environment

    yield from worker_environment(settings, tmp_path)
