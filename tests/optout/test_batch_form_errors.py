"""The batch submission form and the batch routes refuse what they cannot read
with a 400 naming it, instead of reading something else: a field given twice
(QueryDict keeps the last: another use, one of two manifests dropped), an
unknown field (a misspelt threshold left the default, looser one), a blank
number (read as "not set"), a page or page size too long for int() (a 500).
And a batch id is a UUID in either case.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import resolve, reverse
from pytest_django.fixtures import Settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from config.api import form_data_once
from optout.models import Batch, Chunk, Organization
from optout.tasks import batch_chunk_decide_task
from tests.factories import OrganizationFactory
from tests.optout.batch_helpers import (
    batch_environment,
    download,
    jsonl,
    jsonl_rows,
    pipeline_client,
    submit,
)
from tests.optout.test_batches import registry_with_opt_outs

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ALLOWED = "manifest, use, format, pdq_threshold, phash_threshold, strictness"
# More digits than int() converts (sys.get_int_max_str_digits: 4300).
HUGE = "9" * 5000


@pytest.fixture(autouse=True)
def batch_settings(settings: Settings, tmp_path: Path) -> Iterator[None]:
    yield from batch_environment(settings, tmp_path)


@pytest.fixture
def organization() -> Organization:
    return OrganizationFactory(name="Lab A")


@pytest.fixture
def client(organization: Organization) -> APIClient:
    return pipeline_client(organization)


def manifest(name: str = "m.jsonl", content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content or jsonl([{"id": "a", "url": "https://a.org/"}]))


def post(client: APIClient, data: dict[str, Any], key: str = "key-1") -> Any:
    """A submission with ``data`` as the whole form; a list value is a field repeated."""
    return client.post("/api/v1/batches", data, format="multipart", HTTP_IDEMPOTENCY_KEY=key)


def run_chunks(batch: Batch) -> None:
    for chunk_id in (
        Chunk.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True)
    ):
        batch_chunk_decide_task(chunk_id)


# --- repeated fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("use", ["ai_training", "data_mining"]),
        ("use", ["ai_training", "ai_training"]),
        ("strictness", ["4", "0"]),
        ("pdq_threshold", ["0", "31"]),
        ("phash_threshold", ["0", "10"]),
        ("format", ["jsonl", "csv"]),
    ],
)
def test_a_form_field_given_twice_is_400_naming_it(
    client: APIClient, field: str, values: list[str]
) -> None:
    data: dict[str, Any] = {"manifest": manifest(), "use": "ai_training", field: values}

    response = post(client, data)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": "give this field once",
        "fields": {field: ["give this field once"]},
    }
    assert Batch.objects.count() == 0


def test_two_manifests_are_400_not_the_first_one_dropped(client: APIClient) -> None:
    first = manifest("a.jsonl", jsonl([{"id": "A1", "url": "https://a.org/"}]))
    second = manifest("b.jsonl", jsonl([{"id": "B1", "url": "https://b.org/"}]))

    response = post(client, {"manifest": [first, second], "use": "ai_training"})

    assert response.status_code == 400
    assert response.json()["fields"] == {"manifest": ["give this field once"]}
    assert Batch.objects.count() == 0


def test_a_use_given_twice_is_not_decided_for_the_last_one(client: APIClient) -> None:
    # The fuzzing case: a record refused for ai_training came back allowed,
    # decided for data_mining only.
    registry = registry_with_opt_outs()
    content = jsonl([{"id": "exact", "sha256": registry.photo.sha256}])

    twice = post(
        client, {"manifest": manifest(content=content), "use": ["ai_training", "data_mining"]}
    )
    once = post(client, {"manifest": manifest(content=content), "use": "ai_training"}, key="once")

    assert twice.status_code == 400
    assert twice.json()["fields"] == {"use": ["give this field once"]}
    assert once.status_code == 202
    batch = Batch.objects.get()
    run_chunks(batch)
    _status, body = download(client, f"/api/v1/batches/{batch.public_id}/exclusions")
    assert [row["id"] for row in jsonl_rows(body)] == ["exact"]


# --- unknown fields ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"pdq": "0"},
        {"strictness_level": "4"},
        {"thresholds": "0"},
        {"Use": "ai_training"},
        {"file": SimpleUploadedFile("x.jsonl", b'{"id": "x"}\n')},
    ],
)
def test_an_unknown_form_field_is_400_naming_it_and_the_allowed_ones(
    client: APIClient, extra: dict[str, Any]
) -> None:
    (name,) = extra
    message = f"unknown field; allowed: {ALLOWED}"

    response = post(client, {"manifest": manifest(), "use": "ai_training", **extra})

    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": message, "fields": {name: [message]}}
    assert Batch.objects.count() == 0


def test_every_repeated_and_unknown_field_is_named_at_once(client: APIClient) -> None:
    response = post(
        client,
        {
            "manifest": manifest(),
            "use": ["ai_training", "data_mining"],
            "pdq": "0",
            "strictness": ["1", "2"],
        },
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {
        "use": ["give this field once"],
        "pdq": [f"unknown field; allowed: {ALLOWED}"],
        "strictness": ["give this field once"],
    }


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"use": "ai_training", "pdq": 0}, exceptions.ValidationError),
        ([{"use": "ai_training"}], exceptions.ParseError),
        (5, exceptions.ParseError),
    ],
)
def test_form_data_once_refuses_what_is_not_a_form_of_known_fields(
    body: object, error: type[exceptions.APIException]
) -> None:
    # Through a parser that is not a form's, a body is a plain dict or not a
    # mapping at all: the helper still names the unknown field or refuses it.
    request = Request(APIRequestFactory().post("/", body, format="json"), parsers=[JSONParser()])

    with pytest.raises(error):
        form_data_once(request, ["use"])


def test_the_schema_closes_the_submission_form(client: APIClient) -> None:
    schema = client.get("/api/schema/?format=json").json()

    form = schema["components"]["schemas"]["BatchSubmitRequest"]

    assert form["additionalProperties"] is False
    assert ", ".join(form["properties"]) == ALLOWED


# --- blank numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["strictness", "pdq_threshold", "phash_threshold"])
def test_a_blank_threshold_or_strictness_is_400_not_the_default(
    client: APIClient, field: str
) -> None:
    # As `?since=` is a 400 elsewhere: a blank number is not "not set".
    response = submit(client, jsonl([{"id": "a", "url": "https://a.org/"}]), **{field: ""})

    assert response.status_code == 400
    assert response.json()["fields"] == {field: ["A valid integer is required."]}
    assert Batch.objects.count() == 0


def test_a_blank_format_still_means_detect_it(client: APIClient) -> None:
    # `format` allows blank (documented): only the numbers changed.
    response = submit(client, jsonl([{"id": "a", "url": "https://a.org/"}]), format="")

    assert response.status_code == 202
    assert Batch.objects.get().format == "jsonl"


# --- pages ------------------------------------------------------------------------------


def test_a_page_size_too_long_for_int_is_the_usual_400(client: APIClient) -> None:
    message = "an integer from 1 to 1000"

    response = client.get(f"/api/v1/batches?page_size={HUGE}")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"page_size": [message]},
    }


def test_a_page_too_long_for_int_is_past_the_last_page(client: APIClient) -> None:
    # Like ?page=9 of a list with fewer pages (tests/registry/test_api.py): the
    # number is a page number, only no such page exists.
    response = client.get(f"/api/v1/batches?page={HUGE}")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Invalid page."}


def test_leading_zeros_do_not_make_a_page_or_page_size_unreadable(client: APIClient) -> None:
    submit(client, jsonl([{"id": "a", "url": "https://a.org/"}]))

    response = client.get(f"/api/v1/batches?page={'0' * 5000}1&page_size={'0' * 5000}1")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


# --- batch ids in uppercase ------------------------------------------------------------


def test_a_batch_route_takes_either_case_and_writes_lowercase() -> None:
    public_id = uuid.uuid4()

    for written in (str(public_id).upper(), str(public_id), str(public_id).title()):
        assert resolve(f"/api/v1/batches/{written}").kwargs == {"id": public_id}
        assert resolve(f"/api/v1/batches/{written}/exclusions").kwargs == {"id": public_id}
    assert reverse("api-batch", kwargs={"id": public_id}) == f"/api/v1/batches/{public_id}"


def test_a_batch_and_its_exclusions_are_found_by_an_uppercase_id(client: APIClient) -> None:
    registry = registry_with_opt_outs()
    accepted = submit(client, jsonl([{"id": "exact", "sha256": registry.photo.sha256}]))
    batch = Batch.objects.get()
    upper = str(batch.public_id).upper()

    not_done = client.get(f"/api/v1/batches/{upper}/exclusions")
    run_chunks(batch)
    detail = client.get(f"/api/v1/batches/{upper}")
    status, body = download(client, f"/api/v1/batches/{upper}/exclusions")

    assert accepted.status_code == 202
    assert not_done.status_code == 409
    assert detail.status_code == 200
    assert detail.json()["id"] == str(batch.public_id)
    assert detail.json()["url"] == f"http://testserver/api/v1/batches/{batch.public_id}"
    assert (status, [row["id"] for row in jsonl_rows(body)]) == (200, ["exact"])


def test_another_organizations_batch_is_404_in_uppercase_too(client: APIClient) -> None:
    other = pipeline_client(OrganizationFactory(name="Lab B"))
    submit(other, jsonl([{"id": "a", "url": "https://a.org/"}]))
    upper = str(Batch.objects.get().public_id).upper()

    assert client.get(f"/api/v1/batches/{upper}").status_code == 404
    assert client.get(f"/api/v1/batches/{upper}/exclusions").status_code == 404


def test_the_schema_documents_the_batch_id_as_a_uuid(
    client: APIClient,
) -> None:
    paths = client.get("/api/schema/?format=json").json()["paths"]

    for route in ("/api/v1/batches/{id}", "/api/v1/batches/{id}/exclusions"):
        (parameter,) = (p for p in paths[route]["get"]["parameters"] if p["name"] == "id")
        assert parameter["schema"] == {"type": "string", "format": "uuid"}
