"""factory_boy factories. Photos get real hashes of generated images where a
test needs matching; otherwise random hex is enough."""

from __future__ import annotations

import secrets
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from optout.models import Organization, OrganizationAPIKey
from optout.services import api_key_create, api_keys_revoke
from registry.models import Creator, Photo


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    email = factory.Sequence(lambda n: f"creator{n}@example.org")
    username = factory.LazyAttribute(lambda o: o.email)
    password = factory.django.Password("correct horse battery staple")


class CreatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Creator

    user = factory.SubFactory(UserFactory)
    email_confirmed_at = factory.LazyFunction(timezone.now)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Lab {n}")


class PhotoFactory(factory.django.DjangoModelFactory):
    """A photo row with random hashes. Use registry services for real registration."""

    class Meta:
        model = Photo

    creator = factory.SubFactory(CreatorFactory)
    sha256 = factory.LazyFunction(lambda: secrets.token_hex(32))
    pdq = factory.LazyFunction(lambda: secrets.token_hex(32))
    pdq_quality = 100
    phash = factory.LazyFunction(lambda: secrets.token_hex(8))
    width = 640
    height = 480
    registered_version = 0


PASSWORD = "correct horse battery staple"


def revoked_api_key(organization: Organization) -> str:
    """A raw API key of ``organization`` that has been revoked."""
    key, raw = api_key_create(organization=organization, name="old")
    api_keys_revoke(key_ids=[key.pk])
    return raw


def expired_api_key(organization: Organization) -> str:
    """A raw API key of ``organization`` that expired a second ago."""
    key, raw = api_key_create(organization=organization, name="old")
    OrganizationAPIKey.objects.filter(pk=key.pk).update(
        expiry_date=timezone.now() - timedelta(seconds=1)
    )
    return raw
