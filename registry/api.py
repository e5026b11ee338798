"""Creator REST API: photos, claims and the consent history of the signed-in creator.

Authentication is a session or ``Authorization: Token <token>``; every view
needs a confirmed, active creator and only ever sees that creator's rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from config.api import BoundedMultiPartParser, error_responses
from config.parsers import JSONParser
from registry import services, uploads
from registry.auth import IsCreator, request_creator
from registry.models import Channel, Claim, ConsentEvent, Creator, Photo
from registry.serializers import (
    ClaimAddSerializer,
    ClaimSerializer,
    ConsentEventSerializer,
    PhotoFilesRegisterSerializer,
    PhotoHashesRegisterSerializer,
    PhotoRegisterResultSerializer,
    PhotoSerializer,
)

TAGS = ["creator"]

# get_queryset filters by request_creator(request), which IsCreator guarantees is
# set; filtering by None (a fake request while the schema is generated) matches
# nothing rather than everything.


def creator_of(request: Request) -> Creator:
    """The creator behind a request that passed IsCreator."""
    creator = request_creator(request)
    assert creator is not None, "IsCreator lets only creators through"
    return creator


def _photos_register(*, creator: Creator, data: dict[str, Any]) -> list[services.PhotoOutcome]:
    """Uploads live only in memory (the one upload handler); each file is read,
    hashed and dropped as the service consumes the generator, never copied twice."""
    if "files" in data:
        hashed = uploads.hash_files(
            ((upload.name or "", upload.read()) for upload in data["files"]),
            max_bytes=settings.OPTOUT_MAX_PHOTO_BYTES,
        )
        return services.photos_register_hashed(creator=creator, items=hashed, channel=Channel.API)
    return services.photos_register_from_hashes(
        creator=creator, items=data["items"], channel=Channel.API
    )


def _photos_summary(outcomes: list[services.PhotoOutcome]) -> dict[str, Any]:
    counts = Counter(outcome.status for outcome in outcomes)
    return {
        "results": [outcome.as_dict() for outcome in outcomes],
        "registered": counts["registered"],
        "already_registered": counts["already_registered"],
        "errors": counts["error"],
    }


class PhotoListRegisterView(generics.ListAPIView):
    permission_classes = [IsCreator]
    # The project's JSON parser, not DRF's: a body nested too deeply is a 400, not a 500.
    parser_classes = [JSONParser, BoundedMultiPartParser]
    serializer_class = PhotoSerializer

    def get_queryset(self) -> QuerySet[Photo]:
        return Photo.objects.filter(creator=request_creator(self.request)).order_by(
            "-created_at", "-id"
        )

    @extend_schema(
        tags=TAGS,
        summary="List my photos",
        responses={200: PhotoSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Register photos",
        description=(
            "Multipart: image files in `files` (repeated; ZIP archives are expanded), or a "
            'JSONL file of hashes in `hashes_file`. JSON: `{"hashes": [...]}`. Each file, '
            "ZIP member or hashes item gets its own outcome; bad ones never stop the others. "
            "201 when at least one photo was newly registered, otherwise 200. At most "
            "`OPTOUT_MAX_HASH_LINES` hash items per request (413 above)."
        ),
        request={
            "multipart/form-data": PhotoFilesRegisterSerializer,
            "application/json": PhotoHashesRegisterSerializer,
        },
        responses={
            201: OpenApiResponse(PhotoRegisterResultSerializer, "Some photos registered."),
            200: OpenApiResponse(PhotoRegisterResultSerializer, "Nothing new registered."),
            **error_responses(400, 401, 403, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.registration_serializer(request)
        serializer.is_valid(raise_exception=True)
        outcomes = _photos_register(creator=creator_of(request), data=serializer.validated_data)
        body = PhotoRegisterResultSerializer(_photos_summary(outcomes)).data
        any_new = body["registered"] > 0
        return Response(body, status=status.HTTP_201_CREATED if any_new else status.HTTP_200_OK)

    def registration_serializer(self, request: Request) -> BaseSerializer:
        if request.content_type.startswith("multipart/"):
            return PhotoFilesRegisterSerializer(data=request.data)
        return PhotoHashesRegisterSerializer(data=request.data)


class PhotoDetailView(generics.RetrieveAPIView):
    permission_classes = [IsCreator]
    serializer_class = PhotoSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "id"

    def get_queryset(self) -> QuerySet[Photo]:
        return Photo.objects.filter(creator=request_creator(self.request))

    @extend_schema(
        tags=TAGS,
        summary="One of my photos",
        responses={200: PhotoSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ClaimListAddView(generics.ListAPIView):
    permission_classes = [IsCreator]
    # JSON only, like the opt-outs: the web pages take the forms.
    parser_classes = [JSONParser]
    serializer_class = ClaimSerializer

    def get_queryset(self) -> QuerySet[Claim]:
        return Claim.objects.filter(creator=request_creator(self.request)).order_by("kind", "value")

    @extend_schema(
        tags=TAGS,
        summary="List my claims",
        responses={200: ClaimSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Add a claim (domain, URL prefix or handle)",
        description="201 with the new claim; 200 with the existing one if it was already there.",
        request=ClaimAddSerializer,
        responses={
            201: OpenApiResponse(ClaimSerializer, "Claim added."),
            200: OpenApiResponse(ClaimSerializer, "Claim already existed; nothing changed."),
            **error_responses(400, 401, 403, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ClaimAddSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        claim, created = services.claim_add(
            creator=creator_of(request), channel=Channel.API, **serializer.validated_data
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(ClaimSerializer(claim).data, status=code)


class ConsentEventListView(generics.ListAPIView):
    permission_classes = [IsCreator]
    serializer_class = ConsentEventSerializer

    def get_queryset(self) -> QuerySet[ConsentEvent]:
        creator = request_creator(self.request)
        if creator is None:  # only while drf-spectacular inspects the view
            return ConsentEvent.objects.none()
        return ConsentEvent.objects.filter(creator_public_id=creator.public_id).order_by(
            "-registry_version"
        )

    @extend_schema(
        tags=TAGS,
        summary="My consent history, newest first",
        responses={200: ConsentEventSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
