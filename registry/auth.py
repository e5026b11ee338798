"""Authentication: email logins for the pages, personal tokens for the creator API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from registry.models import Creator, PersonalToken
from registry.services import token_digest

# last_used_at is informational; writing it on every request would turn each
# read into a write, so it is refreshed at most once a minute.
TOKEN_TOUCH_INTERVAL_SECONDS = 60


class EmailBackend(ModelBackend):
    """Creators log in with their email; usernames are the lowercased email."""

    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        if username is not None:
            username = username.strip().lower()
        return super().authenticate(request, username=username, password=password, **kwargs)


class PersonalTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <token>``. Tokens are stored as SHA-256 digests."""

    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, PersonalToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Token <token>'."
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from None
        token = (
            PersonalToken.objects.select_related("creator__user")
            .filter(digest=token_digest(raw))
            .first()
        )
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        user = token.creator.user
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("This account no longer exists.")
        now = timezone.now()
        if (
            token.last_used_at is None
            or (now - token.last_used_at).total_seconds() > TOKEN_TOUCH_INTERVAL_SECONDS
        ):
            PersonalToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def request_creator(request: HttpRequest | Request) -> Creator | None:
    """The active creator behind a request, or None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    creator: Creator | None = getattr(user, "creator", None)
    if creator is None or creator.anonymized_at is not None or creator.suspended_at is not None:
        return None
    return creator


class IsCreator(BasePermission):
    message = "A confirmed, active creator account is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        creator = request_creator(request)
        return creator is not None and creator.is_confirmed
