"""Creator REST API for opt-outs: file, list, read, change, withdraw.

Same authentication as registry/api.py; every queryset is the creator's own.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import error_responses
from config.parsers import JSONParser
from optout import services
from optout.models import OptOut
from optout.serializers import OptOutFileSerializer, OptOutSerializer
from registry.api import TAGS, creator_of
from registry.auth import IsCreator, request_creator
from registry.models import Channel


class CreatorOptOutView(generics.GenericAPIView):
    """The signed-in creator's opt-outs, with what serializing them needs."""

    permission_classes = [IsCreator]
    # JSON only: the web pages take the forms. Form encodings would read an empty
    # `exceptions=` as "no exceptions" instead of refusing it.
    parser_classes = [JSONParser]
    serializer_class = OptOutSerializer

    def get_queryset(self) -> QuerySet[OptOut]:
        # request_creator is None only for drf-spectacular's fake request: no rows.
        return (
            OptOut.objects.filter(creator=request_creator(self.request))
            .select_related("replaces")
            .prefetch_related("photos", "claims", "exceptions", "replaced_by")
            .order_by("-created_at", "-id")
        )


class OptOutListFileView(CreatorOptOutView, generics.ListAPIView):
    @extend_schema(
        tags=TAGS,
        summary="List my opt-outs, newest first",
        responses={200: OptOutSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="File an opt-out",
        description="Effective from the registry version it is given (`filed_version`).",
        request=OptOutFileSerializer,
        responses={
            201: OpenApiResponse(OptOutSerializer, "Opt-out filed."),
            **error_responses(400, 401, 403, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OptOutFileSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        opt_out = services.opt_out_file(
            creator=creator_of(request), channel=Channel.API, **serializer.validated_data
        )
        return Response(OptOutSerializer(opt_out).data, status=status.HTTP_201_CREATED)


class OptOutDetailView(CreatorOptOutView, generics.RetrieveAPIView):
    lookup_field = "public_id"
    lookup_url_kwarg = "id"

    @extend_schema(
        tags=TAGS,
        summary="One of my opt-outs",
        responses={200: OptOutSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class OptOutWithdrawView(CreatorOptOutView):
    @extend_schema(
        tags=TAGS,
        summary="Withdraw one of my opt-outs",
        description=(
            "Stops matching from the next registry version (`withdrawn_version`). "
            "Withdrawing again changes nothing and returns the same opt-out."
        ),
        request=None,
        responses={200: OptOutSerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        # Another creator's opt-out raises OptOut.DoesNotExist: a 404, like a missing one.
        opt_out = services.opt_out_withdraw(
            creator=creator_of(request), opt_out_id=id, channel=Channel.API
        )
        return Response(OptOutSerializer(opt_out).data)


class OptOutChangeView(CreatorOptOutView):
    @extend_schema(
        tags=TAGS,
        summary="Change one of my opt-outs",
        description=(
            "Takes the same body as filing. The change supersedes the opt-out: a new "
            "opt-out (201) whose `replaces` names the old one, filed at the registry "
            "version at which the old one is withdrawn. A body equal to the opt-out "
            "as it is changes nothing and returns it (200). A withdrawn opt-out "
            "cannot be changed (400): file a new one."
        ),
        request=OptOutFileSerializer,
        responses={
            201: OpenApiResponse(OptOutSerializer, "Opt-out changed: the new opt-out."),
            200: OpenApiResponse(OptOutSerializer, "Nothing changed: the same opt-out."),
            **error_responses(400, 401, 403, 404, 413, 415),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        serializer = OptOutFileSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Another creator's opt-out raises OptOut.DoesNotExist: a 404, like a missing one.
        opt_out = services.opt_out_change(
            creator=creator_of(request),
            public_id=id,
            channel=Channel.API,
            **serializer.validated_data,
        )
        changed = opt_out.public_id != id
        return Response(
            OptOutSerializer(opt_out).data,
            status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK,
        )
