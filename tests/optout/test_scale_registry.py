"""The registry's size holds back unconfirmed matches in lookups and batches,
counted in PostgreSQL at the decision's registry version (engine.
registry_photos_at) and stated in the evidence and the batch's receipt."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from optout import batches, receipts
from optout.engine import registry_photos_at
from optout.matching.scale import UNCONFIRMED, form_strictness
from optout.services import opt_out_file
from registry.ledger import LedgerEntry, entry_append, registry_version_current
from registry.models import Channel, ConsentEvent, Photo
from tests.factories import CreatorFactory, OrganizationFactory, PhotoFactory
from tests.optout.batch_helpers import (
    download,
    jsonl,
    jsonl_rows,
    pipeline_client,
    submit,
)
from tests.optout.test_batches import batch_of, run_chunks
from tests.optout.test_scale import FULL_RULE_UP_TO, near_edits

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def client() -> APIClient:
    """A pipeline's API client (an organization with both scopes)."""
    return pipeline_client(OrganizationFactory())


@pytest.fixture
def refused() -> Photo:
    """One photo (hashes from another tool: no colours, no keypoints) under an
    all_photos opt-out refusing ai_training."""
    creator = CreatorFactory()
    photo = PhotoFactory(creator=creator)
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB)
    return photo


def others_register(count: int, *, version: int | None = None) -> None:
    """``count`` photos of another creator, under no opt-out: they only make
    the registry larger. Registered as the registry does, with a new version
    (one for all of them here), or at ``version`` when given."""
    creator = CreatorFactory()
    with transaction.atomic():
        if version is None:
            entry = LedgerEntry(
                kind=ConsentEvent.Kind.PHOTO_REGISTERED, creator_public_id=creator.public_id
            )
            event = entry_append(entry=entry, actor="test", channel=Channel.WEB, notice_version="1")
            version = event.registry_version
        Photo.objects.bulk_create(
            Photo(
                creator=creator,
                sha256=secrets.token_hex(32),
                pdq=secrets.token_hex(32),
                pdq_quality=100,
                phash=secrets.token_hex(8),
                registered_version=version,
            )
            for _ in range(count)
        )


def records_near(photo: Photo) -> list[dict[str, Any]]:
    return [
        {"id": name, "pdq": pdq, "phash": phash, "pdq_quality": 90}
        for name, (pdq, phash) in near_edits(photo.pdq, photo.phash).items()
    ]


def lookup(client: APIClient, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    response = client.post(
        "/api/v1/lookup", {"use": "ai_training", "records": records}, format="json"
    )
    assert response.status_code == 200, response.content
    return {result["id"]: result for result in response.json()["results"]}


def test_the_registry_counts_the_photos_registered_at_or_before_a_version(
    refused, django_assert_num_queries
) -> None:
    version = registry_version_current()
    others_register(5)  # at version + 1
    others_register(7)  # at version + 2

    assert registry_photos_at(version) == 1
    assert registry_photos_at(version + 2) == 1 + 5 + 7
    assert registry_photos_at(version + 1) == 1 + 5
    # The last version's count is kept: asking again costs no query.
    with django_assert_num_queries(0):
        assert registry_photos_at(version + 1) == 1 + 5
    assert registry_photos_at(-1) == 0


def test_a_lookup_holds_back_unconfirmed_matches_once_the_registry_is_large(
    client, refused
) -> None:
    records = records_near(refused)
    small = lookup(client, records)
    others_register(FULL_RULE_UP_TO)  # one photo more than the full rule allows
    large = lookup(client, records)

    assert {name: r["decision"] for name, r in small.items()} == {
        "edited": "exclude",
        "close": "exclude",
    }
    assert small["edited"]["matches"][0]["evidence"]["strictness"] == 0
    assert {name: r["decision"] for name, r in large.items()} == {
        "edited": "allow",
        "close": "exclude",
    }
    assert large["close"]["matches"][0]["evidence"]["strictness"] == 1


def test_a_batch_fixes_the_registrys_size_with_its_version_and_signs_it(client, refused) -> None:
    others_register(FULL_RULE_UP_TO)
    batch = batch_of(submit(client, jsonl(records_near(refused))))
    version = batches._batch_version_fix(batch.pk)
    # Photos registered after the batch's version change nothing for it.
    others_register(FULL_RULE_UP_TO * 3, version=registry_version_current() + 1)
    run_chunks(batch)

    batch.refresh_from_db()
    assert (batch.status, batch.registry_version) == ("done", version)
    size = FULL_RULE_UP_TO + 1
    assert batch.registry_photos == size
    statement = batch.receipt["statement"]  # type: ignore[index]
    assert statement["thresholds"]["registry_photos"] == size
    receipts.receipt_verify(batch.receipt, receipts.public_key_info()["public_key"])
    _status, body = download(client, f"/api/v1/batches/{batch.public_id}/exclusions")
    rows = jsonl_rows(body)
    assert [row["id"] for row in rows] == ["close"]
    assert rows[0]["matches"][0]["evidence"]["strictness"] == 1
    assert client.get(f"/api/v1/batches/{batch.public_id}").json()["registry_photos"] == size


def test_the_registry_endpoint_says_how_far_each_record_form_is_held_back(client, refused) -> None:
    before = client.get("/api/v1/registry").json()
    others_register(FULL_RULE_UP_TO)
    after = client.get("/api/v1/registry").json()

    def held(body: dict[str, Any], colours_agree: bool = False) -> dict[tuple[str, bool], int]:
        return {
            (row["hashes"], row["pdq_quality"]): row["strictness"]
            for row in body["held_back"]
            if row["colours_agree"] is colours_agree
        }

    assert (before["photos"], after["photos"]) == (1, FULL_RULE_UP_TO + 1)
    assert set(held(after)) == set(UNCONFIRMED)
    assert set(held(before).values()) == {0}
    # Only the most common form crossed its first step; each as scale.py says.
    assert held(after) == {form: form_strictness(FULL_RULE_UP_TO + 1, form) for form in held(after)}
    assert held(after)["pdq+phash", True] == 1
    assert held(after)["pdq+phash", False] == 0
    # Agreeing colours hold a match back far later.
    assert held(after, colours_agree=True) == {("pdq+phash", True): 0}
