"""The Spawning-compatible URL query, POST /api/v2/query/urls/: the real
`datadiligence` client against a live server, and the endpoint's edge cases."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import datadiligence as dd
import pytest
from datadiligence.rules.spawning import SpawningAPI
from django.test import override_settings
from rest_framework.test import APIClient

from optout import services
from optout.models import OptOut, Organization, PipelineRequest
from registry import services as registry_services
from registry.ledger import registry_version_current
from registry.models import Channel, Creator
from tests.factories import CreatorFactory, OrganizationFactory

pytestmark = pytest.mark.postgres

ALLOWED_URLS = [
    "https://example.org/free.jpg",
    # Only refuses data mining: no training opt-out.
    "https://mining.example/cat.jpg",
    # Refused, but this organization holds an exception.
    "https://friends.example/dog.jpg",
    # Same host, outside the claimed prefix.
    "https://photos.example.net/carol/1.jpg",
    # Cannot be parsed: matches nothing.
    "not a url",
    "ftp://bob.example/x.jpg",
]
OPTED_OUT_URLS = [
    "https://bob.example/x.jpg",
    "https://cdn.bob.example/deep/path.png?size=large",
    "https://photos.example.net/bob/1.jpg",
    # Refuses generative training only: still "do not train".
    "https://gen.example/a.webp",
]


@dataclass
class World:
    organization: Organization
    raw_key: str


def claims_opt_out(
    creator: Creator, uses: list[str], *claims: tuple[str, str], **kwargs: object
) -> OptOut:
    ids = [
        registry_services.claim_add(creator=creator, kind=kind, value=value, channel=Channel.WEB)[
            0
        ].public_id
        for kind, value in claims
    ]
    return services.opt_out_file(
        creator=creator, uses=uses, scope="claims", claims=ids, channel=Channel.WEB, **kwargs
    )


def build_world() -> World:
    organization = OrganizationFactory(name="Acme Vision")
    bob = CreatorFactory()
    claims_opt_out(
        bob,
        ["ai_training"],
        ("domain", "bob.example"),
        ("url_prefix", "https://photos.example.net/bob/"),
    )
    claims_opt_out(CreatorFactory(), ["ai_generative_training"], ("domain", "gen.example"))
    claims_opt_out(CreatorFactory(), ["data_mining"], ("domain", "mining.example"))
    claims_opt_out(
        CreatorFactory(),
        ["ai_training"],
        ("domain", "friends.example"),
        exceptions=[organization.public_id],
    )
    _, raw = services.api_key_create(organization=organization, name="datadiligence")
    return World(organization, raw)


def query(api: APIClient, body: str | bytes, content_type: str = "text/plain") -> object:
    return api.post("/api/v2/query/urls/", body, content_type=content_type)


def client(raw: str, scheme: str = "API") -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{scheme} {raw}")
    return api


# --- the real datadiligence client -----------------------------------------------


@pytest.fixture
def spawning_client(
    live_server: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, str]]:
    """datadiligence pointed at the live server, with a fresh key in its env variable."""
    world = build_world()
    monkeypatch.setenv(SpawningAPI.API_KEY_ENV_VAR, world.raw_key)
    url = f"{live_server.url}/api/v2/query/urls/"  # type: ignore[attr-defined]
    monkeypatch.setattr(SpawningAPI, "SPAWNING_AI_API_URL", url)
    # The default evaluators read the key from the environment when created.
    dd.load_defaults()
    yield world, url
    os.environ.pop(SpawningAPI.API_KEY_ENV_VAR, None)
    dd.load_defaults()


@pytest.mark.django_db(transaction=True)
def test_datadiligence_filters_out_exactly_the_opted_out_urls(
    spawning_client: tuple[World, str],
) -> None:
    world, _ = spawning_client
    # Opted-out and allowed URLs interleaved, so the order is tested too.
    pairs = zip(OPTED_OUT_URLS, ALLOWED_URLS[:4], strict=True)
    urls = [url for pair in pairs for url in pair] + ALLOWED_URLS[4:]

    allowed = dd.filter_allowed(urls=urls)
    verdicts = dd.is_allowed(urls=urls)

    assert allowed == [url for url in urls if url in ALLOWED_URLS]
    assert verdicts == [url in ALLOWED_URLS for url in urls]
    audit = list(PipelineRequest.objects.order_by("id").values_list("endpoint", "record_count"))
    assert audit == [("urls", len(urls)), ("urls", len(urls))]
    assert (
        PipelineRequest.objects.filter(
            organization=world.organization, excluded_count=len(OPTED_OUT_URLS)
        ).count()
        == 2
    )


@pytest.mark.django_db(transaction=True)
def test_datadiligence_sees_a_withdrawal_on_its_next_query(
    spawning_client: tuple[World, str],
) -> None:
    rule = SpawningAPI()
    url = "https://bob.example/x.jpg"
    before = rule.is_allowed(urls=[url])
    version_before = registry_version_current()
    opt_out = OptOut.objects.get(claims__value="bob.example")

    withdrawn = services.opt_out_withdraw(
        creator=opt_out.creator, opt_out_id=opt_out.public_id, channel=Channel.WEB
    )
    after = rule.is_allowed(urls=[url])

    assert (before, after) == ([False], [True])
    versions = list(
        PipelineRequest.objects.order_by("id").values_list("registry_version", flat=True)
    )
    assert withdrawn.withdrawn_version is not None
    assert versions == [version_before, withdrawn.withdrawn_version]
    assert version_before < withdrawn.withdrawn_version


# --- the endpoint itself ----------------------------------------------------------


@pytest.mark.django_db
def test_urls_are_answered_in_order_as_sent_skipping_blank_lines() -> None:
    world = build_world()
    body = (
        "https://bob.example/x.jpg\r\n\r\n  \nhttps://example.org/free.jpg\r\n"
        "https://photos.example.net/bob/1.jpg\n"
    )

    response = query(client(world.raw_key), body)

    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "urls": [
            {"url": "https://bob.example/x.jpg", "optOut": True, "optIn": False},
            {"url": "https://example.org/free.jpg", "optOut": False, "optIn": False},
            {"url": "https://photos.example.net/bob/1.jpg", "optOut": True, "optIn": False},
        ]
    }
    audit = PipelineRequest.objects.get()
    assert (audit.endpoint, audit.use, audit.record_count, audit.excluded_count) == (
        "urls",
        "ai_generative_training",
        3,
        2,
    )
    assert audit.registry_version == registry_version_current()


@pytest.mark.django_db
def test_one_url_and_the_api_key_scheme_work_too() -> None:
    world = build_world()

    response = query(client(world.raw_key, scheme="Api-Key"), "https://gen.example/a.webp")

    assert response.json() == {  # type: ignore[attr-defined]
        "urls": [{"url": "https://gen.example/a.webp", "optOut": True, "optIn": False}]
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "https://",
        "https://exa mple.com/x",
        "https://bob.example:99999/x",
        "https://" + "a" * 3000 + ".example/x",
        "\x00\x01",
        "https://bücher.example/ä.jpg",
    ],
)
def test_an_unparsable_or_odd_url_is_not_opted_out_and_never_a_500(url: str) -> None:
    world = build_world()

    response = query(client(world.raw_key), f"{url}\nhttps://bob.example/y.jpg")

    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.json()["urls"] == [  # type: ignore[attr-defined]
        {"url": url, "optOut": False, "optIn": False},
        {"url": "https://bob.example/y.jpg", "optOut": True, "optIn": False},
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["", "\n\r\n  \n"])
def test_no_urls_is_a_400(body: str) -> None:
    world = build_world()

    response = query(client(world.raw_key), body)

    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "error": "invalid",
        "detail": "No URLs: send one URL per line.",
        "fields": {"urls": ["No URLs: send one URL per line."]},
    }
    assert PipelineRequest.objects.count() == 0


@pytest.mark.django_db
def test_the_schema_requires_a_body_with_a_url_line_as_the_view_does() -> None:
    world = build_world()
    api = client(world.raw_key)
    schema = api.get("/api/schema/?format=json").json()  # type: ignore[attr-defined]
    body = schema["paths"]["/api/v2/query/urls/"]["post"]["requestBody"]
    pattern = body["content"]["text/plain"]["schema"]["pattern"]

    bodies = ["", "\n\r\n  \n", "https://bob.example/x.jpg", "\n  x\n"]
    statuses = [query(api, text).status_code for text in bodies]  # type: ignore[attr-defined]

    assert body["required"] is True
    assert [bool(re.search(pattern, text)) for text in bodies] == [False, False, True, True]
    assert statuses == [400, 400, 200, 200]


@pytest.mark.django_db
def test_more_urls_than_the_limit_is_a_413() -> None:
    world = build_world()
    body = "\n".join(f"https://example.org/{i}.jpg" for i in range(10_001))

    response = query(client(world.raw_key), body)

    assert response.status_code == 413  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "error": "too_large",
        "detail": "10001 URLs; one query takes at most 10000.",
    }
    assert PipelineRequest.objects.count() == 0


@pytest.mark.django_db
@override_settings(OPTOUT_MAX_QUERY_URLS=2)
def test_a_body_larger_than_any_allowed_query_is_a_413_before_it_is_read_whole() -> None:
    world = build_world()
    body = "https://example.org/" + "x" * 5_000

    response = query(client(world.raw_key), body)

    assert response.status_code == 413  # type: ignore[attr-defined]
    assert response.json()["detail"] == "Body is larger than 4100 bytes."  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_a_json_body_is_a_415_saying_to_send_text() -> None:
    world = build_world()

    response = client(world.raw_key).post(
        "/api/v2/query/urls/", {"urls": ["https://bob.example/x.jpg"]}, format="json"
    )

    assert response.status_code == 415
    assert response.json() == {
        "error": "unsupported_media_type",
        "detail": "Send the URLs as text/plain, one per line (not application/json content type).",
    }
    assert PipelineRequest.objects.count() == 0


@pytest.mark.django_db
def test_a_body_that_is_not_in_its_charset_is_a_400() -> None:
    world = build_world()

    response = query(
        client(world.raw_key), b"https://example.org/\xff\xfe", "text/plain; charset=utf-8"
    )

    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "error": "parse_error",
        "detail": "The body is not valid utf-8 text.",
    }


@pytest.mark.django_db
def test_a_latin1_body_is_read_in_its_charset() -> None:
    world = build_world()

    response = query(
        client(world.raw_key),
        "https://bob.example/café.jpg".encode("latin-1"),
        "text/plain; charset=latin-1",
    )

    assert response.json()["urls"] == [  # type: ignore[attr-defined]
        {"url": "https://bob.example/café.jpg", "optOut": True, "optIn": False}
    ]
