"""Issuing and revoking organization API keys: `manage.py create_api_key`, the
api_key_create service, and the key and audit-log admin."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from optout import services
from optout.models import Organization, OrganizationAPIKey, PipelineRequest
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

LOOKUP_BODY = {"use": "ai_training", "records": [{"id": "r1", "sha256": "a" * 64}]}


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().splitlines()


def lookup_with(raw: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client.post("/api/v1/lookup", LOOKUP_BODY, format="json").status_code


# --- manage.py create_api_key ------------------------------------------------------


def test_create_api_key_prints_a_working_key_alone_on_the_last_line() -> None:
    lines = run("Acme Vision")

    raw = lines[-1]
    key = OrganizationAPIKey.objects.get_from_key(raw)
    organization = Organization.objects.get(name="Acme Vision")
    assert isinstance(key, OrganizationAPIKey)
    assert key.organization == organization
    assert key.scopes == ["lookup", "batches"]
    assert key.expiry_date is None
    assert key.name == "command line"
    assert raw.split(".")[0] == key.prefix
    assert lines[:-1] == [
        f"Created organization Acme Vision ({organization.public_id}).",
        f"API key {key.prefix} 'command line', scopes lookup, batches, expires never.",
        "API key (shown once; send it as 'Authorization: Api-Key <key>'):",
    ]
    assert lookup_with(raw) == 200


def test_create_api_key_reuses_the_organization_and_applies_name_scopes_and_expiry() -> None:
    organization = OrganizationFactory(name="Acme Vision")
    before = timezone.now()

    lines = run(
        "Acme Vision", "--name", "nightly crawl", "--scopes", "lookup", "--expires-days", "30"
    )

    key = OrganizationAPIKey.objects.get_from_key(lines[-1])
    assert isinstance(key, OrganizationAPIKey)
    assert Organization.objects.count() == 1
    assert key.organization == organization
    assert (key.name, key.scopes) == ("nightly crawl", ["lookup"])
    assert key.expiry_date is not None
    assert before + timedelta(days=30) <= key.expiry_date <= timezone.now() + timedelta(days=30)
    assert lines[0] == f"Existing organization Acme Vision ({organization.public_id})."
    assert lookup_with(lines[-1]) == 200


def test_a_key_without_the_lookup_scope_is_refused_by_lookup() -> None:
    lines = run("Acme Vision", "--scopes", "batches")

    assert lookup_with(lines[-1]) == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--scopes", "lookup,admin"],
            "unknown scope admin; allowed: lookup, batches",
        ),
        (["--scopes", ","], "choose at least one scope; allowed: lookup, batches"),
        (["--expires-days", "0"], "--expires-days must be a positive number of days."),
        (["--name", "  "], "name the key (for example the pipeline using it)"),
    ],
)
def test_create_api_key_refuses_bad_arguments_and_creates_nothing(
    args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as error:
        run("Acme Vision", *args)

    assert str(error.value) == message
    assert Organization.objects.count() == 0
    assert OrganizationAPIKey.objects.count() == 0


# --- api_key_create ---------------------------------------------------------------


def test_api_key_create_stores_only_a_hash_and_orders_scopes() -> None:
    organization = OrganizationFactory()

    key, raw = services.api_key_create(
        organization=organization, name="crawler", scopes=["batches", "lookup", "batches"]
    )

    stored = OrganizationAPIKey.objects.values().get(pk=key.pk)
    assert raw not in str(stored)
    assert key.scopes == ["lookup", "batches"]
    assert OrganizationAPIKey.objects.get_from_key(raw) == key


def test_api_key_create_refuses_an_expiry_in_the_past() -> None:
    organization = OrganizationFactory()

    with pytest.raises(ValidationError) as error:
        services.api_key_create(
            organization=organization,
            name="crawler",
            expires_at=timezone.now() - timedelta(seconds=1),
        )

    assert error.value.message_dict == {"expires_at": ["the expiry must be in the future"]}
    assert OrganizationAPIKey.objects.count() == 0


def test_api_keys_revoke_is_idempotent() -> None:
    organization = OrganizationFactory()
    key, raw = services.api_key_create(organization=organization, name="crawler")

    first = services.api_keys_revoke(key_ids=[key.pk])
    second = services.api_keys_revoke(key_ids=[key.pk])

    assert (first, second) == (1, 0)
    assert lookup_with(raw) == 401


# --- admin -------------------------------------------------------------------------


def test_adding_a_key_in_the_admin_shows_it_once_and_it_works(admin_client: Client) -> None:
    organization = OrganizationFactory(name="Acme Vision")

    response = admin_client.post(
        "/admin/optout/organizationapikey/add/",
        {"organization": organization.pk, "name": "from the admin", "scopes": ["lookup"]},
        follow=True,
    )

    assert response.status_code == 200
    key = OrganizationAPIKey.objects.get()
    assert (key.organization, key.name, key.scopes) == (organization, "from the admin", ["lookup"])
    [message] = [str(m) for m in response.context["messages"] if "The API key for" in str(m)]
    raw = message.split("is: ", 1)[1].split(". ", 1)[0]
    assert OrganizationAPIKey.objects.get_from_key(raw) == key
    assert lookup_with(raw) == 200


def test_the_revoke_action_revokes_only_the_selected_keys(admin_client: Client) -> None:
    organization = OrganizationFactory()
    chosen, chosen_raw = services.api_key_create(organization=organization, name="old")
    _, kept_raw = services.api_key_create(organization=organization, name="new")

    response = admin_client.post(
        "/admin/optout/organizationapikey/",
        {"action": "revoke", "_selected_action": [chosen.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "Revoked 1 key(s); 0 already revoked."
    ]
    assert (lookup_with(chosen_raw), lookup_with(kept_raw)) == (401, 200)
    assert OrganizationAPIKey.objects.filter(revoked=True).get() == chosen


def test_key_admin_lists_filters_and_searches_by_organization(admin_client: Client) -> None:
    acme = OrganizationFactory(name="Acme Vision")
    other = OrganizationFactory(name="Other Lab")
    acme_key, _ = services.api_key_create(organization=acme, name="crawler")
    services.api_key_create(organization=other, name="crawler")

    search = admin_client.get("/admin/optout/organizationapikey/", {"q": "acme"})
    filtered = admin_client.get(
        "/admin/optout/organizationapikey/", {"organization__id__exact": acme.pk}
    )
    revoked = admin_client.get("/admin/optout/organizationapikey/", {"revoked__exact": "1"})
    change = admin_client.get(f"/admin/optout/organizationapikey/{acme_key.pk}/change/")
    organization_page = admin_client.get(f"/admin/optout/organization/{acme.pk}/change/")

    assert [k.pk for k in search.context["cl"].result_list] == [acme_key.pk]
    assert [k.pk for k in filtered.context["cl"].result_list] == [acme_key.pk]
    assert list(revoked.context["cl"].result_list) == []
    assert change.status_code == 200
    assert organization_page.status_code == 200
    assert acme_key.prefix.encode() in organization_page.content


def test_keys_cannot_be_deleted_from_the_admin(admin_client: Client) -> None:
    key, _ = services.api_key_create(organization=OrganizationFactory(), name="crawler")

    response = admin_client.post(
        f"/admin/optout/organizationapikey/{key.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 403
    assert OrganizationAPIKey.objects.filter(pk=key.pk).exists()


def test_the_pipeline_audit_log_is_read_only_in_the_admin(admin_client: Client) -> None:
    _, raw = services.api_key_create(organization=OrganizationFactory(), name="crawler")
    lookup_with(raw)
    row = PipelineRequest.objects.get()

    changelist = admin_client.get("/admin/optout/pipelinerequest/", {"endpoint__exact": "lookup"})
    view = admin_client.get(f"/admin/optout/pipelinerequest/{row.pk}/change/")
    add = admin_client.get("/admin/optout/pipelinerequest/add/")
    change = admin_client.post(
        f"/admin/optout/pipelinerequest/{row.pk}/change/", {"record_count": 99}
    )
    delete = admin_client.post(f"/admin/optout/pipelinerequest/{row.pk}/delete/", {"post": "yes"})

    assert [r.pk for r in changelist.context["cl"].result_list] == [row.pk]
    assert view.status_code == 200
    assert view.context["has_change_permission"] is False
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert PipelineRequest.objects.get().record_count == 1
