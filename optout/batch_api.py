"""Pipeline REST API for batches: submit a manifest, follow it, download its
exclusions. ``Authorization: Api-Key <key>`` with the ``batches`` scope; an
organization only ever sees its own batches (another's is a 404, like a
missing one). No creator identity appears in any response.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import IO, Any, cast

from django.conf import settings
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, generics, parsers, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from config.api import (
    ClosedSerializer,
    ErrorSerializer,
    PayloadTooLarge,
    form_data_once,
    pipeline_error_responses,
    query_params_once,
)
from optout import batches, exclusions, services
from optout.manifests import FORMATS, ManifestInvalid
from optout.matching import DEFAULT_THRESHOLDS, ThresholdTooLoose
from optout.models import Batch, PipelineRequest
from optout.pipeline_auth import (
    ApiKeyAuthentication,
    HasBatchesScope,
    PipelineClient,
    pipeline_client,
)
from optout.pipeline_serializers import (
    ThresholdsSerializer,
    strictness_field,
    threshold_field,
)
from optout.receipt_api import ReceiptSerializer
from optout.throttles import ApiKeyRateThrottle
from optout.uses import USES

TAGS = ["batches"]
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# What _idempotency_key accepts once HTTP has dropped the surrounding
# whitespace: visible ASCII, spaces only between visible characters.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[!-~]([ -~]*[!-~])?")
# Room for the multipart boundaries, part headers and the small form fields
# around the manifest when the whole body is checked against the manifest limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


# --- errors ----------------------------------------------------------------------


class ManifestUnsupported(exceptions.APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "Unknown manifest format."
    default_code = "unsupported_format"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for another request."
    default_code = "idempotency_conflict"


class BatchNotFinished(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The batch is not done."
    default_code = "not_done"


def _manifest_invalid(error: ManifestInvalid) -> exceptions.APIException:
    if error.code == "unsupported_format":
        return ManifestUnsupported(str(error))
    return exceptions.ValidationError({"manifest": [str(error)]})


# --- the manifest upload ------------------------------------------------------------


def manifest_limit() -> int:
    return int(settings.OPTOUT_MAX_MANIFEST_BYTES)


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The manifest is larger than the limit of {manifest_limit()} bytes.")


class ManifestUploadHandler(MemoryFileUploadHandler):
    """Keeps the manifest in memory like every upload (a webdataset shard holds
    image bytes, which only ever reach the batch spool), but under the manifest
    limit instead of the photo upload limit."""

    def handle_raw_input(
        self,
        input_data: IO[bytes],
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        # ManifestMultiPartParser refused longer bodies before any byte was read.
        self.activated = True

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > manifest_limit():
            raise _too_large()
        return super().receive_data_chunk(raw_data, start)


class ManifestMultiPartParser(parsers.MultiPartParser):
    """Multipart with the manifest limit: a body longer than
    OPTOUT_MAX_MANIFEST_BYTES (plus the multipart framing) is refused with 413
    from its Content-Length, before it is read."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> parsers.DataAndFiles:
        context = parser_context or {}
        request = context["request"]
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > manifest_limit() + MULTIPART_OVERHEAD_BYTES:
            raise _too_large()
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        handlers = [ManifestUploadHandler(request._request)]
        encoding = context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data, files = DjangoMultiPartParser(meta, cast(Any, stream), handlers, encoding).parse()
        except MultiPartParserError as error:
            raise exceptions.ParseError(f"Multipart form parse error - {error}") from None
        return parsers.DataAndFiles(data, files)


class DownloadNegotiation(BaseContentNegotiation):
    """Downloads choose their format with ``?format=``, which DRF would otherwise
    read as a renderer override (and answer 404): errors are always JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


# --- serializers --------------------------------------------------------------------

_USES_ALLOWED = ", ".join(USES)


@extend_schema_field({"type": "string", "enum": ["", *FORMATS]})
class ManifestFormatField(serializers.CharField):
    """A format name; the service answers an unknown one with 415, so the
    field itself takes any text."""


class BatchSubmitSerializer(ClosedSerializer):
    manifest = serializers.FileField(
        help_text=(
            "The manifest: JSONL, CSV (or TSV), Parquet (img2dataset's output as is) or a "
            "webdataset `.tar` shard. At most `OPTOUT_MAX_MANIFEST_BYTES`."
        ),
        error_messages={
            "required": "attach the manifest file as `manifest`",
            "empty": "the manifest is empty",
        },
    )
    use = serializers.ChoiceField(
        choices=USES,
        error_messages={"invalid_choice": "unknown use {input!r}; allowed: " + _USES_ALLOWED},
        help_text="The declared use, one of " + _USES_ALLOWED + ".",
    )
    format = ManifestFormatField(
        required=False,
        allow_blank=True,
        help_text=(
            "`jsonl`, `csv`, `parquet` or `webdataset`; detected from the file's name and "
            "content when omitted. Any other value is a 415."
        ),
    )
    pdq_threshold = threshold_field(
        "pdq",
        DEFAULT_THRESHOLDS.pdq,
        required=False,
        help_text=f"A stricter PDQ threshold (at most {DEFAULT_THRESHOLDS.pdq}).",
    )
    phash_threshold = threshold_field(
        "phash",
        DEFAULT_THRESHOLDS.phash,
        required=False,
        help_text=f"A stricter pHash threshold (at most {DEFAULT_THRESHOLDS.phash}).",
    )
    strictness = strictness_field(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["thresholds"] = DEFAULT_THRESHOLDS.stricter(
                pdq=attrs.get("pdq_threshold"),
                phash=attrs.get("phash_threshold"),
                strictness=attrs.get("strictness"),
            )
        except ThresholdTooLoose as error:
            name = next(
                field
                for field in ("pdq_threshold", "phash_threshold", "strictness")
                if str(error).startswith(field.split("_")[0])
            )
            raise serializers.ValidationError({name: [str(error)]}) from None
        return attrs


# The fields a submission may carry, each once (form_data_once).
SUBMIT_FIELDS = tuple(BatchSubmitSerializer().fields)


class BatchAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField(help_text="`queued` | `running` | `done` | `failed`.")
    record_count = serializers.IntegerField(
        help_text="Records in the manifest (0 for a webdataset shard until it is hashed)."
    )
    chunk_count = serializers.IntegerField()
    url = serializers.SerializerMethodField(help_text="Where to follow the batch.")

    def get_url(self, batch: Batch) -> str:
        return _absolute(self.context["request"], "api-batch", batch.public_id)


class BatchCountsSerializer(serializers.Serializer):
    excluded = serializers.IntegerField()
    invalid = serializers.IntegerField()
    allowed = serializers.IntegerField(required=False, help_text="Only once the batch is done.")


class BatchSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField(help_text="`queued` | `running` | `done` | `failed`.")
    use = serializers.CharField()
    format = serializers.CharField(help_text="`jsonl` | `csv` | `parquet` | `webdataset`.")
    manifest_sha256 = serializers.CharField()
    thresholds = ThresholdsSerializer()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    registry_version = serializers.IntegerField(
        allow_null=True, help_text="Every record is decided against it; fixed when matching starts."
    )
    registry_photos = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "The photos the registry held at that version, fixed with it: how far a match "
            "the keypoints did not check is held back."
        ),
    )
    record_count = serializers.IntegerField()
    chunk_count = serializers.IntegerField()
    progress = serializers.SerializerMethodField(help_text="Share of chunks decided, 0 to 1.")
    counts = serializers.SerializerMethodField()
    failure_reason = serializers.CharField()
    receipt = serializers.SerializerMethodField(
        help_text=(
            "Once done: the signed receipt `{statement, algorithm, signature, public_key, "
            "key_id}`; verify it with the key at /api/v1/receipts/public-key."
        ),
    )
    url = serializers.SerializerMethodField()
    exclusions_url = serializers.SerializerMethodField()

    def get_progress(self, batch: Batch) -> float:
        if batch.status == Batch.Status.DONE:
            return 1.0
        return batch.chunks_done / batch.chunk_count if batch.chunk_count else 0.0

    # Returned exactly as stored and signed: re-serializing could alter what the
    # signature covers. The schema documents it field by field (closed).
    @extend_schema_field(ReceiptSerializer(allow_null=True))
    def get_receipt(self, batch: Batch) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, batch.receipt)

    @extend_schema_field(BatchCountsSerializer)
    def get_counts(self, batch: Batch) -> dict[str, int]:
        counts = {"excluded": batch.excluded_count, "invalid": batch.invalid_count}
        if batch.status == Batch.Status.DONE:
            counts["allowed"] = batch.record_count - batch.excluded_count - batch.invalid_count
        return counts

    def get_url(self, batch: Batch) -> str:
        return _absolute(self.context["request"], "api-batch", batch.public_id)

    def get_exclusions_url(self, batch: Batch) -> str:
        return _absolute(self.context["request"], "api-batch-exclusions", batch.public_id)


def _absolute(request: Request, name: str, public_id: uuid.UUID) -> str:
    return request.build_absolute_uri(reverse(name, kwargs={"id": public_id}))


_ERRORS_MORE = {
    409: OpenApiResponse(ErrorSerializer, description="The batch is not done yet (or failed)."),
    422: OpenApiResponse(
        ErrorSerializer, description="The Idempotency-Key was used for another request body."
    ),
    429: OpenApiResponse(ErrorSerializer, description="Over this key's quota; see Retry-After."),
}


# --- views --------------------------------------------------------------------------


class PipelineBatchView(generics.GenericAPIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasBatchesScope]
    serializer_class = BatchSerializer

    def get_queryset(self) -> QuerySet[Batch]:
        client = self.request.user
        if not isinstance(client, PipelineClient):  # schema generation's fake request
            return Batch.objects.none()
        return Batch.objects.filter(organization=client.organization).order_by("-created_at", "-id")


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise exceptions.ValidationError(
            {"Idempotency-Key": ["the Idempotency-Key header is required (any unique string)"]}
        )
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise exceptions.ValidationError(
            {"Idempotency-Key": [f"at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters"]}
        )
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise exceptions.ValidationError(
            {"Idempotency-Key": ["visible ASCII characters (and spaces between them) only"]}
        )
    return key


def _submit(request: Request, key: str, data: dict[str, Any]) -> batches.BatchSubmitted:
    client = pipeline_client(request)
    manifest = data["manifest"]
    try:
        return batches.batch_submit(
            api_key=client.key,
            idempotency_key=key,
            use=data["use"],
            thresholds=data["thresholds"],
            manifest=manifest,
            manifest_name=manifest.name or "",
            manifest_format=data.get("format", "").strip().lower(),
        )
    except ManifestInvalid as error:
        raise _manifest_invalid(error) from None
    except batches.IdempotencyConflict as error:
        raise IdempotencyKeyReused(str(error)) from None
    finally:
        manifest.close()


class BatchListSubmitView(PipelineBatchView, generics.ListAPIView):
    parser_classes = [ManifestMultiPartParser]
    throttle_scope = "batches"

    def get_throttles(self) -> list[BaseThrottle]:
        # The quota is on submissions; following a batch is cheap and polled.
        return [ApiKeyRateThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        tags=TAGS,
        summary="List this organization's batches, newest first",
        responses={200: BatchSerializer(many=True), **pipeline_error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Submit a manifest for checking",
        description=(
            "Multipart: `manifest` file, `use`, optional `format`, `pdq_threshold`, "
            "`phash_threshold`, `strictness`, each at most once: a field given twice, any "
            "other field and a blank threshold or strictness are a 400. The `Idempotency-Key` "
            "header is required: the same key with the same body returns the same batch "
            "(200), with another body a 422. JSONL, CSV and Parquet are split into chunks at "
            "once; a webdataset shard is hashed by a worker first. A malformed row becomes an "
            "invalid record with its row number (`GET …/exclusions?decision=invalid`), never "
            "a failure of the batch."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                    "pattern": f"^{IDEMPOTENCY_KEY_PATTERN.pattern}$",
                },
                OpenApiParameter.HEADER,
                required=True,
                description=(
                    "Any unique string up to 255 visible ASCII characters (a UUID, say); "
                    "resubmitting is safe."
                ),
            )
        ],
        request={"multipart/form-data": BatchSubmitSerializer},
        responses={
            202: OpenApiResponse(BatchAcceptedSerializer, "Batch accepted (Location: its URL)."),
            200: OpenApiResponse(BatchAcceptedSerializer, "Same key and body: the same batch."),
            **pipeline_error_responses(400, 401, 403, 413, 415),
            422: _ERRORS_MORE[422],
            429: _ERRORS_MORE[429],
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        serializer = BatchSubmitSerializer(data=form_data_once(request, SUBMIT_FIELDS))
        serializer.is_valid(raise_exception=True)
        submitted = _submit(request, key, serializer.validated_data)
        batch = submitted.batch
        services.pipeline_request_record(
            key=pipeline_client(request).key,
            endpoint=PipelineRequest.Endpoint.BATCH,
            use=batch.use,
            record_count=batch.record_count,
            batch=batch,
        )
        body = BatchAcceptedSerializer(batch, context={"request": request}).data
        code = status.HTTP_202_ACCEPTED if submitted.created else status.HTTP_200_OK
        return Response(body, status=code, headers={"Location": body["url"]})


class BatchDetailView(PipelineBatchView, generics.RetrieveAPIView):
    lookup_field = "public_id"
    lookup_url_kwarg = "id"

    @extend_schema(
        tags=TAGS,
        summary="A batch: status, progress, counts, and its receipt once done",
        responses={200: BatchSerializer, **pipeline_error_responses(401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class BatchExclusionsView(PipelineBatchView):
    content_negotiation_class = DownloadNegotiation

    @extend_schema(
        tags=TAGS,
        summary="Download a finished batch's excluded (or invalid) records",
        description=(
            "Streamed, in manifest row order. Excluded rows: `id`, `row`, `matches`; with "
            "`decision=invalid`: `id`, `row`, `reason`. CSV encodes `matches` as JSON."
        ),
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(exclusions.FORMATS)),
            OpenApiParameter("decision", OpenApiTypes.STR, enum=list(exclusions.DECISIONS)),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            **pipeline_error_responses(400, 401, 403, 404),
            409: _ERRORS_MORE[409],
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> StreamingHttpResponse:
        batch = self.get_queryset().get(public_id=id)
        output_format, decision = _download_choice(request)
        if batch.status != Batch.Status.DONE:
            raise BatchNotFinished(_not_done(batch))
        response = StreamingHttpResponse(
            exclusions.exclusions_stream(
                batches.batch_results(batch, decision),
                output_format=output_format,
                decision=decision,
            ),
            content_type=exclusions.CONTENT_TYPES[output_format],
        )
        name = "exclusions" if decision == "exclude" else "invalid"
        response["Content-Disposition"] = (
            f'attachment; filename="batch-{batch.public_id}-{name}.{output_format}"'
        )
        return response


def _download_choice(request: Request) -> tuple[str, str]:
    params = query_params_once(request, ["format", "decision"])
    output_format = params.get("format", "jsonl")
    decision = params.get("decision", "exclude")
    problems = {}
    if output_format not in exclusions.FORMATS:
        problems["format"] = [f"unknown format; allowed: {', '.join(exclusions.FORMATS)}"]
    if decision not in exclusions.DECISIONS:
        problems["decision"] = [f"unknown decision; allowed: {', '.join(exclusions.DECISIONS)}"]
    if problems:
        raise exceptions.ValidationError(problems)
    return output_format, decision


def _not_done(batch: Batch) -> str:
    if batch.status == Batch.Status.FAILED:
        return f"batch failed: {batch.failure_reason}"
    if batch.status == Batch.Status.QUEUED:
        return "batch is queued; no chunk decided yet"
    return f"batch is running; {batch.chunks_done} of {batch.chunk_count} chunks done"
