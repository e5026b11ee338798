"""GET /healthz: is this process able to serve the registry?

200 while PostgreSQL answers, 503 when it does not: the database is the system
of record, and without it no request can be honoured. Redis only wakes workers
up, so a Redis outage is reported (``"redis": false``) but does not make the web
process unhealthy; ``null`` means no Redis is configured (`make run`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from registry.ledger import registry_version_current

logger = logging.getLogger(__name__)

# A health probe that hangs is worse than one that says "down": load balancers
# probe every few seconds, and one second is ages for a local Redis.
REDIS_TIMEOUT_SECONDS = 1.0


def _redis_ok() -> bool | None:
    if not settings.REDIS_URL:
        return None
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        logger.warning("healthz: Redis does not answer", exc_info=True)
        return False
    finally:
        client.close()


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        version: int | None = registry_version_current()
        database = True
    except DatabaseError:
        logger.warning("healthz: database does not answer", exc_info=True)
        version, database = None, False
    body = {
        "status": "ok" if database else "unavailable",
        "database": database,
        "redis": _redis_ok(),
        "registry_version": version,
    }
    return JsonResponse(body, status=200 if database else 503)


class HealthzMiddleware:
    """Answers /healthz before any other middleware looks at the request.

    Probes (docker compose, Kubernetes, load balancers) call the container by
    IP address, a Host that ALLOWED_HOSTS rightly refuses, and over plain HTTP,
    which SECURE_SSL_REDIRECT would redirect. The answer carries no data worth
    protecting, so it is given first, whatever the Host.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == "/healthz":
            response: HttpResponse = healthz(request)
            return response
        return self.get_response(request)
