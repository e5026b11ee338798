"""Per-key request quotas for the pipeline API.

A view names its quota with ``throttle_scope`` ("lookup", "urls", "changes",
"batches"); the rates live in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
(from the environment, see config/settings.py). The request history is kept in
the default cache, which is Redis when REDIS_URL is set, so every web process
counts against one quota per key. Over quota is a 429 whose ``Retry-After``
header says when to try again.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

from optout.pipeline_auth import PipelineClient


class ApiKeyRateThrottle(ScopedRateThrottle):
    """The view's ``throttle_scope`` quota, counted per API key."""

    def get_rate(self) -> str | None:
        # DRF copies the rates into a class attribute at import; reading the
        # settings here, per request, lets a test (or a settings override) change them.
        rates = cast(dict[str, str | None], api_settings.DEFAULT_THROTTLE_RATES)
        try:
            return rates[self.scope or ""]
        except KeyError:
            raise ImproperlyConfigured(f"no throttle rate set for scope {self.scope!r}") from None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        client = request.user
        if not isinstance(client, PipelineClient):
            return None
        # The prefix is unique per key and is what logs show; the primary key
        # would put the stored hash of the key into cache key names.
        return self.cache_format % {"scope": self.scope, "ident": client.key.prefix}
