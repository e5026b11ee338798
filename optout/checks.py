"""System checks: a deployment without a receipt signing key would match
batches but never finish them (a receipt cannot be signed), so `check --deploy`
says so before the first batch does."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured


@register(Tags.security, deploy=True)
def receipt_signing_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE:
        return []  # development: a key is generated on first use
    from optout.receipts import signing_key

    try:
        signing_key()
    except ImproperlyConfigured as error:
        return [
            Error(
                str(error),
                hint="Generate one with `python manage.py receipt_key --generate` and put it "
                "into OPTOUT_RECEIPT_SIGNING_KEY.",
                id="optout.E001",
            )
        ]
    return []
