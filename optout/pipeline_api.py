"""Pipeline REST API, synchronous part: lookup, change feed, and the
Spawning-compatible URL query.

Authentication is an organization API key (optout.pipeline_auth) with the
``lookup`` scope; every view has its own per-key quota (optout.throttles).
Responses never name a creator, a photo or a claim: only opt-out ids, uses,
hashes and claim values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, parsers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from config.api import PayloadTooLarge, pipeline_error_responses, query_params_once
from config.parsers import JSONParser, body_encoding, has_unpaired_surrogate
from optout import changes, lookup
from optout.pipeline_auth import ApiKeyAuthentication, HasLookupScope, pipeline_client
from optout.pipeline_serializers import (
    ChangesPageSerializer,
    ChangesQuerySerializer,
    LookupRequestSerializer,
    LookupResponseSerializer,
    UrlQueryResponseSerializer,
)
from optout.throttles import ApiKeyRateThrottle
from registry.claims import MAX_URL_LENGTH

TAGS = ["pipelines"]


class PipelineView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasLookupScope]
    throttle_classes = [ApiKeyRateThrottle]


class LookupView(PipelineView):
    throttle_scope = "lookup"
    parser_classes = [JSONParser]

    @extend_schema(
        tags=TAGS,
        summary="Check up to 10 000 records now",
        description=(
            "Decides every record against the newest registry version for the key's "
            "organization (its exceptions are honoured). A malformed record is `invalid` "
            "with a reason and its `row`; the others are still decided. Results keep the "
            "order of `records`, each with its `id` exactly as sent. A key of the body or "
            "of `thresholds` that is not listed is a 400 naming it; a record key that "
            "misspells a field (`SHA256`, `pdq-quality`, `color`) makes that record "
            "`invalid`, and other keys of a record are ignored."
        ),
        request=LookupRequestSerializer,
        responses={
            200: LookupResponseSerializer,
            **pipeline_error_responses(400, 401, 403, 405, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = LookupRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = lookup.lookup_run(key=pipeline_client(request).key, **serializer.validated_data)
        return Response(outcome.as_dict())


class ChangesView(PipelineView):
    throttle_scope = "changes"

    @extend_schema(
        tags=TAGS,
        summary="What changed since a registry version",
        description=(
            "Opt-outs filed and withdrawn, and photos that fell under an `all_photos` "
            "opt-out, after registry version `since`, oldest first, with the hashes and "
            "claims they affect (never who filed them). Follow `next` until it is null, then "
            "keep `registry_version` as the next `since`. A page holds at most `limit` "
            "changes and 10 000 hashes; a change over more hashes is split into parts with "
            "the same `registry_version` (`hashes_complete` is false on all but the last)."
        ),
        parameters=[ChangesQuerySerializer],
        responses={
            200: ChangesPageSerializer,
            **pipeline_error_responses(400, 401, 403, 405, 429),
        },
    )
    def get(self, request: Request) -> Response:
        names = ChangesQuerySerializer().fields
        query = ChangesQuerySerializer(data=query_params_once(request, names))
        query.is_valid(raise_exception=True)
        params = query.validated_data
        page = lookup.changes_list(
            key=pipeline_client(request).key,
            cursor=changes.ChangesCursor(params["since"], params.get("hashes_after", "")),
            limit=params["limit"],
        )
        return Response(
            {
                "registry_version": page.registry_version,
                "next": _next_url(request, page.next),
                "results": [change.as_dict() for change in page.changes],
            }
        )


def _next_url(request: Request, cursor: changes.ChangesCursor | None) -> str | None:
    if cursor is None:
        return None
    url = replace_query_param(request.build_absolute_uri(), "since", cursor.since)
    if cursor.hashes_after:
        return str(replace_query_param(url, "hashes_after", cursor.hashes_after))
    return str(remove_query_param(url, "hashes_after"))


# --- Spawning-compatible URL query ------------------------------------------------


_BOM = "\ufeff"
# A line ends with CR LF, LF or a lone CR (classic Mac OS, some exporters).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class PlainTextParser(parsers.BaseParser):
    """A ``text/plain`` body as a string (URLs, one per line).

    Reads at most what the largest allowed query can take (every URL at the
    maximum length), so an endless body is a 413, not memory. The body is
    decoded with its charset, which must be a character set (config.parsers),
    into valid Unicode; a byte order mark in front is dropped, as the manifest
    readers drop it, so that it does not become part of the first URL."""

    media_type = "text/plain"

    # DRF takes whatever a parser returns as request.data; here, the text.
    def parse(  # type: ignore[override]
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> str:
        encoding = body_encoding(parser_context)
        limit = settings.OPTOUT_MAX_QUERY_URLS * (MAX_URL_LENGTH + 2)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"Body is larger than {limit} bytes.")
        try:
            text = str(body.decode(encoding))
        except UnicodeError:
            raise exceptions.ParseError(f"The body is not valid {encoding} text.") from None
        if has_unpaired_surrogate(text):
            lines = _LINE_BREAK.split(text)
            number = next(n for n, line in enumerate(lines, 1) if has_unpaired_surrogate(line))
            raise exceptions.ParseError(
                f"Line {number} is not valid Unicode (an unpaired surrogate)."
            )
        return text.removeprefix(_BOM)


def _query_urls(request: Request) -> list[str]:
    """The URLs of the body as sent (line breaks and blank lines dropped; a line
    ends with CR LF, LF or CR)."""
    try:
        text = request.data
    except exceptions.UnsupportedMediaType:
        raise exceptions.UnsupportedMediaType(
            request.content_type,
            detail=(
                f"Send the URLs as text/plain, one per line (not {request.content_type or 'no'} "
                "content type)."
            ),
        ) from None
    lines: list[str] = _LINE_BREAK.split(text) if isinstance(text, str) else []
    urls = [line for line in lines if line.strip()]
    limit = settings.OPTOUT_MAX_QUERY_URLS
    if len(urls) > limit:
        raise PayloadTooLarge(f"{len(urls)} URLs; one query takes at most {limit}.")
    if not urls:
        raise exceptions.ValidationError({"urls": ["No URLs: send one URL per line."]})
    return urls


class BodyRequiredAutoSchema(AutoSchema):
    """drf-spectacular marks a request body given as a plain type optional; the
    URL query's body is the query itself."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation and "requestBody" in operation:
            operation["requestBody"]["required"] = True
        return operation


class UrlQueryView(PipelineView):
    throttle_scope = "urls"
    parser_classes = [PlainTextParser]
    schema = BodyRequiredAutoSchema()

    @extend_schema(
        tags=TAGS,
        summary="Spawning-compatible URL query",
        description=(
            "The request and answer of Spawning's `POST /api/v2/query/urls/`, so the "
            "`datadiligence` client works against this registry: a `text/plain` body of "
            f"up to {settings.OPTOUT_MAX_QUERY_URLS} URLs, one per line (LF, CR LF or CR; "
            "a byte order mark in front is ignored), "
            "`Authorization: API <key>` (or `Api-Key <key>`). `optOut` is true when a "
            "claimed domain or URL prefix refuses AI training (general or generative) and "
            "the key's organization holds no exception; a URL that cannot be parsed matches "
            "nothing and is `optOut: false`."
        ),
        # At least one line that is not blank (blank lines are skipped).
        request={"text/plain": {"type": "string", "pattern": r"\S"}},
        examples=[
            OpenApiExample(
                "Two URLs",
                value="https://example.com/a.jpg\nhttps://example.org/b.png\n",
                request_only=True,
                media_type="text/plain",
            )
        ],
        responses={
            200: UrlQueryResponseSerializer,
            **pipeline_error_responses(400, 401, 403, 405, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        urls = _query_urls(request)
        opted_out = lookup.urls_query(key=pipeline_client(request).key, urls=urls)
        return Response(
            {
                "urls": [
                    {"url": url, "optOut": out, "optIn": False}
                    for url, out in zip(urls, opted_out, strict=True)
                ]
            }
        )
