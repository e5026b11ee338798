"""Operator admin for organizations and opt-outs.

Opt-outs are evidence: they are filed by creators and withdrawn, never deleted
or edited. The one operator change is the "withdraw" action, which goes through
the same service as a creator's own withdrawal and so takes its ledger version.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from optout import services
from optout.models import OptOut, Organization
from registry.models import Channel


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "public_id", "created_at", "suspended_at")
    list_filter = (("suspended_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "=public_id")
    readonly_fields = ("public_id", "created_at")


@admin.register(OptOut)
class OptOutAdmin(admin.ModelAdmin):
    list_display = (
        "public_id",
        "creator",
        "uses",
        "scope",
        "channel",
        "filed_version",
        "withdrawn_version",
        "is_active",
        "notice_sent_at",
        "created_at",
    )
    list_select_related = ("creator__user",)
    list_filter = (
        "scope",
        "channel",
        ("withdrawn_at", admin.EmptyFieldListFilter),
        ("notice_sent_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("=public_id", "=creator__public_id", "creator__user__email")
    show_full_result_count = False
    # The chosen photos, claims and exceptions are shown as counts and names:
    # an opt-out over thousands of photos must not render thousands of links.
    fields = (
        "public_id",
        "creator",
        "uses",
        "scope",
        "photo_count",
        "claim_count",
        "exception_names",
        "channel",
        "notice_version",
        "effective_at",
        "filed_version",
        "withdrawn_at",
        "withdrawn_version",
        "notice_sent_at",
        "created_at",
    )
    readonly_fields = fields
    actions = ("withdraw",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OptOut]:
        return super().get_queryset(request).select_related("creator__user")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    @admin.display(boolean=True, description="active")
    def is_active(self, obj: OptOut) -> bool:
        return obj.is_active

    @admin.display(description="photos")
    def photo_count(self, obj: OptOut) -> int:
        return obj.photos.count()

    @admin.display(description="claims")
    def claim_count(self, obj: OptOut) -> int:
        return obj.claims.count()

    @admin.display(description="exceptions (organizations)")
    def exception_names(self, obj: OptOut) -> str:
        return ", ".join(org.name for org in obj.exceptions.all()) or "-"

    @admin.action(description="Withdraw selected opt-outs", permissions=["change"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[OptOut]) -> None:
        actor = f"operator:{request.user.get_username()}"
        active = list(queryset.filter(withdrawn_at__isnull=True).select_related("creator"))
        for opt_out in active:
            services.opt_out_withdraw(
                creator=opt_out.creator,
                opt_out_id=opt_out.public_id,
                channel=Channel.ADMIN,
                actor=actor,
            )
        already = queryset.count() - len(active)
        self.message_user(
            request,
            f"Withdrew {len(active)} opt-out(s); {already} already withdrawn.",
            messages.SUCCESS,
        )
