"""GET /api/v1/registry: the registry version and how fresh the matching engines are.

For pipelines (an API key with the ``lookup`` scope) and operators alike: the
newest registry version, and per engine process, index shard and hash kind the
version it has loaded, its size and its lag. Nothing about creators.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import pipeline_error_responses
from optout.engine import registry_photos_at, registry_status
from optout.matching.scale import held_back_table
from optout.pipeline_api import TAGS, PipelineView


class RegistryEngineSerializer(serializers.Serializer):
    worker = serializers.CharField(help_text="Celery hostname (or host) and process id.")
    shards = serializers.IntegerField(help_text="How many shards the index is split into.")
    shard = serializers.IntegerField(help_text="The shard this engine holds (0 to shards - 1).")
    kind = serializers.ChoiceField(choices=["sha256", "pdq", "phash"])
    loaded_version = serializers.IntegerField(help_text="Registry version the engine holds.")
    size = serializers.IntegerField(help_text="Live entries in this kind's index.")
    updated_at = serializers.DateTimeField(help_text="When the engine last reported.")
    lag = serializers.IntegerField(help_text="registry_version - loaded_version.")


class HeldBackSerializer(serializers.Serializer):
    hashes = serializers.ChoiceField(
        choices=["pdq+phash", "pdq", "phash"], help_text="The hashes a record carries."
    )
    pdq_quality = serializers.BooleanField(help_text="Whether the record states its PDQ quality.")
    colours_agree = serializers.BooleanField(
        help_text=(
            "Whether the record's and the photo's colours were compared and agree (a colour "
            "record against a colour photo registered without keypoints); false: nothing "
            "confirms the match."
        )
    )
    strictness = serializers.IntegerField(
        help_text=(
            "Steps stricter than the registry's rule that such a record's match is judged by "
            "when the keypoints did not check it (0: the rule itself)."
        )
    )


class RegistryStatusSerializer(serializers.Serializer):
    registry_version = serializers.IntegerField(help_text="Newest committed registry version.")
    photos = serializers.IntegerField(
        help_text="Photos registered at that version: the size unconfirmed matches are held to."
    )
    held_back = HeldBackSerializer(
        many=True,
        help_text=(
            "Per record form, how a match the keypoints did not check is judged at this size "
            '(the last row: one whose colours agree; docs/matching.md, "Held back by the '
            "registry's size\")."
        ),
    )
    workers = RegistryEngineSerializer(many=True)


class RegistryView(PipelineView):
    # A cheap read, polled like the change feed: it shares that quota.
    throttle_scope = "changes"

    @extend_schema(
        tags=TAGS,
        summary="Registry version and index freshness",
        description=(
            "The newest registry version and, for every matching engine that reported in "
            "the last 10 minutes (web processes and Celery workers, per index shard and "
            "hash kind), the version it has loaded, its size and `lag` = registry_version "
            "- loaded_version. An engine catches up before it decides, so a lag only means "
            "it has been idle since; a batch chunk is never decided against an engine older "
            "than its batch's registry version. Also the photos registered at that version "
            "and, per record form, how many steps stricter a match the keypoints did not check "
            "is judged at that size."
        ),
        responses={
            200: RegistryStatusSerializer,
            **pipeline_error_responses(401, 403, 405, 429),
        },
    )
    def get(self, request: Request) -> Response:
        status = registry_status()
        workers = [
            {
                "worker": state.worker,
                "shards": state.shards,
                "shard": state.shard,
                "kind": state.kind,
                "loaded_version": state.loaded_version,
                "size": state.size,
                "updated_at": state.updated_at,
                "lag": status.lag(state),
            }
            for state in status.engines
        ]
        photos = registry_photos_at(status.registry_version)
        body = {
            "registry_version": status.registry_version,
            "photos": photos,
            "held_back": held_back_table(photos),
            "workers": workers,
        }
        return Response(RegistryStatusSerializer(body).data)
