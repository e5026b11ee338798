"""The registry at one registry version, loaded from the database into the pure
decision engine's Snapshot.

Versions make a snapshot reproducible: an opt-out is active at version V when it
was filed at or before V and not withdrawn by V; a photo or claim exists at V
when it was registered at or before V. Loading the same V twice gives the same
snapshot, whatever happened since, which is what lets every chunk of a batch be
decided against the version its receipt names.

Deciding uses the matching engine (optout/engine.py), which follows the versions
without reloading; this brute-force snapshot is the reference it is tested
against (tests/optout/test_engine.py).
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from optout.matching import Snapshot, SnapshotClaim, SnapshotOptOut, SnapshotPhoto
from optout.models import OptOut
from registry.ledger import registry_version_current
from registry.models import Claim, Photo


def _active_at(version: int) -> Q:
    return Q(filed_version__lte=version) & (
        Q(withdrawn_version__isnull=True) | Q(withdrawn_version__gt=version)
    )


def snapshot_load(*, version: int | None = None) -> Snapshot:
    """The registry at ``version`` (default: the newest committed version)."""
    if version is None:
        version = registry_version_current()
    opt_out_rows = list(
        OptOut.objects.filter(_active_at(version)).values_list(
            "id", "public_id", "creator_id", "uses", "scope"
        )
    )
    ids = [row[0] for row in opt_out_rows]
    photos_of: dict[int, set[int]] = defaultdict(set)
    for opt_out_id, photo_id in OptOut.photos.through.objects.filter(optout_id__in=ids).values_list(
        "optout_id", "photo_id"
    ):
        photos_of[opt_out_id].add(photo_id)
    claims_of: dict[int, set[int]] = defaultdict(set)
    for opt_out_id, claim_id in OptOut.claims.through.objects.filter(optout_id__in=ids).values_list(
        "optout_id", "claim_id"
    ):
        claims_of[opt_out_id].add(claim_id)
    exceptions_of: dict[int, set[int]] = defaultdict(set)
    for opt_out_id, organization_id in OptOut.exceptions.through.objects.filter(
        optout_id__in=ids
    ).values_list("optout_id", "organization_id"):
        exceptions_of[opt_out_id].add(organization_id)

    opt_outs = [
        SnapshotOptOut(
            key=key,
            public_id=str(public_id),
            creator=creator_id,
            uses=tuple(uses),
            scope=scope,
            photos=frozenset(photos_of[key]),
            claims=frozenset(claims_of[key]),
            exceptions=frozenset(exceptions_of[key]),
        )
        for key, public_id, creator_id, uses, scope in opt_out_rows
    ]
    all_photo_creators = {o.creator for o in opt_outs if o.scope == OptOut.Scope.ALL_PHOTOS}
    chosen_photos = set().union(*(o.photos for o in opt_outs)) if opt_outs else set()
    chosen_claims = set().union(*(o.claims for o in opt_outs)) if opt_outs else set()

    photos = [
        SnapshotPhoto(
            key=key,
            creator=creator_id,
            sha256=sha256,
            pdq=pdq,
            pdq_quality=pdq_quality,
            phash=phash,
            variants=bytes(variants),
            colour=colour,
            variant_colours=bytes(variant_colours),
            keypoints=bytes(photo_keypoints),
        )
        for (
            key,
            creator_id,
            sha256,
            pdq,
            pdq_quality,
            phash,
            variants,
            colour,
            variant_colours,
            photo_keypoints,
        ) in Photo.objects.filter(
            Q(creator_id__in=all_photo_creators) | Q(id__in=chosen_photos),
            registered_version__lte=version,
        )
        .order_by("id")
        .values_list(
            "id",
            "creator_id",
            "sha256",
            "pdq",
            "pdq_quality",
            "phash",
            "variants",
            "colour",
            "variant_colours",
            "keypoints",
        )
        .iterator(chunk_size=10_000)
    ]
    claims = [
        SnapshotClaim(key=key, creator=creator_id, kind=kind, value=value)
        for key, creator_id, kind, value in Claim.objects.filter(
            id__in=chosen_claims, registered_version__lte=version
        )
        .order_by("id")
        .values_list("id", "creator_id", "kind", "value")
    ]
    return Snapshot(version=version, photos=photos, claims=claims, opt_outs=opt_outs)
