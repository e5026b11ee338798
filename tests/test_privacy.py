"""No photo bytes are persisted anywhere. Model level: no field of ours can hold them."""

from __future__ import annotations

from django.apps import apps
from django.db import models

OUR_APPS = ("registry", "optout")
BYTE_FIELDS = (models.FileField, models.BinaryField)  # ImageField is a FileField


def test_no_model_of_ours_has_a_file_image_or_binary_field() -> None:
    our_models = [model for app in OUR_APPS for model in apps.get_app_config(app).get_models()]

    offending = [
        f"{model._meta.label}.{field.name} ({type(field).__name__})"
        for model in our_models
        for field in model._meta.get_fields()
        if isinstance(field, BYTE_FIELDS)
    ]

    assert {model._meta.label for model in our_models} >= {
        "registry.Creator",
        "registry.Photo",
        "registry.Claim",
        "registry.PersonalToken",
        "registry.ConsentEvent",
        "optout.Organization",
        "optout.OptOut",
    }
    assert offending == []


def test_the_byte_field_check_recognises_an_image_field() -> None:
    # The check above must be able to fail: an ImageField is caught by it.
    field = models.ImageField()

    assert isinstance(field, BYTE_FIELDS)
