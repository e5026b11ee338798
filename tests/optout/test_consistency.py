"""The whole story of registry changes, through the pipeline API: a batch is
checked and signed, the creator withdraws, another opt-out is filed; lookups see
each change from the next registry version on, the change feed lists both, and
the earlier receipt still verifies and still names the version it was made at."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from optout import receipts
from optout.engine import engines
from optout.models import Batch, BatchResult, Chunk
from optout.services import opt_out_change, opt_out_file, opt_out_withdraw
from optout.tasks import batch_chunk_decide_task
from registry.models import Channel
from tests.factories import CreatorFactory, OrganizationFactory, PhotoFactory
from tests.optout.batch_helpers import jsonl, pipeline_client, submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def signing(settings: Settings) -> Iterator[None]:
    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(receipts.private_key_generate())
    receipts.signing_key_cache_clear()
    engines.reset()
    yield
    receipts.signing_key_cache_clear()


def lookup(client: object, *records: dict[str, str]) -> dict[str, object]:
    response = client.post(  # type: ignore[attr-defined]
        "/api/v1/lookup", {"use": "ai_training", "records": list(records)}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


def decisions(body: dict[str, object]) -> dict[str, str]:
    return {r["id"]: r["decision"] for r in body["results"]}  # type: ignore[attr-defined,index]


def test_withdrawal_and_new_opt_out_show_in_lookups_and_feed_and_old_receipts_still_verify(
    client: Client,
) -> None:
    creator = CreatorFactory()
    withdrawn_photo = PhotoFactory(creator=creator)
    later_photo = PhotoFactory(creator=CreatorFactory())
    first = opt_out_file(
        creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    api = pipeline_client(OrganizationFactory(name="Lab"))
    records = [
        {"id": "withdrawn", "sha256": withdrawn_photo.sha256},
        {"id": "later", "sha256": later_photo.sha256},
    ]

    # A batch checked at version V1 excludes the first photo and is signed.
    response = submit(api, jsonl(records), key="before-withdrawal")
    assert response.status_code == 202, response.content
    batch = Batch.objects.get(public_id=response.json()["id"])
    for chunk_id in Chunk.objects.filter(batch=batch).values_list("pk", flat=True):
        batch_chunk_decide_task(chunk_id)
    done = api.get(f"/api/v1/batches/{batch.public_id}").json()
    assert done["status"] == "done"
    receipt = done["receipt"]
    version_checked = receipt["statement"]["registry_version"]
    assert receipt["statement"]["excluded_count"] == 1
    before = lookup(api, *records)
    assert decisions(before) == {"withdrawn": "exclude", "later": "allow"}

    # The creator withdraws: the next lookup allows, at a newer version.
    opt_out_withdraw(creator=creator, opt_out_id=first.public_id, channel=Channel.WEB)
    after_withdrawal = lookup(api, *records)
    assert decisions(after_withdrawal) == {"withdrawn": "allow", "later": "allow"}
    assert after_withdrawal["registry_version"] > version_checked  # type: ignore[operator]

    # A new opt-out over the other photo excludes from the next lookup on.
    second = opt_out_file(
        creator=later_photo.creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    after_filing = lookup(api, *records)
    assert decisions(after_filing) == {"withdrawn": "allow", "later": "exclude"}
    assert after_filing["registry_version"] > after_withdrawal["registry_version"]  # type: ignore[operator]
    [match] = after_filing["results"][1]["matches"]  # type: ignore[index]
    assert match["opt_out"] == str(second.public_id)

    # The change feed since the batch's version lists both, in order.
    feed = api.get(f"/api/v1/changes?since={version_checked}").json()
    kinds = [(item["kind"], item["opt_out"]) for item in feed["results"]]
    assert kinds == [
        ("opt_out_withdrawn", str(first.public_id)),
        ("opt_out_filed", str(second.public_id)),
    ]
    assert withdrawn_photo.sha256 in json.dumps(feed["results"][0])
    assert later_photo.sha256 in json.dumps(feed["results"][1])

    # The earlier receipt is unchanged, verifies, and names the version it saw.
    again = api.get(f"/api/v1/batches/{batch.public_id}").json()["receipt"]
    assert again == receipt
    published = client.get("/api/v1/receipts/public-key").json()
    receipts.receipt_verify(receipt, published["public_key_pem"])
    assert receipt["statement"]["registry_version"] == version_checked
    assert version_checked < after_withdrawal["registry_version"]  # type: ignore[operator]


def test_a_change_applies_from_its_version_while_a_batch_fixed_before_it_keeps_the_old_one(
    client: Client, settings: Settings
) -> None:
    settings.OPTOUT_CHUNK_RECORDS = 1
    creator = CreatorFactory()
    photo_a, photo_b = PhotoFactory(creator=creator), PhotoFactory(creator=creator)
    old = opt_out_file(
        creator=creator,
        uses=["ai_training"],
        scope="photos",
        photos=[photo_a.public_id],
        channel=Channel.WEB,
    )
    api = pipeline_client(OrganizationFactory(name="Lab"))
    records = [{"id": "b", "sha256": photo_b.sha256}, {"id": "a", "sha256": photo_a.sha256}]
    assert decisions(lookup(api, *records)) == {"a": "exclude", "b": "allow"}

    # A batch starts (its first chunk fixes its registry version) before the change...
    response = submit(api, jsonl(records), key="before-change")
    assert response.status_code == 202, response.content
    batch = Batch.objects.get(public_id=response.json()["id"])
    first_chunk, second_chunk = Chunk.objects.filter(batch=batch).order_by("index")
    batch_chunk_decide_task(first_chunk.pk)
    batch.refresh_from_db()
    version_fixed = batch.registry_version
    assert version_fixed is not None

    # ...the creator changes the opt-out from photo A to photo B...
    new = opt_out_change(
        creator=creator,
        public_id=old.public_id,
        uses=["ai_training"],
        scope="photos",
        photos=[photo_b.public_id],
        channel=Channel.WEB,
    )
    v = new.filed_version
    assert v > version_fixed

    # ...lookups from then on apply the new opt-out only, and name version v...
    after = lookup(api, *records)
    assert decisions(after) == {"a": "allow", "b": "exclude"}
    assert after["registry_version"] == v
    [match] = after["results"][0]["matches"]  # type: ignore[index]
    assert match["opt_out"] == str(new.public_id)

    # ...while the batch's remaining chunk, decided after the change, is decided
    # as of the version fixed before it: the old opt-out excludes photo A.
    batch_chunk_decide_task(second_chunk.pk)
    done = api.get(f"/api/v1/batches/{batch.public_id}").json()
    assert done["status"] == "done"
    statement = done["receipt"]["statement"]
    assert (statement["registry_version"], statement["excluded_count"]) == (version_fixed, 1)
    excluded = BatchResult.objects.filter(batch=batch, decision="exclude")
    assert [(r.record_id, r.matches[0]["opt_out"]) for r in excluded] == [("a", str(old.public_id))]
    published = client.get("/api/v1/receipts/public-key").json()
    receipts.receipt_verify(done["receipt"], published["public_key_pem"])
