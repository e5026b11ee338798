"""Serializers of the creator REST API (photos, claims, consent events).

Requests are parsed here into what the services take; responses never carry
integer keys, only public UUIDs. Names are unique across the project because
drf-spectacular turns them into OpenAPI component names.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from config.api import (
    ClosedSerializer,
    ItemsCheckedOneByOne,
    PayloadTooLarge,
)
from registry import hashing, keypoints, uploads, variants
from registry.colour import COLOUR_HEX_LENGTH
from registry.models import Claim, ConsentEvent, Photo


def _hash_items_check_count(count: int) -> None:
    limit = settings.OPTOUT_MAX_HASH_LINES
    if count > limit:
        raise PayloadTooLarge(
            f"{count} hash items in one request; the limit is {limit}, split them up."
        )


# --- photos: requests -------------------------------------------------------


def _colour_field(whose: str) -> serializers.RegexField:
    return serializers.RegexField(
        rf"^[0-9a-fA-F]{{{COLOUR_HEX_LENGTH}}}$",
        required=False,
        help_text=(
            f"{whose} colour signature, {COLOUR_HEX_LENGTH} hex digits, as `optout hash` "
            "writes it (`registry.colour.colour_signature`): it confirms a perceptual match "
            "(docs/matching.md). Leave out if unknown."
        ),
    )


def _keypoints_field(of_what: str) -> serializers.CharField:
    return serializers.CharField(
        required=False,
        # Base64 of at most one set.
        max_length=keypoints.MAX_SET_TEXT,
        help_text=(
            f"Local keypoints of {of_what}, base64, as `optout hash` writes them "
            "(`registry.keypoints`): the corners of a 256-pixel grey copy and their "
            "binary descriptors, not its pixels; about 5.8 KB. They confirm a perceptual "
            "match geometrically (docs/matching.md). Leave out if unknown: a match is then "
            "not confirmed by them."
        ),
    )


class PhotoVariantHashesSerializer(ClosedSerializer):
    """The hashes of one derived image of a photo (as `optout hash` writes them)."""

    name = serializers.ChoiceField(
        choices=list(variants.DERIVED_VARIANTS),
        help_text="Which derived image: each name at most once per photo.",
    )
    pdq = serializers.RegexField(r"^[0-9a-fA-F]{64}$", help_text="64 hex digits.")
    pdq_quality = serializers.IntegerField(min_value=0, max_value=100)
    phash = serializers.RegexField(r"^[0-9a-fA-F]{16}$", help_text="16 hex digits.")
    colour = _colour_field("The derived image's")
    keypoints = _keypoints_field(
        "the mirror image, in the `mirror` variant only (in any other variant they are an error)"
    )


class PhotoHashItemSerializer(ClosedSerializer):
    """One photo's locally computed hashes (the output of `optout hash`).

    Documents the shape only: items are checked one by one so that a bad item
    (one with a key that is not a field too) becomes its own error while the
    others are registered.
    """

    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", help_text="64 hex digits.")
    pdq = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False, help_text="64 hex digits.")
    phash = serializers.RegexField(r"^[0-9a-fA-F]{16}$", required=False, help_text="16 hex digits.")
    filename = serializers.CharField(required=False, max_length=255)
    path = serializers.CharField(
        required=False,
        help_text=(
            "The photo's path, as `optout hash` writes it: read as `filename` when there is "
            "none; only the file name (not the folder) is kept."
        ),
    )
    pdq_quality = serializers.IntegerField(required=False, min_value=0, max_value=100)
    width = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000)
    height = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000)
    colour = _colour_field("The photo's")
    keypoints = _keypoints_field(
        "the photo itself, one set (the mirror image's go in the `mirror` variant, and need these)"
    )
    band = serializers.CharField(
        required=False,
        help_text=(
            f"The middle band's hashes ({hashing.BAND_HEX_LENGTH} hex digits), as `optout hash` "
            "writes them for lookups. Not stored: a photo's middle band is registered from "
            "its `band` entry in `variants`."
        ),
    )
    variants = PhotoVariantHashesSerializer(
        many=True,
        required=False,
        help_text=(
            "Hashes of the photo's derived images (mirror, crops, small rotations), so that "
            "edited reposts still match. Leave out to register the photo's own hashes only."
        ),
    )


class PhotoHashItemsField(ItemsCheckedOneByOne, serializers.ListField):
    """A list whose items stay raw JSON until each is validated on its own."""

    # null too: every item, whatever it is, gets its own outcome.
    child = serializers.JSONField(allow_null=True)
    item_serializer = PhotoHashItemSerializer
    other_items = (
        "Anything else (no `sha256`, a malformed hash, a key that is not a field such as "
        "`sha_256`, in the item or in one of its `variants`) comes back as that item's "
        "error; the other items are still registered."
    )
    min_items = 1


class PhotoHashesRegisterSerializer(ClosedSerializer):
    """JSON body: ``{"hashes": [...]}``. Validated data: ``items``, a list of
    (line number or None, HashLine or the reason the item is invalid)."""

    hashes = PhotoHashItemsField(allow_empty=False)

    def validate_hashes(self, value: list[Any]) -> list[Any]:
        _hash_items_check_count(len(value))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        items: list[tuple[int | None, uploads.HashLine | str]] = []
        for item in attrs["hashes"]:
            try:
                items.append((None, uploads.hash_line_validate(item)))
            except uploads.HashLineInvalid as error:
                items.append((None, str(error)))
        return {"items": items}


class PhotoFilesRegisterSerializer(serializers.Serializer):
    """Multipart body: image files (``files``, repeated; ZIP archives are
    expanded) or one JSONL file of hashes (``hashes_file``), not both.

    Validated data holds either ``files`` (uploaded files) or ``items`` (the
    parsed JSONL lines, each with its line number).
    """

    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        required=False,
        allow_empty=False,
        min_length=1,  # allow_empty=False alone leaves minItems out of the schema
        help_text="Photos (JPEG, PNG, WEBP, GIF) or ZIP archives of photos; repeat the field.",
    )
    hashes_file = serializers.FileField(
        required=False,
        allow_empty_file=True,
        use_url=False,
        help_text="JSONL from `optout hash`: one hashes object per line.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("files" in attrs) == ("hashes_file" in attrs):
            raise serializers.ValidationError(
                "Send photos in `files` or one JSONL file in `hashes_file`, not both or neither."
            )
        if "files" in attrs:
            return {"files": attrs["files"]}
        max_lines = settings.OPTOUT_MAX_HASH_LINES
        parsed = list(uploads.hashes_jsonl_parse(attrs["hashes_file"].read(), max_lines=max_lines))
        if parsed and parsed[0][0] == 0:  # line 0: the file as a whole is unreadable
            raise serializers.ValidationError({"hashes_file": str(parsed[0][1])})
        if not parsed:
            raise serializers.ValidationError({"hashes_file": "the file holds no hash lines"})
        # The parser stops with one extra error line once past the limit.
        _hash_items_check_count(len(parsed))
        return {"items": parsed}


# --- photos: responses ------------------------------------------------------


class PhotoRegisterOutcomeSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the file or hashes item, from 0.")
    status = serializers.ChoiceField(choices=["registered", "already_registered", "error"])
    filename = serializers.CharField(required=False, help_text="ZIP members as `archive/member`.")
    line = serializers.IntegerField(required=False, help_text="Line number in `hashes_file`.")
    photo = serializers.UUIDField(required=False, help_text="Unless the item is an error.")
    error = serializers.CharField(required=False, help_text="Why the item was refused.")
    code = serializers.CharField(
        required=False,
        help_text=(
            "Machine-readable reason of an error: `invalid` (hashes item), `not_an_image`, "
            "`unsupported_format`, `corrupt`, `truncated`, `too_large`, `decompression_bomb`."
        ),
    )


class PhotoRegisterResultSerializer(serializers.Serializer):
    results = PhotoRegisterOutcomeSerializer(many=True)
    registered = serializers.IntegerField()
    already_registered = serializers.IntegerField()
    # Moved out of the class namespace by DRF's metaclass: Serializer.errors is intact.
    errors = serializers.IntegerField()  # type: ignore[assignment]


class PhotoSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    filename = serializers.CharField(source="original_filename", read_only=True)

    class Meta:
        model = Photo
        fields = [
            "id",
            "sha256",
            "pdq",
            "pdq_quality",
            "phash",
            "colour",
            "width",
            "height",
            "filename",
            "created_at",
            "registered_version",
        ]
        read_only_fields = fields


# --- claims -----------------------------------------------------------------


class ClaimAddSerializer(ClosedSerializer):
    kind = serializers.ChoiceField(
        choices=Claim.Kind.choices,
        error_messages={
            "invalid_choice": "unknown claim kind {input!r}; use one of "
            + ", ".join(Claim.Kind.values)
        },
    )
    value = serializers.CharField(
        max_length=2048,
        help_text="example.com, https://example.com/photos/, or platform:name (instagram:alice).",
    )


class ClaimSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = Claim
        fields = ["id", "kind", "value", "registered_version", "created_at"]
        read_only_fields = fields


# --- consent events ---------------------------------------------------------


class ConsentEventSerializer(serializers.ModelSerializer):
    subject = serializers.UUIDField(source="subject_public_id", read_only=True, allow_null=True)
    details = serializers.DictField(read_only=True)

    class Meta:
        model = ConsentEvent
        fields = [
            "registry_version",
            "kind",
            "subject",
            "channel",
            "notice_version",
            "actor",
            "details",
            "created_at",
        ]
        read_only_fields = fields
