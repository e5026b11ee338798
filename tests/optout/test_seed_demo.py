"""`manage.py seed_demo`: the demo data of `make run`, idempotent, DEBUG only."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings

from optout.models import OptOut, Organization
from registry.models import Claim, ConsentEvent, Creator, Photo


@pytest.fixture(autouse=True)
def debug_on(settings: Settings) -> None:
    # pytest-django runs tests with DEBUG off; `make run` runs seed_demo with it on.
    settings.DEBUG = True


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {
        "users": get_user_model().objects.count(),
        "creators": Creator.objects.count(),
        "organizations": Organization.objects.count(),
        "photos": Photo.objects.count(),
        "claims": Claim.objects.count(),
        "opt_outs": OptOut.objects.count(),
        "events": ConsentEvent.objects.count(),
    }


@pytest.mark.django_db
def test_seed_demo_creates_the_demo_world_and_prints_the_logins() -> None:
    output = seed()

    assert "Demo creator login: demo@example.org / demo-password-1234\n" in output
    assert "Admin login: admin@example.org / admin-password-1234\n" in output
    demo = authenticate(username="demo@example.org", password="demo-password-1234")
    admin = authenticate(username="admin@example.org", password="admin-password-1234")
    assert demo is not None and admin is not None
    assert (admin.is_staff, admin.is_superuser) == (True, True)
    assert Creator.objects.get(user=admin).is_confirmed
    creator = Creator.objects.get(user=demo)
    assert creator.is_confirmed
    assert sorted(
        Photo.objects.filter(creator=creator).values_list("original_filename", flat=True)
    ) == [
        "astronaut.jpg",
        "camera.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "hubble_deep_field.jpg",
        "rocket.jpg",
    ]
    assert all(
        len(photo.pdq) == 64 and len(photo.phash) == 16
        for photo in Photo.objects.filter(creator=creator)
    )
    assert list(Claim.objects.filter(creator=creator).values_list("kind", "value")) == [
        ("domain", "photos.example.org")
    ]
    [opt_out] = OptOut.objects.filter(creator=creator)
    assert (opt_out.uses, opt_out.scope, opt_out.is_active) == (["ai_training"], "all_photos", True)
    assert list(Organization.objects.values_list("name", flat=True)) == ["Demo Lab"]


@pytest.mark.django_db
def test_seed_demo_run_twice_adds_nothing() -> None:
    seed()
    before = counts()

    output = seed()

    assert counts() == before
    assert before == {
        "users": 2,
        "creators": 2,
        "organizations": 1,
        "photos": 6,
        "claims": 1,
        "opt_outs": 1,
        "events": 8,
    }
    assert "0 new photo(s) of 6" in output


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_without_debug(settings: Settings) -> None:
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG only"):
        seed()

    assert get_user_model().objects.count() == 0
