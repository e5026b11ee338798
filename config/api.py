"""DRF glue: one JSON error shape for every failure, pagination, a bounded
multipart parser, closed request bodies and the schema pieces every view shares.

Every error body is ``{"error": <code>, "detail": <message>, "fields": {...}}``
(``fields`` only for validation errors), whatever raised it: DRF, Django's
ValidationError, an oversized request body, or an unexpected exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import (
    ObjectDoesNotExist,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.datastructures import MultiValueDict
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.plumbing import build_bearer_security_scheme_object, get_doc
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from config.messages import LISTED_MAX, unknown_field_message

if TYPE_CHECKING:
    # drf_spectacular.openapi imports rest_framework.generics, which imports this
    # module (DEFAULT_PAGINATION_CLASS): a runtime import would be circular.
    from drf_spectacular.openapi import AutoSchema

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    """The request is well-formed but asks for more than one request may do."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request is larger than the limit."
    default_code = "too_large"


def error_body(code: str, detail: Any, fields: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def _django_validation_fields(error: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in error.message_dict.items()}
    return {"non_field_errors": [str(m) for m in error.messages]}


def _too_large(code: str, detail: str) -> Response:
    return Response(error_body(code, detail), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        fields = _django_validation_fields(exc)
        first = next(iter(fields.values()))[0]
        return Response(error_body("invalid", first, fields), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _too_large("too_large", f"Request body is larger than the limit of {limit} bytes.")
    if isinstance(exc, TooManyFieldsSent):
        return _too_large("too_many_fields", str(exc))
    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return _too_large("too_many_files", f"More than {limit} files in one request.")
    if isinstance(exc, SuspiciousOperation):
        # Django's own verdict on malformed input (bad multipart boundaries,
        # header injection): the client's fault, never a 500.
        return Response(error_body("bad_request", str(exc)), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        # A service's Model.DoesNotExist is the same answer as a missing URL:
        # another owner's object is reported exactly like one that does not exist.
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "Internal error; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        first = _first_message(fields)
        response.data = error_body("invalid", first, fields)
    else:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        response.data = error_body(str(exc.default_code), detail)
    return response


def _first_message(value: Any) -> str:
    while isinstance(value, dict | list) and value:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return str(value)


def query_params_once(request: Request, names: Iterable[str]) -> dict[str, str]:
    """The query parameters ``names`` as one string each, as sent.

    A name given twice is a 400 (QueryDict would silently keep the last value),
    and a blank value stays a value: a serializer given this plain dict refuses
    ``?since=`` instead of reading it as "not set", as it does with a QueryDict.
    """
    wanted = set(names)
    query = request.query_params
    repeated = sorted(name for name in wanted if len(query.getlist(name)) > 1)
    if repeated:
        raise exceptions.ValidationError({name: ["give this parameter once"] for name in repeated})
    return {name: query[name] for name in wanted if name in query}


def form_data_once(request: Request, names: Iterable[str]) -> dict[str, Any]:
    """The fields and files of a form, ``names`` only, one value each, as sent.

    A name given twice is a 400 (QueryDict would silently keep the last value:
    another use than the first, one of two files dropped), and so is a name not
    in ``names``, with the accepted ones listed (a misspelt optional field would
    otherwise be ignored and its default used). A blank value stays a value, as
    in query_params_once: ``strictness=`` is refused, not read as "not set".
    """
    accepted = list(names)
    data = request.data
    if not isinstance(data, Mapping):
        raise exceptions.ParseError("Expected a form of named fields.")
    values: dict[str, list[Any]] = {
        name: data.getlist(name) if isinstance(data, MultiValueDict) else [data[name]]
        for name in data
    }
    problems: dict[str, list[str]] = {}
    for name, given in values.items():
        if name not in accepted:
            problems[name] = [f"unknown field; allowed: {', '.join(accepted)}"]
        elif len(given) > 1:
            problems[name] = ["give this field once"]
    if problems:
        raise exceptions.ValidationError(problems)
    return {name: given[0] for name, given in values.items()}


# --- closed request bodies ----------------------------------------------------------


class ClosedSerializer(serializers.Serializer):
    """Refuses keys it does not declare, with a 400 naming each: a misspelt or
    misplaced option (``thresholds.pdq_threshold``, a top-level ``strictness``,
    an opt-out's ``exception``) would otherwise be dropped and the request
    carried out other than asked. Its request schema says so
    (``additionalProperties: false``, ClosedSerializerScheme)."""

    # Spellings (field_spelling) of keys that belong elsewhere: what to say instead.
    misplaced: Mapping[str, str] = {}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [str(key) for key in data if key not in self.fields]
            if unknown:
                errors: dict[str, list[str]] = {
                    key: [self._unknown_message(key)] for key in unknown[:LISTED_MAX]
                }
                if len(unknown) > LISTED_MAX:
                    more = len(unknown) - LISTED_MAX
                    errors[api_settings.NON_FIELD_ERRORS_KEY] = [
                        f"… and {more} more keys that are not fields."
                    ]
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def _unknown_message(self, key: str) -> str:
        return unknown_field_message(key, self.fields.keys(), self.misplaced)


class ClosedSerializerScheme(OpenApiSerializerExtension):
    """Documents ClosedSerializer requests as closed objects; registered on import."""

    target_class = ClosedSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if schema.get("description") == get_doc(ClosedSerializer):
            # A serializer without a docstring of its own: the one above is not
            # the request's description.
            del schema["description"]
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class CappedErrorsListField(serializers.ListField):
    """A ListField whose error names the first LISTED_MAX bad items (by
    position, as DRF does) and counts the others: 30 000 malformed ids are a
    400 of a few lines, not of a megabyte."""

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        try:
            return super().run_child_validation(data)  # type: ignore[no-any-return]
        except serializers.ValidationError as error:
            detail = error.detail
            if not isinstance(detail, dict) or len(detail) <= LISTED_MAX:
                raise
            capped: dict[Any, Any] = dict(islice(detail.items(), LISTED_MAX))
            capped["more"] = [f"… and {len(detail) - LISTED_MAX} more invalid items."]
            raise serializers.ValidationError(capped) from None


_DIGITS = re.compile(r"[0-9]+")
# Digits (leading zeros aside) beyond which a number is past every page and
# page size all the same. int() refuses a string of more than 4300 digits
# (sys.get_int_max_str_digits) with a ValueError, which would be a 500.
_MAX_DIGITS = 18


def _whole_number(raw: str) -> int | None:
    """``raw`` as a whole number if it is decimal digits alone, else None; one
    of more than _MAX_DIGITS digits reads as 10**_MAX_DIGITS."""
    if not _DIGITS.fullmatch(raw):
        return None
    digits = raw.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


class Pagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    # A page larger than this costs more than a second request.
    max_page_size = 1000
    # Only numbers: "last" would be one more undocumented spelling of a page.
    last_page_strings = ()

    def get_page_size(self, request: Request) -> int:
        # DRF silently ignores a page_size it cannot read and clamps one above
        # the maximum; a client asking for the wrong thing learns it here.
        params = query_params_once(request, [self.page_query_param, self.page_size_query_param])
        raw = params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = _whole_number(raw)
        if size is None or not 1 <= size <= self.max_page_size:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"an integer from 1 to {self.max_page_size}"]}
            )
        return size

    def get_page_number(self, request: Request, paginator: Any) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        number = _whole_number(raw)
        if number is None or number < 1:
            raise exceptions.ValidationError(
                {self.page_query_param: ["a page number: an integer from 1"]}
            )
        # Past the last page (however far) the paginator raises InvalidPage: a 404.
        return number

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        bounds = {
            self.page_query_param: {"minimum": 1},
            self.page_size_query_param: {"minimum": 1, "maximum": self.max_page_size},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


class BoundedMultiPartParser(parsers.MultiPartParser):
    """Multipart whose whole body, files included, is capped at
    DATA_UPLOAD_MAX_MEMORY_SIZE.

    Django applies that setting to form fields only. Files go to the in-memory
    upload handler (the only one: photo bytes never touch a temp file), and that
    handler silently *drops* a file when the request exceeds
    FILE_UPLOAD_MAX_MEMORY_SIZE. Refusing the request up front turns what would
    be lost files into a clear 413.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> parsers.DataAndFiles:
        request = (parser_context or {})["request"]
        meta = request.META
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limits = [settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.FILE_UPLOAD_MAX_MEMORY_SIZE]
        if any(limit is not None and length > limit for limit in limits):
            raise RequestDataTooBig("Request body exceeded DATA_UPLOAD_MAX_MEMORY_SIZE.")
        return super().parse(stream, media_type, parser_context)  # type: ignore[return-value]


# --- OpenAPI ---------------------------------------------------------------


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Token <token>`` (registry.auth); registered on import."""

    target_class = "registry.auth.PersonalTokenAuthentication"
    name = "personalToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        definition: dict[str, Any] = build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix="Token",  # noqa: S106 - the scheme's keyword, not a secret
        )
        return definition


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents organization API keys (optout.pipeline_auth); registered on import."""

    target_class = "optout.pipeline_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Api-Key <key>` (an organization API key; `python manage.py create_api_key`). "
                "`API <key>`, the scheme of Spawning's API, is accepted too."
            ),
        }


class ItemsCheckedOneByOne:
    """A list field whose items are checked one at a time, so that a bad item
    gets its own error in the response while the others go through.

    The request as a whole accepts any item, and its schema says so: an item is
    documented as ``item_serializer`` (what to send) *or* anything else (which
    comes back as that item's error), not as a shape whose violation would be
    refused (ItemsCheckedOneByOneScheme)."""

    item_serializer: type[serializers.Serializer]
    other_items: str = "Anything else comes back as this item's error; the others go through."
    min_items: int = 0


class ItemsCheckedOneByOneScheme(OpenApiSerializerFieldExtension):
    """Documents ItemsCheckedOneByOne fields; registered on import."""

    target_class = "config.api.ItemsCheckedOneByOne"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        field = self.target
        item = auto_schema.resolve_serializer(field.item_serializer, direction)
        schema: dict[str, Any] = {
            "type": "array",
            "items": {"anyOf": [item.ref, {"description": field.other_items}]},
        }
        if field.min_items:
            schema["minItems"] = field.min_items
        return schema


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    error = serializers.CharField(help_text="Machine-readable code, e.g. `invalid`, `not_found`.")
    detail = serializers.CharField(help_text="What is wrong, in words.")
    # DRF's metaclass moves declared fields out of the class namespace, so this
    # does not shadow Serializer.fields at run time; mypy cannot know that.
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text="Validation errors by field name (only for `invalid`).",
    )


_ERROR_DESCRIPTIONS = {
    400: "Invalid input; `fields` names each problem.",
    401: "No credentials, or an invalid or revoked token (`WWW-Authenticate: Token`).",
    403: "Authenticated, but not a confirmed, active creator.",
    404: "No such object for this account (or no such page of a list).",
    405: "Method not allowed.",
    413: "Request body or item count above the limit.",
    415: "Unsupported Content-Type.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error statuses a view can return."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in codes
    }


_PIPELINE_ERROR_DESCRIPTIONS = {
    **_ERROR_DESCRIPTIONS,
    401: "No API key, or an invalid, revoked or expired one (`WWW-Authenticate: Api-Key`).",
    403: "The key lacks the scope this operation needs, or its organization is suspended.",
    429: "Over the key's request quota; the `Retry-After` header says when to try again.",
}


def pipeline_error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error statuses of an API-key (pipeline) view."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=_PIPELINE_ERROR_DESCRIPTIONS[code])
        for code in codes
    }


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    # Django's verdict before any view ran (a Host header not in ALLOWED_HOSTS,
    # another SuspiciousOperation): its message names what was wrong in the
    # log, not here, as Django's own 400 page does.
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_permission_denied(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse(
        error_body("permission_denied", "You do not have permission to perform this action."),
        status=403,
    )


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        error_body("server_error", "Internal error; it has been logged."), status=500
    )
