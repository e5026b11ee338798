"""``manage.py create_api_key ORGANIZATION [--name N] [--scopes lookup,batches]
[--expires-days D]``: an API key for a pipeline, creating the organization if
needed. The key is printed alone on the last line, so a script can take it with
``| tail -n 1``; it is shown this once and only its hash is stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from optout import services
from optout.models import OrganizationAPIKey


def _scopes(value: str) -> list[str]:
    return [scope.strip() for scope in value.split(",") if scope.strip()]


class Command(BaseCommand):
    help = "Create an API key for an organization (created if needed) and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("organization", help="The organization's name.")
        parser.add_argument(
            "--name", default="command line", help="Label of the key (default: %(default)s)."
        )
        parser.add_argument(
            "--scopes",
            type=_scopes,
            default=list(OrganizationAPIKey.Scope.values),
            help="Comma-separated scopes: lookup, batches (default: both).",
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="The key stops working after this many days (default: never).",
        )

    def handle(
        self,
        *args: Any,
        organization: str,
        name: str,
        scopes: list[str],
        expires_days: int | None,
        **options: Any,
    ) -> None:
        if not organization.strip():
            raise CommandError("The organization name must not be blank.")
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be a positive number of days.")
        expires_at = None if expires_days is None else timezone.now() + timedelta(expires_days)
        try:
            with transaction.atomic():
                org, created = services.organization_get_or_create(name=organization)
                key, raw = services.api_key_create(
                    organization=org, name=name, scopes=scopes, expires_at=expires_at
                )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(
            f"{'Created' if created else 'Existing'} organization {org.name} ({org.public_id})."
        )
        if org.suspended_at is not None:
            self.stderr.write("Warning: this organization is suspended; its keys are refused.")
        expiry = key.expiry_date.isoformat() if key.expiry_date else "never"
        self.stdout.write(
            f"API key {key.prefix} '{key.name}', scopes {', '.join(key.scopes)}, expires {expiry}."
        )
        self.stdout.write("API key (shown once; send it as 'Authorization: Api-Key <key>'):")
        self.stdout.write(raw)
