"""The operator admin on odd input (config.admin_guards), lifting a suspension,
and the key admin's expiry: refused or redirected, never a 500."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from config.admin_guards import NO_VALID_SELECTION, GuardedModelAdmin
from optout.models import OptOut, OrganizationAPIKey, PipelineRequest
from optout.services import api_key_create, opt_out_file
from registry.models import ConsentEvent, Creator, PersonalToken
from registry.services import creator_suspend, creator_unsuspend, token_create
from tests.factories import PASSWORD, CreatorFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

# Filter values the database or Python's dates cannot take. Each used to be a 500
# on at least one changelist (PostgreSQL: NUL in text, a bad regular expression,
# a range of three; Python: a year outside 1-9999).
ODD_FILTERS = [
    "status__exact=%00",
    "use=%00",
    "format=%00",
    "scope__exact=%00",
    "channel=%00",
    "kind=%00",
    "kind__exact=x%00",
    "worker=%00",
    "decision__exact=%00",
    "username=%00",
    "name=%00",
    "details__contains=%00",
    "created_at__year=99999",
    "created_at__year=0",
    "created_at__year__gte=99999",
    "created_at__iso_year=99999",
    "updated_at__year=99999",
    "expiry_date__year=99999",
    "date_joined__year=-5",
    "name__regex=%5B",
    "value__iregex=(",
    "worker__regex=%5B",
    "id__range=1,2,3",
]


def changelists() -> list[str]:
    return [
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for model in admin.site._registry
    ]


def world() -> None:
    """A row in every table the filters touch, so each query really runs."""
    creator = CreatorFactory()
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    token_create(creator=creator, name="laptop")
    api_key_create(organization=OrganizationFactory(), name="crawler")


def test_every_admin_of_the_site_is_guarded() -> None:
    unguarded = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, GuardedModelAdmin)
    ]

    assert len(admin.site._registry) >= 16
    assert unguarded == []


@pytest.mark.parametrize("query", ODD_FILTERS)
def test_an_odd_filter_value_is_an_invalid_lookup_on_every_changelist(
    admin_client: Client, query: str
) -> None:
    world()
    answers = {}
    for url in changelists():
        try:
            with transaction.atomic():
                response = admin_client.get(f"{url}?{query}")
            answers[url] = (response.status_code, response.get("Location"))
        except Exception as error:  # the old 500s, named
            answers[url] = (500, f"{type(error).__name__}: {error}")

    # Django admin's own answer to a lookup it cannot make: back to the list.
    assert answers == {url: (302, f"{url}?e=1") for url in changelists()}


@pytest.mark.parametrize(
    "query",
    [
        "created_at__year=9999",
        "created_at__year=9999&created_at__month=12",
        "created_at__year=9999&created_at__month=12&created_at__day=31",
    ],
)
def test_the_date_hierarchy_past_the_last_date_is_an_invalid_lookup(
    admin_client: Client, query: str
) -> None:
    url = "/admin/optout/pipelinerequest/"

    response = admin_client.get(f"{url}?{query}")
    # The same year on a plain date field is an ordinary filter.
    plain = admin_client.get(f"/admin/registry/consentevent/?{query}")

    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    assert plain.status_code == 200
    assert PipelineRequest.objects.count() == 0


def test_good_filters_still_filter(admin_client: Client) -> None:
    world()

    response = admin_client.get(
        "/admin/registry/consentevent/",
        {"kind__exact": "opt_out_filed", "created_at__year": timezone.now().year},
    )

    assert response.status_code == 200
    assert [event.kind for event in response.context["cl"].result_list] == ["opt_out_filed"]


# Not an id of any model: a NUL (PostgreSQL text cannot hold it) or nothing.
NOT_IDS = ["\x00", "1\x00", ""]
# Not an integer id either (the API key's id is text, which these can be).
NOT_INTEGER_IDS = ["abc", "1.5", "99999999999999999999"]
ACTIONS = [
    ("registry/creator", "suspend"),
    ("registry/creator", "unsuspend"),
    ("registry/personaltoken", "revoke"),
    ("optout/optout", "withdraw"),
    ("auth/user", "delete_selected"),
    ("optout/organizationapikey", "revoke"),
]


@pytest.mark.parametrize(
    ("model", "action", "selected"),
    [
        (model, action, selected)
        for model, action in ACTIONS
        for selected in NOT_IDS + ([] if model == "optout/organizationapikey" else NOT_INTEGER_IDS)
    ],
)
def test_an_action_on_a_selection_that_is_not_an_id_changes_nothing(
    admin_client: Client, model: str, action: str, selected: str
) -> None:
    world()
    creator = Creator.objects.get(user__username__startswith="creator")
    creator_suspend(creator=creator)
    valid = {
        "registry/creator": creator.pk,
        "registry/personaltoken": PersonalToken.objects.get().pk,
        "optout/optout": OptOut.objects.get().pk,
        "optout/organizationapikey": OrganizationAPIKey.objects.get().pk,
        "auth/user": creator.user_id,
    }[model]
    events = ConsentEvent.objects.count()
    url = f"/admin/{model}/"

    response = admin_client.post(
        url, {"action": action, "_selected_action": [valid, selected], "index": 0}, follow=True
    )

    assert response.redirect_chain == [(url, 302)]
    assert [str(m) for m in response.context["messages"]] == [NO_VALID_SELECTION]
    assert ConsentEvent.objects.count() == events
    assert Creator.objects.get(pk=creator.pk).suspended_at is not None
    assert PersonalToken.objects.get().revoked_at is None
    assert OptOut.objects.get().withdrawn_at is None
    assert not OrganizationAPIKey.objects.get().revoked
    assert Creator.objects.get(pk=creator.pk).user is not None


def test_a_change_page_for_an_id_with_a_nul_says_it_does_not_exist(admin_client: Client) -> None:
    world()

    response = admin_client.get("/admin/optout/organizationapikey/%00/change/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize("value", ["tomorrow", "2030-01-01", "%00"])
def test_an_add_page_with_a_date_time_in_its_query_string_renders(
    admin_client: Client, value: str
) -> None:
    response = admin_client.get(f"/admin/optout/organizationapikey/add/?expiry_date={value}")
    organization = admin_client.get(f"/admin/optout/organization/add/?suspended_at={value}")

    assert (response.status_code, organization.status_code) == (200, 200)


# --- lifting a suspension ------------------------------------------------------------


def act(client: Client, action: str, creators: list[Creator]) -> list[str]:
    response = client.post(
        "/admin/registry/creator/",
        {"action": action, "_selected_action": [c.pk for c in creators], "index": 0},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_lifting_a_suspension_in_the_admin_lets_the_creator_back_in(
    admin_client: Client, client: Client
) -> None:
    creator = CreatorFactory()
    assert creator.user is not None
    _, raw = token_create(creator=creator, name="laptop")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    events = ConsentEvent.objects.count()

    suspended = act(admin_client, "suspend", [creator])
    refused = api.get("/api/v1/me/claims").status_code
    lifted = act(admin_client, "unsuspend", [creator])
    allowed = api.get("/api/v1/me/claims").status_code
    login = client.post("/accounts/login/", {"username": creator.user.email, "password": PASSWORD})

    assert suspended == ["Suspended 1 creator(s)."]
    assert lifted == ["Lifted the suspension of 1 creator(s)."]
    assert (refused, allowed) == (403, 200)
    assert login.status_code == 302
    assert "_auth_user_id" in client.session
    assert Creator.objects.get(pk=creator.pk).suspended_at is None
    # Like suspending, lifting changes no consent: no ledger event; the admin's
    # history of the creator names both, and who did them.
    assert ConsentEvent.objects.count() == events
    history = LogEntry.objects.filter(object_id=str(creator.pk)).order_by("pk")
    assert [(e.user.get_username(), e.get_change_message()) for e in history] == [
        ("admin", "Suspended."),
        ("admin", "Suspension lifted."),
    ]


def test_lifting_touches_only_the_selected_suspended_creators(admin_client: Client) -> None:
    chosen, active, bystander = CreatorFactory(), CreatorFactory(), CreatorFactory()
    for creator in (chosen, bystander):
        creator_suspend(creator=creator)
    bystander_since = Creator.objects.get(pk=bystander.pk).suspended_at

    messages = act(admin_client, "unsuspend", [chosen, active])

    assert messages == ["Lifted the suspension of 1 creator(s)."]
    assert Creator.objects.get(pk=chosen.pk).suspended_at is None
    assert Creator.objects.get(pk=active.pk).suspended_at is None
    assert Creator.objects.get(pk=bystander.pk).suspended_at == bystander_since
    assert LogEntry.objects.filter(object_id=str(active.pk)).count() == 0


def test_creator_unsuspend_is_idempotent() -> None:
    creator = creator_suspend(creator=CreatorFactory())

    first = creator_unsuspend(creator=creator)
    second = creator_unsuspend(creator=Creator.objects.get(pk=creator.pk))

    assert (first.suspended_at, second.suspended_at) == (None, None)
    assert not Creator.objects.get(pk=creator.pk).is_suspended


# --- the key admin's expiry ------------------------------------------------------------


def key_form(organization_pk: int, expiry: str, name: str = "crawler") -> dict[str, object]:
    date, _, time = expiry.partition(" ")
    return {
        "organization": organization_pk,
        "name": name,
        "scopes": ["lookup"],
        "expiry_date_0": date,
        "expiry_date_1": time,
    }


@pytest.mark.parametrize("ago", [timedelta(days=365), timedelta(minutes=1)])
def test_the_key_admin_refuses_an_expiry_in_the_past(admin_client: Client, ago: timedelta) -> None:
    organization = OrganizationFactory()
    past = (timezone.now() - ago).strftime("%Y-%m-%d %H:%M:%S")

    response = admin_client.post(
        "/admin/optout/organizationapikey/add/", key_form(organization.pk, past)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "expiry_date": ["The expiry must be in the future (revoke a key to stop it now)."]
    }
    assert OrganizationAPIKey.objects.count() == 0
    assert not [m for m in response.context["messages"] if "The API key for" in str(m)]


def test_the_key_admin_takes_a_future_expiry(admin_client: Client) -> None:
    organization = OrganizationFactory()
    future = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")

    response = admin_client.post(
        "/admin/optout/organizationapikey/add/", key_form(organization.pk, future)
    )

    assert response.status_code == 302
    key = OrganizationAPIKey.objects.get()
    assert key.expiry_date is not None and key.expiry_date > timezone.now()


def test_an_expired_key_can_be_renamed_but_not_given_another_past_expiry(
    admin_client: Client,
) -> None:
    organization = OrganizationFactory()
    key, _ = api_key_create(organization=organization, name="crawler")
    expired = timezone.now() - timedelta(days=2)
    OrganizationAPIKey.objects.filter(pk=key.pk).update(expiry_date=expired)
    url = f"/admin/optout/organizationapikey/{key.pk}/change/"
    # As the change page shows it (and a browser sends it back): to the second.
    kept = expired.strftime("%Y-%m-%d %H:%M:%S")
    earlier = (expired - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")

    renamed = admin_client.post(url, key_form(organization.pk, kept, name="old crawler"))
    moved = admin_client.post(url, key_form(organization.pk, earlier, name="old crawler"))

    assert renamed.status_code == 302
    assert moved.status_code == 200
    assert "expiry_date" in moved.context["adminform"].form.errors
    key.refresh_from_db()
    assert (key.name, key.expiry_date) == ("old crawler", expired.replace(microsecond=0))
