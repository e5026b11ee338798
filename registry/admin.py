"""Operator admin for creators, photos, claims, tokens and the consent ledger.

Everything that carries a registry version is evidence: it is written by the
services (which append to the ledger), never typed into an admin form. So these
pages show and search; the few changes an operator may make are admin actions
that call the same services a creator's own request would.

Scale: foreign keys are shown read-only (no <select> of every creator is ever
rendered), list pages join what they display, and the big tables skip the
unfiltered COUNT(*) that Django shows next to search results.

Every admin here derives from config.admin_guards.GuardedModelAdmin: a filter
value or selection PostgreSQL cannot take is an invalid lookup, not a 500.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest

from config.admin_guards import GuardedModelAdmin
from registry import services
from registry.models import Claim, ConsentEvent, Creator, PersonalToken, Photo

# The operators' own accounts: Django's admins, with the guards.
for auth_model in (User, Group):
    if admin.site.is_registered(auth_model):
        admin.site.unregister(auth_model)


@admin.register(User)
class OperatorUserAdmin(GuardedModelAdmin, auth_admin.UserAdmin):
    pass


@admin.register(Group)
class OperatorGroupAdmin(GuardedModelAdmin, auth_admin.GroupAdmin):
    pass


class EvidenceAdmin(GuardedModelAdmin):
    """Rows created by services only: no add and no delete from the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


class ReadOnlyAdmin(EvidenceAdmin):
    """Evidence that not even an admin action changes: shown and searched only."""

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


@admin.register(Creator)
class CreatorAdmin(EvidenceAdmin):
    # Deleting an account must settle its opt-outs (optout.services.creator_delete);
    # suspending (and lifting a suspension) is the operator's lever here. Each
    # leaves an entry in the creator's admin history.
    list_display = (
        "__str__",
        "public_id",
        "email_confirmed_at",
        "suspended_at",
        "anonymized_at",
        "created_at",
    )
    list_select_related = ("user",)
    list_filter = (
        ("email_confirmed_at", admin.EmptyFieldListFilter),
        ("suspended_at", admin.EmptyFieldListFilter),
        ("anonymized_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("=public_id", "user__email")
    readonly_fields = (
        "public_id",
        "user",
        "email_confirmed_at",
        "suspended_at",
        "anonymized_at",
        "created_at",
    )
    actions = ("suspend", "unsuspend")

    @admin.action(description="Suspend selected creators", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[Creator]) -> None:
        suspended = 0
        for creator in queryset.filter(suspended_at__isnull=True):
            services.creator_suspend(creator=creator)
            self.log_change(request, creator, "Suspended.")
            suspended += 1
        self.message_user(request, f"Suspended {suspended} creator(s).", messages.SUCCESS)

    @admin.action(description="Lift the suspension of selected creators", permissions=["change"])
    def unsuspend(self, request: HttpRequest, queryset: QuerySet[Creator]) -> None:
        lifted = 0
        for creator in queryset.filter(suspended_at__isnull=False):
            services.creator_unsuspend(creator=creator)
            self.log_change(request, creator, "Suspension lifted.")
            lifted += 1
        self.message_user(
            request, f"Lifted the suspension of {lifted} creator(s).", messages.SUCCESS
        )


@admin.register(Photo)
class PhotoAdmin(EvidenceAdmin):
    list_display = (
        "public_id",
        "creator",
        "original_filename",
        "sha256",
        "pdq_quality",
        "registered_version",
        "channel",
        "created_at",
    )
    list_select_related = ("creator__user",)
    list_filter = ("channel",)
    # Exact hash search uses photo_sha256_idx; a hash pasted from a pipeline's
    # report finds its photo.
    search_fields = ("=sha256", "=pdq", "=phash", "=public_id", "=creator__public_id")
    show_full_result_count = False
    # Hashes are what matching compares; an edited hash would be a different photo.
    readonly_fields = (
        "public_id",
        "creator",
        "sha256",
        "pdq",
        "pdq_quality",
        "phash",
        "colour",
        "variant_count",
        "width",
        "height",
        "original_filename",
        "channel",
        "registered_version",
        "created_at",
        "updated_at",
    )

    @admin.display(description="variants")
    def variant_count(self, photo: Photo) -> int:
        """Derived variants stored with the photo (mirror, crops, rotations)."""
        return photo.variant_count


@admin.register(Claim)
class ClaimAdmin(EvidenceAdmin):
    list_display = ("public_id", "creator", "kind", "value", "registered_version", "created_at")
    list_select_related = ("creator__user",)
    list_filter = ("kind", "channel")
    search_fields = ("value", "=public_id", "=creator__public_id")
    readonly_fields = (
        "public_id",
        "creator",
        "kind",
        "value",
        "channel",
        "registered_version",
        "created_at",
    )


@admin.register(PersonalToken)
class PersonalTokenAdmin(EvidenceAdmin):
    # A token is created by its creator (the raw value is shown once); operators
    # can only revoke it.
    list_display = ("name", "prefix", "creator", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("creator__user",)
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "=prefix", "=public_id", "creator__user__email")
    readonly_fields = (
        "public_id",
        "creator",
        "name",
        "prefix",
        "digest",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    actions = ("revoke",)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[PersonalToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.token_revoke(token=token)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdmin):
    """The ledger, read-only: PostgreSQL refuses UPDATE and DELETE anyway; the
    admin does not offer them."""

    list_display = (
        "registry_version",
        "kind",
        "creator_public_id",
        "subject_public_id",
        "actor",
        "channel",
        "notice_version",
        "created_at",
    )
    list_filter = ("kind", "channel")
    search_fields = ("=creator_public_id", "=subject_public_id", "=registry_version", "actor")
    show_full_result_count = False
    readonly_fields = (
        "registry_version",
        "kind",
        "creator_public_id",
        "subject_public_id",
        "actor",
        "channel",
        "notice_version",
        "details",
        "created_at",
    )
