"""Forms of the creator pages. They check the shape of the input; the services
decide everything else and their ValidationErrors land on the same fields."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from registry.models import Claim

# Error code the login page looks for to offer a new confirmation link.
UNCONFIRMED = "unconfirmed"


class SignUpForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        max_length=150,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password1 = cleaned.get("password1")
        password2 = cleaned.get("password2")
        if password1 and password2:
            if password1 != password2:
                self.add_error("password2", "The two passwords differ.")
            else:
                try:
                    password_validation.validate_password(password1)
                except ValidationError as error:
                    self.add_error("password1", error)
        return cleaned


class LoginForm(AuthenticationForm):
    """Email + password; refuses unconfirmed, suspended and deleted creators."""

    username = forms.CharField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    error_messages = {
        "invalid_login": "That email and password do not match an account.",
        "inactive": "This account is inactive.",
    }

    def confirm_login_allowed(self, user: User) -> None:
        super().confirm_login_allowed(user)
        creator = getattr(user, "creator", None)
        if creator is None or creator.anonymized_at is not None:
            raise ValidationError("This is not a creator account.", code="not_creator")
        if creator.suspended_at is not None:
            raise ValidationError(
                "This account is suspended by the registry operators; contact them to "
                "have it reviewed.",
                code="suspended",
            )
        if creator.email_confirmed_at is None:
            raise ValidationError(
                "Confirm your email address first: open the link we emailed you. "
                "If it did not arrive or has expired, ask for a new one below.",
                code=UNCONFIRMED,
            )


class ResendConfirmationForm(forms.Form):
    email = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files under one field name (Django's documented recipe)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        items = list(data) if isinstance(data, list | tuple) else [data]
        files = [super(MultipleFileField, self).clean(item, initial) for item in items if item]
        if not files and self.required:
            raise ValidationError(self.error_messages["required"], code="required")
        return files


class PhotoUploadForm(forms.Form):
    photos = MultipleFileField(
        label="Photos or ZIP archives",
        help_text="JPEG, PNG, WEBP or GIF files, or ZIP archives of them. "
        "Choose as many as you like.",
        error_messages={"required": "Choose at least one photo or ZIP file."},
        # An empty file is one refused file among the others, as in the API
        # (registry.uploads.hash_files says "file is empty"), not a refused form.
        allow_empty_file=True,
        widget=MultipleFileInput(
            attrs={"accept": "image/jpeg,image/png,image/webp,image/gif,.zip,application/zip"}
        ),
    )


class HashesUploadForm(forms.Form):
    hashes = forms.FileField(
        label="Hashes file (JSONL)",
        help_text="One JSON object per line, as written by “optout hash ./photos > hashes.jsonl”.",
        error_messages={"required": "Choose a .jsonl file of hashes."},
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.txt,application/jsonl"}),
    )


class ClaimForm(forms.Form):
    kind = forms.ChoiceField(label="Kind", choices=Claim.Kind.choices)
    value = forms.CharField(
        label="Value",
        max_length=2048,
        help_text="A domain (example.com), a URL prefix (https://example.com/photos/) or a "
        "handle written platform:name (instagram:alice).",
    )


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        label="Token name",
        max_length=100,
        help_text="Something to tell your tokens apart, such as the machine that uses it.",
    )
