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
from optout.engine import registry_status
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


class RegistryStatusSerializer(serializers.Serializer):
    registry_version = serializers.IntegerField(help_text="Newest committed registry version.")
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
            "than its batch's registry version."
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
                "lag": status.registry_version - state.loaded_version,
            }
            for state in status.engines
        ]
        body = {"registry_version": status.registry_version, "workers": workers}
        return Response(RegistryStatusSerializer(body).data)
