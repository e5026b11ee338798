"""The email-confirmation link token.

Django's password-reset token machinery (HMAC over the user's state plus a
timestamp, expiring after PASSWORD_RESET_TIMEOUT) keyed on the creator's
``email_confirmed_at``: the link stops working the moment it is used, because
confirming changes the value it was signed over.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.tokens import PasswordResetTokenGenerator


class EmailConfirmationTokenGenerator(PasswordResetTokenGenerator):
    # A salt of its own: a password-reset token must never confirm an email.
    key_salt = "registry.tokens.EmailConfirmationTokenGenerator"

    def _make_hash_value(self, user: AbstractBaseUser, timestamp: int) -> str:
        creator = getattr(user, "creator", None)
        confirmed_at: datetime | None = None if creator is None else creator.email_confirmed_at
        # Microseconds may not survive every database round trip.
        confirmed = "" if confirmed_at is None else confirmed_at.replace(microsecond=0).isoformat()
        email = getattr(user, "email", "") or ""
        return f"{user.pk}{email}{confirmed}{timestamp}"


email_confirmation_token = EmailConfirmationTokenGenerator()
