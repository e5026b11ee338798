"""``manage.py create_creator EMAIL [--token-name NAME]``: a confirmed creator and
a personal token for the API. The token is printed alone on the last line, so a
script can take it with ``| tail -n 1``; it is shown this once and never stored."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from registry import services


class Command(BaseCommand):
    help = "Create a confirmed creator account and print a new personal API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="The creator's email address (their login).")
        parser.add_argument(
            "--token-name",
            default="command line",
            help="Label of the token (default: %(default)s).",
        )

    def handle(self, *args: Any, email: str, token_name: str, **options: Any) -> None:
        try:
            validate_email(email.strip())
            with transaction.atomic():
                creator = services.creator_create_confirmed(email=email)
                _, raw = services.token_create(creator=creator, name=token_name)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(f"Created confirmed creator {creator} ({creator.public_id}).")
        self.stdout.write("Personal token (shown once; send it as 'Authorization: Token <token>'):")
        self.stdout.write(raw)
