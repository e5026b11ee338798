"""GET /healthz: 200 while the database answers, 503 when it does not."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client
from pytest_django.fixtures import Settings

from registry.services import claim_add
from tests.factories import CreatorFactory


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.django_db
def test_healthz_reports_the_database_and_the_registry_version(
    client: Client, settings: Settings
) -> None:
    settings.REDIS_URL = ""
    claim, _ = claim_add(creator=CreatorFactory(), kind="domain", value="a.example", channel="web")

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert response.json() == {
        "status": "ok",
        "database": True,
        "redis": None,
        "registry_version": claim.registered_version,
    }


@pytest.mark.worker
@pytest.mark.django_db
def test_healthz_reports_a_live_redis(client: Client, settings: Settings) -> None:
    settings.REDIS_URL = os.environ["REDIS_URL"]

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["redis"] is True


@pytest.mark.django_db
def test_healthz_stays_200_when_redis_is_down(client: Client, settings: Settings) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["database"] is True
    assert response.json()["redis"] is False


@pytest.fixture
def database_unreachable() -> Iterator[None]:
    """Point the connection at a port nobody listens on, then restore it."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["HOST"] = "127.0.0.1"
    connection.settings_dict["PORT"] = closed_port()
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_healthz_answers_503_when_the_database_does_not(
    client: Client, settings: Settings, database_unreachable: None
) -> None:
    settings.REDIS_URL = ""

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": False,
        "redis": None,
        "registry_version": None,
    }


@pytest.mark.django_db
def test_healthz_refuses_post(client: Client) -> None:
    response = client.post("/healthz")

    assert response.status_code == 405


@pytest.mark.django_db
def test_healthz_answers_probes_by_ip_address_over_plain_http(
    client: Client, settings: Settings
) -> None:
    settings.ALLOWED_HOSTS = ["registry.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    settings.REDIS_URL = ""

    probe = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    page = client.get("/privacy/", HTTP_HOST="10.0.0.7:8000")

    assert probe.status_code == 200
    assert probe.json()["database"] is True
    assert page.status_code == 400
