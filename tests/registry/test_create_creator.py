"""`manage.py create_creator EMAIL` makes a confirmed creator and prints a token."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from registry.models import Creator, PersonalToken
from tests.factories import CreatorFactory, UserFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_creator", *args, stdout=out)
    return out.getvalue()


def test_create_creator_prints_a_token_alone_on_the_last_line_that_authenticates() -> None:
    output = run("New.Person@Example.org")

    token = output.splitlines()[-1]
    creator = Creator.objects.get(user__email="new.person@example.org")
    assert creator.is_confirmed
    assert token.startswith("opt_")
    assert token == token.strip()
    assert PersonalToken.objects.get(creator=creator).name == "command line"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post(
        "/api/v1/me/claims", {"kind": "domain", "value": "person.example"}, format="json"
    )
    assert response.status_code == 201


def test_create_creator_names_the_token() -> None:
    run("named@example.org", "--token-name", "ci uploader")

    assert PersonalToken.objects.get().name == "ci uploader"


def test_create_creator_for_an_existing_email_fails_and_creates_nothing() -> None:
    existing = CreatorFactory(user=UserFactory(email="taken@example.org"))

    with pytest.raises(CommandError) as error:
        run("Taken@example.org")

    assert str(error.value) == "An account with this email already exists."
    assert Creator.objects.count() == 1
    assert PersonalToken.objects.filter(creator=existing).count() == 0


def test_create_creator_with_an_invalid_email_fails_and_creates_nothing() -> None:
    with pytest.raises(CommandError) as error:
        run("not-an-email")

    assert str(error.value) == "Enter a valid email address."
    assert Creator.objects.count() == 0
    assert PersonalToken.objects.count() == 0


def test_create_creator_for_an_existing_email_exits_non_zero(capsys: pytest.CaptureFixture) -> None:
    UserFactory(email="exists@example.org")

    with pytest.raises(SystemExit) as exit_info:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", "create_creator", "exists@example.org"])

    assert exit_info.value.code == 1
    assert "CommandError: An account with this email already exists." in capsys.readouterr().err
