"""Schemathesis against /api/schema/, in process: every operation of the
served schema is one test item (schemathesis' pytest integration), called
through the WSGI application with generated valid and invalid requests, and
every response checked against the schema (no 5xx, documented status codes,
content types, headers and bodies, invalid input refused, auth not ignored).

The checks configuration is the repository's schemathesis.toml, which the
command-line run in docs/api-testing.md reads too; only the example budget and
the credentials are set here. Derandomized and small, the suite is repeatable
and takes about 20 seconds (some 1 700 requests). The stateful phase (chains of
requests) runs on the command line only: schemathesis' pytest integration has
no stateful phase for a parametrized test.

Database: transaction=True. Each request commits as it does in production, and
a request that fails in PostgreSQL cannot poison the requests after it, as it
would inside one test transaction. What the requests commit (a Celery wake-up
on commit, for instance) goes to a Redis database of this module's own.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pytest_django.fixtures import Settings
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from optout import receipts, services
from optout.engine import engines
from optout.uses import AI_TRAINING
from registry import services as registry_services
from registry.models import Channel
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory
from tests.workers import broker_at

REPOSITORY = Path(__file__).resolve().parents[2]
# Redis database number of this module (worker test modules use 3, 4 and 5).
SCHEMATHESIS_REDIS_DB = 8
# Generated requests per operation in the fuzzing phase; the examples and coverage
# phases add the schema's examples and its boundary and type-violation cases.
MAX_EXAMPLES = 25


def schemathesis_config() -> SchemathesisConfig:
    data: dict[str, Any] = tomllib.loads((REPOSITORY / "schemathesis.toml").read_text())
    generation = data.setdefault("generation", {})
    generation["max-examples"] = MAX_EXAMPLES
    generation["deterministic"] = True
    # The Authorization header is the test's (an API key or a token, by path),
    # added to every request; a case generated without it or with a mangled one
    # would be sent with it all the same. The ignored_auth check still sends
    # requests without credentials and with wrong ones, and expects a 401.
    generation["with-security-parameters"] = False
    return SchemathesisConfig.from_dict(data)


# Loaded at collection through the application itself: the schema tested is the
# one /api/schema/ serves (generating it reads no database).
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=schemathesis_config())


@dataclass(frozen=True)
class Credentials:
    api_key: str  # the pipeline API: lookup, changes, batches, URL query
    token: str  # the creator API under /api/v1/me/

    def header_for(self, path: str) -> dict[str, str]:
        if path.startswith("/api/v1/me/"):
            return {"Authorization": f"Token {self.token}"}
        return {"Authorization": f"Api-Key {self.api_key}"}


@pytest.fixture
def credentials(settings: Settings, tmp_path: Path) -> Iterator[Credentials]:
    """An organization with a key for every scope, a creator with a token, and a
    registry that matches something: a photo and a domain under opt-outs."""
    settings.OPTOUT_SPOOL_DIR = tmp_path / "spool"
    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(receipts.private_key_generate())
    # Quotas are another test's subject; this one sends hundreds of requests a minute.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(("lookup", "urls", "changes", "batches")),
    }
    engines.reset()
    organization = OrganizationFactory(name="Schemathesis Lab")
    _, api_key = services.api_key_create(
        organization=organization, name="schemathesis", scopes=("lookup", "batches")
    )
    creator = CreatorFactory()
    _, token = registry_services.token_create(creator=creator, name="schemathesis")
    registry_services.photos_register_from_hashes(
        creator=creator, items=[(None, HashLine(sha256="ab" * 32))], channel=Channel.API
    )
    claim, _ = registry_services.claim_add(
        creator=creator, kind="domain", value="photos.example.org", channel=Channel.API
    )
    services.opt_out_file(
        creator=creator, uses=[AI_TRAINING], scope="all_photos", channel=Channel.API
    )
    services.opt_out_file(
        creator=creator,
        uses=[AI_TRAINING],
        scope="claims",
        claims=[claim.public_id],
        channel=Channel.API,
    )
    if os.environ.get("REDIS_URL"):
        with broker_at(SCHEMATHESIS_REDIS_DB):
            yield Credentials(api_key=api_key, token=token)
    else:  # tasks run in process (CELERY_TASK_ALWAYS_EAGER without Redis)
        yield Credentials(api_key=api_key, token=token)
    engines.reset()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
# The fixture's registry stands for the server's database: it is meant to live
# through every request of the operation's test, as the command-line run's does.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_api_conforms_to_its_schema(case: schemathesis.Case, credentials: Credentials) -> None:
    case.call_and_validate(headers=credentials.header_for(case.path))
