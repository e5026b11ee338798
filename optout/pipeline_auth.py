"""Authentication of training pipelines: organization API keys.

``Authorization: Api-Key <key>`` everywhere; ``Authorization: API <key>`` too,
the scheme of Spawning's API, so that its existing clients work unchanged.
Keys are djangorestframework-api-key keys (SHA-512 at rest, prefix, expiry,
revocation) with scopes.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from optout.models import Organization, OrganizationAPIKey

KEYWORDS = ("api-key", "api")


class PipelineClient:
    """The principal behind an API key: ``request.user`` for pipeline views.

    Carries no creator identity and no Django user."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False

    def __init__(self, key: OrganizationAPIKey) -> None:
        self.key = key
        self.organization: Organization = key.organization

    @property
    def pk(self) -> str:
        return str(self.key.pk)

    def __str__(self) -> str:
        return f"{self.organization.name} ({self.key.prefix})"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>`` or ``Authorization: API <key>``."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[PipelineClient, OrganizationAPIKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower().decode("latin-1") not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Api-Key <key>'."
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("API key contains invalid characters.") from None
        try:
            key = OrganizationAPIKey.objects.get_from_key(raw)
        except OrganizationAPIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from None
        assert isinstance(key, OrganizationAPIKey)
        if key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if key.organization.suspended_at is not None:
            raise exceptions.PermissionDenied("This organization is suspended.")
        return PipelineClient(key), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def pipeline_client(request: Request) -> PipelineClient:
    client = request.user
    if not isinstance(client, PipelineClient):
        raise exceptions.NotAuthenticated("An organization API key is required.")
    return client


class _HasScope(BasePermission):
    scope = ""
    message = "This API key lacks the required scope."

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, PipelineClient):
            return False
        if not client.key.has_scope(self.scope):
            self.message = f"This API key lacks the '{self.scope}' scope."
            return False
        return True


class HasLookupScope(_HasScope):
    scope = OrganizationAPIKey.Scope.LOOKUP


class HasBatchesScope(_HasScope):
    scope = OrganizationAPIKey.Scope.BATCHES
