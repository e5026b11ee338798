"""Operator admin for organizations and opt-outs.

Opt-outs are evidence: they are filed by creators, changed (superseded by a new
opt-out that ``replaces`` them) and withdrawn, never deleted or edited. The one
operator change is the "withdraw" action, which goes through the same service
as a creator's own withdrawal and so takes its ledger version.

Every admin here derives from config.admin_guards.GuardedModelAdmin: a filter
value or selection PostgreSQL cannot take is an invalid lookup, not a 500.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from config.admin_guards import GuardedModelAdmin
from optout import services
from optout.models import (
    Batch,
    BatchResult,
    Chunk,
    ChunkShardResult,
    EngineState,
    OptOut,
    Organization,
    OrganizationAPIKey,
    PipelineRequest,
)
from registry import admin as registry_admin
from registry.models import Channel

# The library's own, organization-less APIKey model is unused: keys here belong
# to organizations (OrganizationAPIKey). Hide its admin so operators find one list.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)

# The admin index links to the operator dashboard (optout.operator_views).
admin.site.index_template = "admin/optout_index.html"


class OrganizationAPIKeyInline(admin.TabularInline):
    """The organization's keys, read-only; issue and revoke them in the key admin."""

    model = OrganizationAPIKey
    fields = ("prefix", "name", "scopes", "created", "expiry_date", "revoked")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Organization)
class OrganizationAdmin(GuardedModelAdmin):
    list_display = ("name", "public_id", "created_at", "suspended_at")
    list_filter = (("suspended_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "=public_id")
    readonly_fields = ("public_id", "created_at")
    inlines = (OrganizationAPIKeyInline,)


@admin.register(OptOut)
class OptOutAdmin(GuardedModelAdmin):
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
        "replaces",
        "notice_sent_at",
        "created_at",
    )
    readonly_fields = fields
    actions = ("withdraw",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OptOut]:
        return super().get_queryset(request).select_related("creator__user", "replaces")

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


class OrganizationAPIKeyForm(forms.ModelForm):
    """The key admin's form: an expiry in the past is refused, as
    services.api_key_create refuses it (a key created expired is useless, and
    its raw value would be shown anyway)."""

    class Meta:
        model = OrganizationAPIKey
        fields = ("organization", "name", "scopes", "expiry_date", "revoked")

    def clean_expiry_date(self) -> Any:
        expiry = self.cleaned_data.get("expiry_date")
        # An existing key keeps the expiry it has (perhaps passed); a new or
        # changed one must be ahead.
        changed = self.instance.pk is None or "expiry_date" in self.changed_data
        if expiry is not None and changed and expiry <= timezone.now():
            raise forms.ValidationError(
                "The expiry must be in the future (revoke a key to stop it now).",
                code="expiry_in_past",
            )
        return expiry


@admin.register(OrganizationAPIKey)
class OrganizationAPIKeyAdmin(GuardedModelAdmin, APIKeyModelAdmin):
    """Keys are shown once, in a message, when created here (APIKeyModelAdmin);
    only their hash is stored. Revoking cannot be undone; keys are never deleted,
    so the audit log keeps naming them."""

    form = OrganizationAPIKeyForm
    fields = ("prefix", "organization", "name", "scopes", "expiry_date", "revoked")
    # The base class declares these as fixed-length tuples; ours are longer.
    list_display = (  # type: ignore[assignment]
        "prefix",
        "name",
        "organization",
        "scopes",
        "created",
        "expiry_date",
        "_has_expired",
        "revoked",
    )
    list_select_related = ("organization",)
    list_filter = ("organization", "revoked", "expiry_date", "created")  # type: ignore[assignment]
    search_fields = ("name", "prefix", "organization__name")  # type: ignore[assignment]
    actions = ("revoke",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None:
            # A key never moves to another organization.
            fields += ("organization",)
            if obj.revoked:
                fields += ("scopes",)
        return fields

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "scopes":
            # Checkboxes instead of a JSON text box; the model stores the chosen list.
            return forms.MultipleChoiceField(
                choices=OrganizationAPIKey.Scope.choices,
                widget=forms.CheckboxSelectMultiple,
                initial=list(OrganizationAPIKey.Scope.values),
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[OrganizationAPIKey]) -> None:
        revoked = services.api_keys_revoke(key_ids=list(queryset.values_list("pk", flat=True)))
        already = queryset.count() - revoked
        self.message_user(
            request, f"Revoked {revoked} key(s); {already} already revoked.", messages.SUCCESS
        )


class ReadOnlyAdmin(registry_admin.ReadOnlyAdmin):
    """Read-only, on tables too big for an unfiltered COUNT(*) per page."""

    show_full_result_count = False


@admin.register(PipelineRequest)
class PipelineRequestAdmin(ReadOnlyAdmin):
    """The audit log of pipeline requests: read-only evidence."""

    list_display = (
        "created_at",
        "organization",
        "key_prefix",
        "endpoint",
        "use",
        "record_count",
        "excluded_count",
        "registry_version",
    )
    list_select_related = ("organization",)
    list_filter = ("organization", "endpoint", "created_at")
    search_fields = ("=key_prefix", "organization__name")
    date_hierarchy = "created_at"


# --- batches: read-only; pipelines create them, workers move them on ------------


def _changelist_link(model: str, batch: Batch, label: str) -> str:
    url = reverse(f"admin:optout_{model}_changelist")
    return format_html('<a href="{}?q={}">{}</a>', url, batch.public_id, label)


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = (
        "public_id",
        "organization",
        "use",
        "format",
        "status",
        "record_count",
        "excluded_count",
        "invalid_count",
        "chunks",
        "registry_version",
        "created_at",
        "finished_at",
    )
    list_select_related = ("organization",)
    list_filter = ("status", "organization", "use", "format")
    search_fields = ("=public_id",)
    # Chunks and results can be many: linked as filtered lists, never inlined.
    fields = (
        "public_id",
        "organization",
        "api_key",
        "use",
        "format",
        "status",
        "failure_reason",
        "manifest_name",
        "manifest_sha256",
        "manifest_bytes",
        "idempotency_key",
        "thresholds",
        "registry_version",
        "record_count",
        "chunks",
        "excluded_count",
        "invalid_count",
        "chunk_list",
        "result_list",
        "spool_path",
        "receipt",
        "created_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    @admin.display(description="chunks done")
    def chunks(self, obj: Batch) -> str:
        return f"{obj.chunks_done} / {obj.chunk_count}"

    @admin.display(description="chunk list")
    def chunk_list(self, obj: Batch) -> str:
        return _changelist_link("chunk", obj, f"{obj.chunk_count} chunks")

    @admin.display(description="excluded and invalid records")
    def result_list(self, obj: Batch) -> str:
        return _changelist_link("batchresult", obj, "results")


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyAdmin):
    list_display = (
        "batch",
        "index",
        "status",
        "record_count",
        "attempts",
        "lease_expires_at",
        "excluded_count",
        "invalid_count",
        "done_at",
    )
    list_select_related = ("batch",)
    list_filter = ("status",)
    search_fields = ("=batch__public_id",)
    # Not the records: thousands of them per chunk, useless on screen.
    fields = list_display
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Chunk]:
        return super().get_queryset(request).defer("payload")


@admin.register(BatchResult)
class BatchResultAdmin(ReadOnlyAdmin):
    list_display = ("batch", "row", "record_id", "decision", "reason")
    list_select_related = ("batch",)
    list_filter = ("decision",)
    search_fields = ("=batch__public_id", "=record_id")
    fields = ("batch", "row", "record_id", "decision", "matches", "reason")
    readonly_fields = fields


@admin.register(ChunkShardResult)
class ChunkShardResultAdmin(ReadOnlyAdmin):
    """One index shard's answer for one chunk (OPTOUT_SHARDS > 1), before the
    answers are merged into batch results."""

    list_display = ("chunk", "shard", "shards", "registry_version", "created_at")
    list_select_related = ("chunk__batch",)
    list_filter = ("shards", "shard")
    search_fields = ("=chunk__batch__public_id",)
    # Not the decisions: thousands of rows of them per chunk.
    fields = list_display
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChunkShardResult]:
        return super().get_queryset(request).defer("decisions")


@admin.register(EngineState)
class EngineStateAdmin(ReadOnlyAdmin):
    """Index freshness: what each matching engine process has loaded, per hash kind
    (the same rows GET /api/v1/registry lists)."""

    list_display = ("worker", "shard", "shards", "kind", "loaded_version", "size", "updated_at")
    list_filter = ("kind", "shards", "shard")
    search_fields = ("worker",)
