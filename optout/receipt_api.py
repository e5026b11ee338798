"""The registry's receipt public key: public, so anyone can verify a receipt.

Pipelines fetch it once and keep it (``optout verify --public-key``); a
regulator can get it from here or from the operator's own publication.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ErrorSerializer, error_responses
from optout import receipts
from optout.pipeline_serializers import ThresholdsSerializer

logger = logging.getLogger(__name__)
TAGS = ["receipts"]


class ReceiptSigningUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Receipt signing is not configured on this registry."
    default_code = "not_configured"


class ReceiptPublicKeySerializer(serializers.Serializer):
    algorithm = serializers.CharField(help_text="Always `Ed25519`.")
    public_key = serializers.CharField(help_text="The raw 32-byte public key, base64.")
    public_key_pem = serializers.CharField(help_text="The same key as PEM (SubjectPublicKeyInfo).")
    key_id = serializers.CharField(
        help_text="First 16 hex digits of sha256 over the raw key; receipts name it as `key_id`."
    )


class ReceiptAlgorithmsSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    pdq = serializers.CharField()
    phash = serializers.CharField()
    decision = serializers.CharField(help_text="The decision rule, with its fingerprint.")


class ReceiptStatementSerializer(serializers.Serializer):
    """What a batch receipt states and signs (optout.batches.batch_receipt_statement).
    Documentation only: a receipt is returned exactly as it was signed."""

    type = serializers.CharField(help_text="Always `optout-registry.batch-receipt`.")
    version = serializers.IntegerField(help_text="Version of the statement's layout (1).")
    batch = serializers.UUIDField()
    organization = serializers.UUIDField()
    use = serializers.CharField()
    manifest_sha256 = serializers.CharField()
    manifest_format = serializers.CharField()
    record_count = serializers.IntegerField()
    excluded_count = serializers.IntegerField()
    invalid_count = serializers.IntegerField()
    excluded_ids_sha256 = serializers.CharField(
        help_text="sha256 over the excluded records' ids, in manifest order."
    )
    registry_version = serializers.IntegerField()
    thresholds = ThresholdsSerializer()
    algorithms = ReceiptAlgorithmsSerializer()
    started_at = serializers.CharField(help_text="ISO 8601.")
    finished_at = serializers.CharField(help_text="ISO 8601.")


class ReceiptSerializer(serializers.Serializer):
    """A signed batch receipt. Documentation only (see ReceiptStatementSerializer)."""

    statement = ReceiptStatementSerializer()
    algorithm = serializers.CharField(help_text="Always `Ed25519`.")
    signature = serializers.CharField(
        help_text="base64 of the signature over the statement's canonical JSON."
    )
    public_key = serializers.CharField(help_text="The signing key, raw, base64 (informative).")
    key_id = serializers.CharField()


class ReceiptPublicKeyView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=TAGS,
        summary="The public key that verifies batch receipts",
        description=(
            "Receipts are Ed25519 signatures over the canonical JSON of their statement "
            "(sorted keys, no whitespace, UTF-8). Verify with this key, obtained once and "
            "kept, not with the key a receipt carries. No authentication."
        ),
        auth=[],
        responses={
            200: ReceiptPublicKeySerializer,
            **error_responses(405),
            503: OpenApiResponse(ErrorSerializer, description="No signing key is configured."),
        },
    )
    def get(self, request: Request) -> Response:
        try:
            info = receipts.public_key_info()
        except ImproperlyConfigured:
            logger.exception("receipt signing key unavailable")
            raise ReceiptSigningUnavailable() from None
        return Response(ReceiptPublicKeySerializer(info).data)
