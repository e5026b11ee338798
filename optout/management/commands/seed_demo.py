"""`python manage.py seed_demo`: the demo data `make run` starts with.

Idempotent: a second run finds everything in place and adds nothing. The demo
photos are photographs bundled inside scikit-image (no download), encoded as
JPEG in memory and hashed like any upload; their bytes are never written.
DEBUG only: it creates accounts with well-known passwords.
"""

from __future__ import annotations

from typing import Any

import imageio.v3 as iio
import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from skimage import data as skimage_data

from optout import services as optout_services
from optout.models import OptOut
from optout.uses import AI_TRAINING
from registry import services as registry_services
from registry.models import Channel, Creator
from registry.uploads import hash_files

DEMO_EMAIL = "demo@example.org"
DEMO_PASSWORD = "demo-password-1234"  # noqa: S105 (a published demo login, DEBUG only)
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "admin-password-1234"  # noqa: S105 (a published demo login, DEBUG only)
DEMO_ORGANIZATION = "Demo Lab"
DEMO_DOMAIN = "photos.example.org"
# Photographs shipped in the scikit-image wheel.
DEMO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "camera")


def demo_photo_files() -> list[tuple[str, bytes]]:
    """(file name, JPEG bytes) of each demo photo, encoded in memory."""
    files = []
    for name in DEMO_PHOTOS:
        pixels = getattr(skimage_data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        jpeg = iio.imwrite("<bytes>", pixels[..., :3].astype(np.uint8), extension=".jpg")
        files.append((f"{name}.jpg", jpeg))
    return files


class Command(BaseCommand):
    help = "Create the demo creator, an admin, an organization, photos, a claim and an opt-out."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo creates accounts with published passwords; DEBUG only.")
        with transaction.atomic():
            demo, demo_created = self._creator(DEMO_EMAIL, DEMO_PASSWORD)
            self._admin()
            optout_services.organization_get_or_create(name=DEMO_ORGANIZATION)
            outcomes = registry_services.photos_register_hashed(
                creator=demo, items=hash_files(demo_photo_files()), channel=Channel.CLI
            )
            registered = sum(outcome.status == "registered" for outcome in outcomes)
            registry_services.claim_add(
                creator=demo, kind="domain", value=DEMO_DOMAIN, channel=Channel.CLI
            )
            # Once the demo creator has filed an opt-out, what they do with it
            # (withdraw it, file others) is theirs; re-seeding does not undo it.
            if not OptOut.objects.filter(creator=demo).exists():
                optout_services.opt_out_file(
                    creator=demo, uses=[AI_TRAINING], scope="all_photos", channel=Channel.CLI
                )
        self.stdout.write(
            f"Demo data: creator {'created' if demo_created else 'present'}, "
            f"{registered} new photo(s) of {len(outcomes)}."
        )
        self.stdout.write(f"Demo creator login: {DEMO_EMAIL} / {DEMO_PASSWORD}")
        self.stdout.write(f"Admin login: {ADMIN_EMAIL} / {ADMIN_PASSWORD}")

    def _creator(self, email: str, password: str) -> tuple[Creator, bool]:
        user = get_user_model().objects.filter(username=email).first()
        if user is not None:
            return registry_services.creator_for_user(user), False
        creator = registry_services.creator_sign_up(email=email, password=password)
        return registry_services.creator_confirm_email(creator=creator), True

    def _admin(self) -> Creator:
        user_model = get_user_model()
        user = user_model.objects.filter(username=ADMIN_EMAIL).first()
        if user is None:
            user = user_model.objects.create_superuser(
                username=ADMIN_EMAIL, email=ADMIN_EMAIL, password=ADMIN_PASSWORD
            )
        return registry_services.creator_for_user(user)
