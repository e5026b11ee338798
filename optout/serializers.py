"""Serializers of the creator REST API for opt-outs. Public ids only."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import CappedErrorsListField, ClosedSerializer
from optout.models import OptOut, Organization
from optout.uses import USES
from registry.models import Claim, Photo

_USES_ALLOWED = ", ".join(USES)
_SCOPES_ALLOWED = ", ".join(OptOut.Scope.values)


class OptOutFileSerializer(ClosedSerializer):
    """An opt-out to file, or to change one into. A key that is not a field (a
    misspelt `exception`) is a 400 naming it: never dropped, so the opt-out
    filed is always the one asked for."""

    uses = CappedErrorsListField(
        child=serializers.ChoiceField(
            choices=USES,
            error_messages={"invalid_choice": "unknown use {input!r}; allowed: " + _USES_ALLOWED},
        ),
        allow_empty=False,
        min_length=1,  # allow_empty=False alone leaves minItems out of the schema
        error_messages={"empty": "choose at least one use from " + _USES_ALLOWED},
        help_text="Refused uses. Refusing `ai_training` also refuses `ai_generative_training`.",
    )
    scope = serializers.ChoiceField(
        choices=OptOut.Scope.choices,
        error_messages={"invalid_choice": "unknown scope {input!r}; allowed: " + _SCOPES_ALLOWED},
        help_text="`all_photos` covers future photos too.",
    )
    photos = CappedErrorsListField(
        child=serializers.UUIDField(), required=False, help_text="With scope `photos`."
    )
    claims = CappedErrorsListField(
        child=serializers.UUIDField(), required=False, help_text="With scope `claims`."
    )
    exceptions = CappedErrorsListField(
        child=serializers.UUIDField(),
        required=False,
        help_text="Organizations granted consent despite this opt-out.",
    )


class OptOutSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    uses = serializers.ListField(child=serializers.ChoiceField(choices=USES), read_only=True)
    photos: serializers.SlugRelatedField[Photo] = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="public_id"
    )
    claims: serializers.SlugRelatedField[Claim] = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="public_id"
    )
    exceptions: serializers.SlugRelatedField[Organization] = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="public_id"
    )
    status = serializers.SerializerMethodField()
    replaces: serializers.SlugRelatedField[OptOut] = serializers.SlugRelatedField(
        read_only=True,
        slug_field="public_id",
        allow_null=True,
        help_text="The opt-out this one changed (it stopped at this one's `filed_version`).",
    )
    replaced_by = serializers.SerializerMethodField(
        help_text="The opt-out this one was changed into (then it is withdrawn), or null."
    )

    class Meta:
        model = OptOut
        fields = [
            "id",
            "uses",
            "scope",
            "photos",
            "claims",
            "exceptions",
            "status",
            "filed_version",
            "effective_at",
            "withdrawn_at",
            "withdrawn_version",
            "replaces",
            "replaced_by",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["active", "withdrawn"]))
    def get_status(self, opt_out: OptOut) -> str:
        return "active" if opt_out.is_active else "withdrawn"

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_replaced_by(self, opt_out: OptOut) -> str | None:
        # .all(): served by the list's prefetch. At most one: only an active
        # opt-out can be changed, and changing it withdraws it.
        successors = [str(successor.public_id) for successor in opt_out.replaced_by.all()]
        return successors[0] if successors else None
