"""Opt-outs and the organizations that consume the registry."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from registry.models import Channel, Claim, Creator, Photo


class Organization(models.Model):
    """A consumer of the registry (a lab, a company). Owns API keys; creators may
    grant it an exception to their opt-outs."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    suspended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OptOut(models.Model):
    """A creator's refusal of some uses. Withdrawn, never deleted."""

    class Scope(models.TextChoices):
        ALL_PHOTOS = "all_photos", "all my photos, including future ones"
        PHOTOS = "photos", "chosen photos"
        CLAIMS = "claims", "chosen claims (domains, URL prefixes, handles)"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="opt_outs")
    # Refused uses, a list from optout.uses.USES (JSON so that `make run` works on SQLite).
    uses = models.JSONField()
    scope = models.CharField(max_length=16, choices=Scope.choices)
    photos = models.ManyToManyField(Photo, blank=True, related_name="opt_outs")
    claims = models.ManyToManyField(Claim, blank=True, related_name="opt_outs")
    exceptions = models.ManyToManyField(Organization, blank=True, related_name="opt_out_exceptions")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    notice_version = models.CharField(max_length=32)
    effective_at = models.DateTimeField(default=timezone.now)
    filed_version = models.BigIntegerField()
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_version = models.BigIntegerField(null=True, blank=True)
    # When the creator was emailed the confirmation of this opt-out (GDPR Art. 7:
    # consent must be demonstrable). NULL means not sent yet: this row, not the
    # Celery queue, is the record of the work still to do.
    notice_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope__in=["all_photos", "photos", "claims"]),
                name="opt_out_scope_known",
            ),
            models.CheckConstraint(
                condition=(Q(withdrawn_at__isnull=True) & Q(withdrawn_version__isnull=True))
                | (Q(withdrawn_at__isnull=False) & Q(withdrawn_version__isnull=False)),
                name="opt_out_withdrawn_at_and_version_together",
            ),
            models.CheckConstraint(
                condition=Q(withdrawn_version__isnull=True)
                | Q(withdrawn_version__gt=models.F("filed_version")),
                name="opt_out_withdrawn_after_filed",
            ),
        ]
        indexes = [
            # The matching snapshot loads active opt-outs only.
            models.Index(
                fields=["filed_version"],
                name="opt_out_active_idx",
                condition=Q(withdrawn_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"opt-out {self.public_id} ({', '.join(self.uses)})"

    @property
    def is_active(self) -> bool:
        return self.withdrawn_at is None
