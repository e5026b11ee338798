"""Forms of the opt-out pages. Choices are built from the signed-in creator's own
photos and claims, so another creator's id is "not one of the available choices"."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib.auth.base_user import AbstractBaseUser

from optout.models import OptOut
from optout.selectors import OptOutChoices
from optout.uses import USE_LABELS, USES

KEEP_OPT_OUTS = "keep"
WITHDRAW_OPT_OUTS = "withdraw"


class OptOutFileForm(forms.Form):
    uses = forms.MultipleChoiceField(
        label="Uses you refuse",
        choices=[(use, USE_LABELS[use]) for use in USES],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one use to refuse."},
    )
    scope = forms.ChoiceField(
        label="What the opt-out covers",
        choices=OptOut.Scope.choices,
        widget=forms.RadioSelect,
        initial=OptOut.Scope.ALL_PHOTOS,
    )
    photos = forms.MultipleChoiceField(
        label="Chosen photos (for “chosen photos”)",
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    claims = forms.MultipleChoiceField(
        label="Chosen claims (for “chosen claims”)",
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    exceptions = forms.MultipleChoiceField(
        label="Exceptions: organizations that may still use your works",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to refuse everyone.",
    )

    def __init__(self, *args: Any, choices: OptOutChoices, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_choices(
            "photos",
            [
                (str(photo.public_id), photo.original_filename or f"sha256 {photo.sha256[:16]}…")
                for photo in choices.photos
            ],
        )
        self._set_choices(
            "claims",
            [
                (str(claim.public_id), f"{claim.get_kind_display()}: {claim.value}")
                for claim in choices.claims
            ],
        )
        self._set_choices(
            "exceptions", [(str(org.public_id), org.name) for org in choices.organizations]
        )

    @staticmethod
    def initial_of(opt_out: OptOut) -> dict[str, Any]:
        """The form's values for ``opt_out`` as it is (to change it)."""
        return {
            "uses": list(opt_out.uses),
            "scope": opt_out.scope,
            "photos": [str(photo.public_id) for photo in opt_out.photos.all()],
            "claims": [str(claim.public_id) for claim in opt_out.claims.all()],
            "exceptions": [str(org.public_id) for org in opt_out.exceptions.all()],
        }

    def _set_choices(self, name: str, choices: list[tuple[str, str]]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = choices

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "uses": data["uses"],
            "scope": data["scope"],
            "photos": [uuid.UUID(value) for value in data["photos"]],
            "claims": [uuid.UUID(value) for value in data["claims"]],
            "exceptions": [uuid.UUID(value) for value in data["exceptions"]],
        }


class AccountDeleteForm(forms.Form):
    opt_outs = forms.ChoiceField(
        label="What happens to your opt-outs",
        choices=[
            (
                KEEP_OPT_OUTS,
                "Keep my opt-outs in force as anonymous hash-only suppression records",
            ),
            (WITHDRAW_OPT_OUTS, "Withdraw my opt-outs and delete my photos"),
        ],
        widget=forms.RadioSelect,
        error_messages={"required": "Choose what happens to your opt-outs."},
    )
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return password

    @property
    def keep_opt_outs(self) -> bool:
        return bool(self.cleaned_data["opt_outs"] == KEEP_OPT_OUTS)
