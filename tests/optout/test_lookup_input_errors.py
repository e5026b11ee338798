"""Bad input to the pipeline's synchronous endpoints (POST /api/v1/lookup,
POST /api/v2/query/urls/) and to every JSON body: a 400 naming what is wrong
before anything is decided or logged, never a 500, never a silently looser
decision (config/parsers.py, optout/pipeline_api.py, optout/lookup.py)."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLResolver, get_resolver
from rest_framework import exceptions, parsers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from config.parsers import MAX_JSON_DEPTH, JSONParser
from optout import services
from optout.models import OptOut, PipelineRequest
from registry import services as registry_services
from registry.models import Channel
from registry.uploads import HashLine
from tests.factories import CreatorFactory, OrganizationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SHA_A = "a" * 64
TOO_DEEP = (
    f"JSON parse error - nested too deeply (more than {MAX_JSON_DEPTH} levels of arrays "
    "and objects)."
)


@dataclass
class World:
    opt_photo: OptOut  # refuses ai_training for the photo of SHA_A
    opt_domain: OptOut  # refuses ai_training for optedout.example
    api: APIClient


@pytest.fixture
def world() -> World:
    alice = CreatorFactory()
    registry_services.photos_register_from_hashes(
        creator=alice, items=[(None, HashLine(sha256=SHA_A))], channel=Channel.WEB
    )
    opt_photo = services.opt_out_file(
        creator=alice, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    bob = CreatorFactory()
    domain, _ = registry_services.claim_add(
        creator=bob, kind="domain", value="optedout.example", channel=Channel.WEB
    )
    opt_domain = services.opt_out_file(
        creator=bob,
        uses=["ai_training"],
        scope="claims",
        claims=[domain.public_id],
        channel=Channel.WEB,
    )
    _, raw = services.api_key_create(
        organization=OrganizationFactory(), name="tests", scopes=("lookup",)
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return World(opt_photo, opt_domain, api)


def post_json(api: APIClient, body: str | bytes, charset: str = "") -> Response:
    content_type = f"application/json; charset={charset}" if charset else "application/json"
    response: Response = api.post("/api/v1/lookup", body, content_type=content_type)
    return response


def lookup(api: APIClient, body: dict[str, Any]) -> Response:
    response: Response = api.post("/api/v1/lookup", body, format="json")
    return response


def query(api: APIClient, body: str | bytes, charset: str = "") -> Response:
    content_type = f"text/plain; charset={charset}" if charset else "text/plain"
    response: Response = api.post("/api/v2/query/urls/", body, content_type=content_type)
    return response


def parse_error(detail: str) -> dict[str, str]:
    return {"error": "parse_error", "detail": detail}


# --- strings that are not valid Unicode ------------------------------------------------

SURROGATE = "not valid Unicode (an unpaired surrogate)"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            '{"use":"ai_training","records":[{"id":"\\ud800","url":"https://a.com/"}]}',
            "records[0].id",
        ),
        ('{"use":"\\ud800","records":[{"id":"r","url":"https://a.com/"}]}', "use"),
        (
            '{"use":"ai_training","records":[{"id":"r","url":"https://a.com/"},'
            '{"id":"s","url":"https://a.com/\\uDC80"}]}',
            "records[1].url",
        ),
        (
            '{"use":"ai_training","records":[{"id":"r","\\ud800":"x"}]}',
            "records[0], key '\\ud800'",
        ),
        ('{"use":"ai_training","records":[],"\\udfff":1}', "the body, key '\\udfff'"),
    ],
)
def test_an_unpaired_surrogate_is_a_400_naming_where_before_anything_is_logged(
    world: World, body: str, where: str
) -> None:
    response = post_json(world.api, body)

    assert response.status_code == 400
    assert response.json() == parse_error(f"JSON parse error - {where}: {SURROGATE}.")
    assert PipelineRequest.objects.count() == 0


def test_a_surrogate_pair_escaped_in_json_is_one_character_and_is_echoed(world: World) -> None:
    # The escapes of U+1F600 are a valid pair, not two lone surrogates.
    response = post_json(
        world.api,
        '{"use":"ai_training","records":[{"id":"\\ud83d\\ude00","url":"https://a.com/"}]}',
    )

    assert response.status_code == 200
    assert response.json()["results"] == [{"id": "\U0001f600", "decision": "allow", "matches": []}]


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        ("unicode_escape", b"https://a.com/\\ud800"),
        ("raw_unicode_escape", b"https://a.com/\\ud800"),
        ("utf-7", b"https://ok.example/\nhttps://a.com/+2AA-"),
    ],
)
def test_a_url_query_decoded_to_an_unpaired_surrogate_is_a_400(
    world: World, charset: str, body: bytes
) -> None:
    response = query(world.api, body, charset)

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert PipelineRequest.objects.count() == 0


def test_a_url_query_names_the_line_holding_the_surrogate(world: World) -> None:
    response = query(world.api, b"https://ok.example/\r\nhttps://a.com/+2AA-\n", "utf-7")

    assert response.json() == parse_error("Line 2 is not valid Unicode (an unpaired surrogate).")


# --- charsets that are not character sets ----------------------------------------------


@pytest.mark.parametrize(
    "charset", ["punycode", "undefined", "idna", "unicode_escape", "rot13", "base64", "zlib"]
)
def test_a_charset_that_is_not_a_character_set_is_a_400_on_both_endpoints(
    world: World, charset: str
) -> None:
    urls = query(world.api, b"https://a.com/\n", charset)
    records = post_json(
        world.api, b'{"use":"ai_training","records":[{"id":"x","url":"https://a.com/"}]}', charset
    )

    expected = parse_error(f"charset={charset} is not a character set; send UTF-8.")
    assert (urls.status_code, urls.json()) == (400, expected)
    assert (records.status_code, records.json()) == (400, expected)
    assert PipelineRequest.objects.count() == 0


def test_character_sets_other_than_utf8_still_work(world: World) -> None:
    body = '{"use":"ai_training","records":[{"id":"café","url":"https://optedout.example/"}]}'

    latin = post_json(world.api, body.encode("latin-1"), "latin-1")
    utf16 = query(world.api, "https://optedout.example/é\n".encode("utf-16"), "utf-16")

    assert [r["id"] for r in latin.json()["results"]] == ["café"]
    assert utf16.json()["urls"] == [
        {"url": "https://optedout.example/é", "optOut": True, "optIn": False}
    ]


# --- nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 1_000, 100_000])
def test_json_nested_too_deeply_is_a_400(world: World, depth: int) -> None:
    body = '{"use":"ai_training","records":' + "[" * depth + "]" * depth + "}"

    response = post_json(world.api, body)

    assert response.status_code == 400
    assert response.json() == parse_error(TOO_DEEP)
    assert PipelineRequest.objects.count() == 0


def test_a_value_nested_just_within_the_limit_is_decided_as_the_record_it_is(
    world: World,
) -> None:
    url = "[" * (MAX_JSON_DEPTH - 3) + "]" * (MAX_JSON_DEPTH - 3)  # body, records, record
    body = '{"use":"ai_training","records":[{"id":"r","url":' + url + "}]}"

    response = post_json(world.api, body)

    assert response.status_code == 200
    assert response.json()["results"][0]["decision"] == "invalid"


def test_a_number_too_long_for_python_is_a_400_saying_so(world: World) -> None:
    digits = sys.get_int_max_str_digits()
    record = f'{{"id": "a", "pdq_quality": {"9" * (digits + 1)}}}'

    response = post_json(world.api, f'{{"use": "ai_training", "records": [{record}]}}')

    assert response.status_code == 400
    assert response.json() == parse_error(
        f"JSON parse error - a number has more than {digits} digits."
    )


def test_the_projects_json_parser_is_the_default_parser() -> None:
    assert api_settings.DEFAULT_PARSER_CLASSES[0] is JSONParser


def _api_views(patterns: list[Any]) -> list[Any]:
    views = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            views += _api_views(pattern.url_patterns)
        elif hasattr(pattern.callback, "cls"):
            views.append(pattern.callback.cls)
    return views


def test_no_api_view_reads_json_with_drfs_own_parser() -> None:
    """A view naming its own parser_classes bypasses the default: each one that
    reads JSON must name the project's parser (a deep body would be a 500)."""
    views = _api_views(get_resolver().url_patterns)
    assert len(views) > 10
    for view in views:
        for parser in view().get_parsers():
            if isinstance(parser, parsers.JSONParser):
                assert isinstance(parser, JSONParser), view


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"kind": "domain", "value": "\\ud800.example"}', f"value: {SURROGATE}"),
        (b'{"kind": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", None),
    ],
)
def test_the_json_parser_refuses_what_would_break_any_view(body: bytes, detail: str | None) -> None:
    with pytest.raises(exceptions.ParseError) as refused:
        JSONParser().parse(io.BytesIO(body), "application/json", {"encoding": "utf-8"})

    expected = TOO_DEEP if detail is None else f"JSON parse error - {detail}."
    assert str(refused.value.detail) == expected


# --- the URL query's lines ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbfhttps://optedout.example/a.jpg\nhttps://ok.example/b.png\n",
        b"https://optedout.example/a.jpg\rhttps://ok.example/b.png\r",
        b"https://optedout.example/a.jpg\r\nhttps://ok.example/b.png",
        b"https://optedout.example/a.jpg\r\rhttps://ok.example/b.png\n\r\n",
    ],
    ids=["utf8-bom", "cr", "crlf", "blank-lines"],
)
def test_a_url_query_reads_one_url_per_line_whatever_the_line_ends_and_without_a_bom(
    world: World, body: bytes
) -> None:
    response = query(world.api, body)

    assert response.status_code == 200
    assert response.json()["urls"] == [
        {"url": "https://optedout.example/a.jpg", "optOut": True, "optIn": False},
        {"url": "https://ok.example/b.png", "optOut": False, "optIn": False},
    ]


# --- keys that are not fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"thresholds": {"pdq_threshold": 0}},
            {
                "thresholds": {
                    "pdq_threshold": ['"pdq_threshold" is not a field; did you mean "pdq"?']
                }
            },
        ),
        (
            {"thresholds": {"PDQ": 0}},
            {"thresholds": {"PDQ": ['"PDQ" is not a field; did you mean "pdq"?']}},
        ),
        (
            {"thresholds": {"bogus": 1}},
            {"thresholds": {"bogus": ['"bogus" is not a field; allowed: pdq, phash, strictness.']}},
        ),
        (
            {"strictness": 4},
            {"strictness": ['"strictness" is not a field; did you mean "thresholds.strictness"?']},
        ),
        (
            {"Use ": "ai_training"},
            {"Use ": ['"Use " is not a field; did you mean "use"?']},
        ),
        (
            {"callback": "https://example.org/"},
            {"callback": ['"callback" is not a field; allowed: use, records, thresholds.']},
        ),
    ],
)
def test_an_unknown_key_of_the_lookup_or_its_thresholds_is_a_400_naming_it(
    world: World, body: dict[str, Any], fields: dict[str, Any]
) -> None:
    response = lookup(
        world.api, {"use": "ai_training", "records": [{"id": "r", "sha256": SHA_A}], **body}
    )

    assert response.status_code == 400
    first = next(iter(fields.values()))
    first_message = next(iter(first.values()))[0] if isinstance(first, dict) else first[0]
    assert response.json() == {"error": "invalid", "detail": first_message, "fields": fields}
    assert PipelineRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("SHA256", "sha256"),
        ("sha-256", "sha256"),
        (" sha256", "sha256"),
        ("URL", "url"),
        ("pdqQuality", "pdq_quality"),
        ("color", "colour"),
        ("ID", "id"),
    ],
)
def test_a_record_key_misspelling_a_field_makes_the_record_invalid_and_not_allowed(
    world: World, key: str, field: str
) -> None:
    records = [
        {"id": "r", "url": "https://ok.example/", key: SHA_A},
        {"id": "s", "sha256": SHA_A},
    ]

    response = lookup(world.api, {"use": "ai_training", "records": records})

    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first == {
        "id": "r",
        "decision": "invalid",
        "reason": f'"{key}" is not a field; did you mean "{field}"?',
        "row": 0,
    }
    assert second["decision"] == "exclude"


def test_a_record_key_of_the_callers_own_is_ignored(world: World) -> None:
    records = [{"id": "r", "sha256": SHA_A, "caption": "a dog", "width": 640}]

    response = lookup(world.api, {"use": "ai_training", "records": records})

    assert response.json()["results"][0]["decision"] == "exclude"


def test_the_lookup_schema_closes_the_body_and_thresholds_but_not_records(world: World) -> None:
    schemas = world.api.get("/api/schema/?format=json").json()["components"]["schemas"]

    assert schemas["LookupRequestRequest"]["additionalProperties"] is False
    assert schemas["LookupThresholdsRequest"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["LookupRecordRequest"]


# --- ids ------------------------------------------------------------------------------


def test_ids_come_back_exactly_as_sent_whitespace_included(world: World) -> None:
    ids = [" lead", "trail ", "\tboth\n", "in side", "\u00a0nbsp"]
    records = [
        *({"id": record_id, "sha256": SHA_A} for record_id in ids),
        {"id": " bad", "sha256": "xyz"},
        {"id": "   ", "sha256": SHA_A},
    ]

    response = lookup(world.api, {"use": "ai_training", "records": records})

    results = response.json()["results"]
    assert [result["id"] for result in results] == [*ids, " bad", None]
    assert [result["decision"] for result in results] == ["exclude"] * 5 + ["invalid"] * 2
    assert results[-1]["reason"] == "id is required"
