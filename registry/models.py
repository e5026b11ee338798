"""Creators, photos (hashes only), claims, personal tokens and the consent ledger.

No model here has a file or image field: a photo is its hashes and a little
metadata, never its bytes. The one binary field, ``Photo.variants``, holds
packed hashes (``registry.variants.variants_pack``), 42 bytes per variant.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length, Mod
from django.db.models.lookups import Exact
from django.utils import timezone

# Bytes per packed variant (registry.variants.PACKED_SIZE; not imported, so
# that the models do not pull in the image libraries).
PACKED_VARIANT_SIZE = 42
# Bytes per stored colour signature (registry.colour.COLOUR_BYTES; likewise).
COLOUR_SIGNATURE_BYTES = 33


class Channel(models.TextChoices):
    WEB = "web", "web form"
    API = "api", "REST API"
    CLI = "cli", "command line"
    ADMIN = "admin", "operator (admin)"


class Creator(models.Model):
    """A person or agency who registers photos and files opt-outs.

    The profile outlives the login: deleting an account removes the user (email,
    password) and, if the creator chose so, keeps this row as the anonymous
    holder of hash-only suppression records.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="creator",
    )
    email_confirmed_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    anonymized_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        if self.user_id is not None and self.user is not None:
            return self.user.email or self.user.get_username()
        return f"anonymous creator {self.public_id}"

    @property
    def is_confirmed(self) -> bool:
        return self.email_confirmed_at is not None

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None


class Photo(models.Model):
    """One registered photo: its hashes and minimal metadata, never its pixels."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    creator = models.ForeignKey(Creator, on_delete=models.CASCADE, related_name="photos")
    sha256 = models.CharField(max_length=64)
    pdq = models.CharField(max_length=64, blank=True, default="")
    pdq_quality = models.PositiveSmallIntegerField(null=True, blank=True)
    phash = models.CharField(max_length=16, blank=True, default="")
    # Unknown when the creator registered locally computed hashes without sizes.
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    original_filename = models.CharField(max_length=255, blank=True, default="")
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.WEB)
    registered_version = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # The hashes of the photo's derived images (mirror, crops, small rotations:
    # registry.variants.DERIVED_VARIANTS), packed by variants_pack, 42 bytes
    # each; never pixels. Empty: no variants known (hashes registered without
    # them, or rows from before variants).
    variants = models.BinaryField(default=b"", blank=True, editable=False)
    # registry.colour.colour_signature of the photo (66 hex digits) and of its
    # derived variants (33 bytes each, in the order of ``variants``: packed by
    # registry.variants.colours_pack). Empty: not known (hashes registered
    # without them, or rows from before colour signatures).
    colour = models.CharField(max_length=66, blank=True, default="")
    variant_colours = models.BinaryField(default=b"", blank=True, editable=False)
    # registry.keypoints of the photo and of its mirror image (two sets, as
    # photo_keypoints_of writes them; one when only the photo's own is known):
    # they confirm a perceptual match geometrically. Never pixels. Empty: not
    # known (hashes registered without them, or rows from before keypoints).
    keypoints = models.BinaryField(default=b"", blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["creator", "sha256"], name="photo_unique_per_creator"),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="photo_sha256_is_hex64"
            ),
            models.CheckConstraint(
                condition=Q(pdq="") | Q(pdq__regex=r"^[0-9a-f]{64}$"), name="photo_pdq_is_hex64"
            ),
            models.CheckConstraint(
                condition=Q(phash="") | Q(phash__regex=r"^[0-9a-f]{16}$"),
                name="photo_phash_is_hex16",
            ),
            models.CheckConstraint(
                condition=Q(pdq_quality__isnull=True) | Q(pdq_quality__lte=100),
                name="photo_pdq_quality_0_100",
            ),
            models.CheckConstraint(
                condition=Exact(Mod(Length("variants"), PACKED_VARIANT_SIZE), 0),
                name="photo_variants_packed",
            ),
            models.CheckConstraint(
                condition=Q(colour="") | Q(colour__regex=r"^[0-9a-f]{66}$"),
                name="photo_colour_is_hex66",
            ),
            models.CheckConstraint(
                condition=Q(variant_colours=b"")
                | Q(
                    Exact(
                        Length("variant_colours"),
                        Length("variants") / PACKED_VARIANT_SIZE * COLOUR_SIGNATURE_BYTES,
                    )
                ),
                name="photo_variant_colours_packed",
            ),
        ]
        indexes = [
            # Exact lookup of a record's sha256 against every creator's photos.
            models.Index(fields=["sha256"], name="photo_sha256_idx"),
            # The index loader reads photos in registration order after a version.
            models.Index(fields=["registered_version"], name="photo_registered_version_idx"),
        ]

    def __str__(self) -> str:
        return self.original_filename or self.sha256[:16]

    @property
    def variant_count(self) -> int:
        """How many derived variants are stored with the photo."""
        return len(self.variants) // PACKED_VARIANT_SIZE


class Claim(models.Model):
    """Something other than a photo a creator asserts: a domain, URL prefix or handle."""

    class Kind(models.TextChoices):
        DOMAIN = "domain", "domain"
        URL_PREFIX = "url_prefix", "URL prefix"
        HANDLE = "handle", "platform handle"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    creator = models.ForeignKey(Creator, on_delete=models.CASCADE, related_name="claims")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Normalised form (see registry/claims.py); what matching compares against.
    value = models.CharField(max_length=2048)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.WEB)
    registered_version = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["kind", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["creator", "kind", "value"], name="claim_unique_per_creator"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["domain", "url_prefix", "handle"]), name="claim_kind_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value}"


class PersonalToken(models.Model):
    """A creator's API token. Only its SHA-256 digest is stored."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    creator = models.ForeignKey(Creator, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    # First characters of the token, shown so a creator can tell tokens apart.
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ConsentEvent(models.Model):
    """The append-only ledger. One row per registration, opt-out, change and
    withdrawal, each with the next registry version.

    PostgreSQL refuses UPDATE and DELETE on this table (a trigger, see the
    migration). The creator is referenced by public id, not by foreign key: the
    ledger is evidence and must outlive the account it speaks of.
    """

    class Kind(models.TextChoices):
        PHOTO_REGISTERED = "photo_registered", "photo registered"
        CLAIM_ADDED = "claim_added", "claim added"
        OPT_OUT_FILED = "opt_out_filed", "opt-out filed"
        OPT_OUT_WITHDRAWN = "opt_out_withdrawn", "opt-out withdrawn"
        OPT_OUT_CHANGED = "opt_out_changed", "opt-out changed"
        ACCOUNT_DELETED = "account_deleted", "account deleted"

    registry_version = models.BigIntegerField(unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    creator_public_id = models.UUIDField()
    # The photo, claim or opt-out the event is about (None for account events).
    subject_public_id = models.UUIDField(null=True, blank=True)
    # Who acted: "creator" for the creator themself, "operator:<username>" for staff.
    actor = models.CharField(max_length=200)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    notice_version = models.CharField(max_length=32)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-registry_version"]
        indexes = [
            # A creator's consent history, newest first.
            models.Index(
                fields=["creator_public_id", "-registry_version"], name="consent_creator_idx"
            ),
            # The operator dashboard's consent events per day over the last 30
            # days (optout.operator_dashboard.registry.consent_events_per_day): the ledger
            # holds a row per registered photo, and only the newest are counted.
            models.Index(fields=["created_at"], name="consent_created_idx"),
        ]

    def __str__(self) -> str:
        return f"v{self.registry_version} {self.kind}"
