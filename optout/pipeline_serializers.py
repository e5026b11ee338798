"""Request validation and response documentation of the pipeline's synchronous
endpoints: lookup, change feed, Spawning-compatible URL query.

Responses are built from the decision engine's own ``as_dict`` (10 000 results
per lookup); the response serializers here document that shape for OpenAPI.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from config.api import ClosedSerializer, ItemsCheckedOneByOne, PayloadTooLarge
from optout.matching import DEFAULT_THRESHOLDS, Thresholds, ThresholdTooLoose
from optout.matching.rule import MAX_STRICTNESS, PDQ_STEP, PHASH_STEP
from optout.models import OptOut
from optout.uses import USES
from registry import keypoints as keypoints_format
from registry.colour import COLOUR_HEX_LENGTH
from registry.hashing import BAND_HEX_LENGTH
from registry.models import Claim
from registry.variants import DERIVED_VARIANTS

_HASH_HELP = {
    "sha256": "SHA-256 of the image file, 64 hex digits.",
    "pdq": "PDQ hash, 64 hex digits (the format StopNCII and HMA exchange).",
    "phash": "pHash, 16 hex digits, exactly `str(imagehash.phash(img))`.",
}


# --- POST /api/v1/lookup -------------------------------------------------------


class LookupRecordSerializer(serializers.Serializer):
    """One record (documentation: records are validated one by one by the engine)."""

    id = serializers.CharField(max_length=512, help_text="The caller's id, echoed back.")
    sha256 = serializers.CharField(required=False, help_text=_HASH_HELP["sha256"])
    pdq = serializers.CharField(required=False, help_text=_HASH_HELP["pdq"])
    phash = serializers.CharField(required=False, help_text=_HASH_HELP["phash"])
    pdq_quality = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=100,
        help_text=(
            "The PDQ quality (0-100) computed with the PDQ, as `optout hash` and pdqhash "
            "report it. Records that state it are held to the registry's rule; bare "
            "hashes to a stricter one, under which a pHash without a PDQ never excludes "
            '(docs/matching.md, "Bare records").'
        ),
    )
    colour = serializers.CharField(
        required=False,
        min_length=COLOUR_HEX_LENGTH,
        max_length=COLOUR_HEX_LENGTH,
        help_text=(
            f"The image's colour signature, {COLOUR_HEX_LENGTH} hex digits, as `optout hash` "
            "writes it (`registry.colour.colour_signature`); needs a `pdq` or a `phash`. A "
            "perceptual match of a registered variant that has one too stands only if the "
            "colours agree (a grayscale record carries no colour evidence and skips the check; "
            "docs/matching.md)."
        ),
    )
    band = serializers.CharField(
        required=False,
        min_length=BAND_HEX_LENGTH,
        max_length=BAND_HEX_LENGTH,
        help_text=(
            f"The hashes of the image's middle band, {BAND_HEX_LENGTH} hex digits (PDQ, pHash, "
            "PDQ quality), as `optout hash` writes it (`registry.hashing.band_of`: the top and "
            "bottom 15 % of the height cut away, where captions go); needs a `pdq` or a "
            "`phash`. The record is then also matched by its middle band against each "
            "photo's, which finds captioned copies (docs/matching.md, \"Captions: the middle "
            'band").'
        ),
    )
    keypoints = serializers.CharField(
        required=False,
        # What registry.keypoints.from_text(..., photo=True) accepts: optout
        # hash may add the mirror image's set, which a record's check does not use.
        max_length=keypoints_format.MAX_PHOTO_TEXT,
        help_text=(
            "The image's local keypoints, the base64 text `optout hash` writes "
            f"(`registry.keypoints`: up to {keypoints_format.FEATURES} ORB corners with their "
            "descriptors, about 5.8 KB); needs a `pdq` or a `phash`. Optional: when the "
            "matched photo has keypoints too, a perceptual match stands only if enough of the "
            "record's keypoints agree with one geometric transform onto the photo or its mirror "
            "image (`keypoint_inliers`, `keypoint_threshold` in the evidence; "
            'docs/matching.md, "Keypoints: the geometric check").'
        ),
    )
    url = serializers.CharField(
        required=False, help_text="http(s) URL the image came from (domain, prefix, handle)."
    )


class LookupRecordsField(ItemsCheckedOneByOne, serializers.Field):
    """The records as sent. Only the list itself is checked here: a malformed
    record becomes an ``invalid`` result and the others are still decided."""

    item_serializer = LookupRecordSerializer
    other_items = (
        "Anything else (not an object, no `id`, a malformed hash or URL, a key that "
        "misspells a field such as `SHA256`) is decided `invalid`, with the reason and its "
        "`row`; the other records are still decided."
    )

    default_error_messages = {"not_a_list": "Expected a list of records, got {input_type}."}

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        limit = settings.OPTOUT_MAX_LOOKUP_RECORDS
        if len(data) > limit:
            # Refused before anything is decided: a 413, not a validation error.
            raise PayloadTooLarge(
                f"{len(data)} records; one lookup takes at most {limit}. "
                "Split them, or submit a batch (POST /api/v1/batches)."
            )
        return data

    def to_representation(self, value: Any) -> Any:
        return value


def threshold_field(kind: str, maximum: int, **kwargs: Any) -> serializers.IntegerField:
    """A Hamming threshold a pipeline may ask for: 0 up to the registry's own,
    never looser; the bounds appear in the schema."""
    message = f"{kind} threshold must be between 0 and {maximum} (the registry's maximum)"
    return serializers.IntegerField(
        min_value=0,
        max_value=maximum,
        error_messages={"min_value": message, "max_value": message},
        **kwargs,
    )


def strictness_field(**kwargs: Any) -> serializers.IntegerField:
    """How many steps stricter than its own the registry's rule decides."""
    message = f"strictness must be between 0 and {MAX_STRICTNESS}"
    return serializers.IntegerField(
        min_value=0,
        max_value=MAX_STRICTNESS,
        error_messages={"min_value": message, "max_value": message},
        help_text=(
            f"0 (the default) to {MAX_STRICTNESS}: decide with the registry's rule that many "
            f"steps stricter (every box {PDQ_STEP} PDQ and {PHASH_STEP} pHash bits narrower per "
            "step): fewer false exclusions, less recall on edited copies (docs/matching.md, "
            '"Trade-off").'
        ),
        **kwargs,
    )


class LookupThresholdsSerializer(ClosedSerializer):
    """Stricter caps for this lookup; any other key is a 400 naming it."""

    # The names of a match's evidence (pdq_threshold...) are the ones a client
    # copies from a response.
    misplaced = {"pdqthreshold": "pdq", "phashthreshold": "phash"}

    pdq = threshold_field(
        "pdq",
        DEFAULT_THRESHOLDS.pdq,
        required=False,
        help_text=f"PDQ Hamming distance, 0 to {DEFAULT_THRESHOLDS.pdq} (the default).",
    )
    phash = threshold_field(
        "phash",
        DEFAULT_THRESHOLDS.phash,
        required=False,
        help_text=f"pHash Hamming distance, 0 to {DEFAULT_THRESHOLDS.phash} (the default).",
    )
    strictness = strictness_field(required=False)

    def validate(self, attrs: dict[str, int]) -> Thresholds:  # type: ignore[override]
        try:
            return DEFAULT_THRESHOLDS.stricter(**attrs)
        except ThresholdTooLoose as error:
            raise serializers.ValidationError(str(error)) from None


class LookupRequestSerializer(ClosedSerializer):
    """A lookup: the use, the records, and optional thresholds; any other key is
    a 400 naming it (a record may carry keys of its own, except misspellings of
    its fields)."""

    misplaced = {
        "pdq": "thresholds.pdq",
        "phash": "thresholds.phash",
        "strictness": "thresholds.strictness",
        "pdqthreshold": "thresholds.pdq",
        "phashthreshold": "thresholds.phash",
    }

    use = serializers.ChoiceField(
        choices=USES,
        help_text="The use the records are checked for.",
        error_messages={"invalid_choice": f'"{{input}}" is not a use; allowed: {", ".join(USES)}.'},
    )
    records = LookupRecordsField(
        help_text=(
            f"Up to {settings.OPTOUT_MAX_LOOKUP_RECORDS} records, each with an `id` and any "
            "of `sha256`, `pdq`, `phash`, `url` (and optionally `pdq_quality`, `colour`, "
            "`band`, `keypoints`). "
            "More is a 413."
        )
    )
    thresholds = LookupThresholdsSerializer(
        required=False,
        help_text=(
            "Caps on the Hamming distances of a photo match, stricter than the registry's "
            "widest, and a stricter rule (`strictness`); a looser one is a 400."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("thresholds", DEFAULT_THRESHOLDS)
        return attrs


class MatchEvidenceSerializer(serializers.Serializer):
    """Why a record matched a registered photo, so a pipeline can apply a
    stricter policy of its own."""

    variant = serializers.CharField(
        help_text=(
            "The registered variant that matched: `original` (the photo itself), `mirror`, "
            "a crop such as `crop_centre_90` or `crop_top_left_95`, or `rotate_+2`/`rotate_-2`."
        )
    )
    basis = serializers.ChoiceField(
        choices=["sha256", "pdq+phash", "pdq+phash+colour", "pdq", "phash"],
        help_text=(
            "The hashes compared. `pdq+phash+colour`: the distances are beyond the rule's "
            "boxes for hashes alone and within its colour-confirmed ones, so the match stands "
            "because the colours agree (`colour_distance`)."
        ),
    )
    pdq_distance = serializers.IntegerField(allow_null=True, help_text="PDQ Hamming distance.")
    pdq_threshold = serializers.IntegerField(
        allow_null=True, help_text="The PDQ distance the rule allowed for this variant."
    )
    phash_distance = serializers.IntegerField(allow_null=True, help_text="pHash Hamming distance.")
    phash_threshold = serializers.IntegerField(
        allow_null=True, help_text="The pHash distance the rule allowed for this variant."
    )
    quality = serializers.ChoiceField(
        choices=["ok", "low_registered", "low_query"],
        help_text=(
            "`low_registered` / `low_query`: the photo's or the record's PDQ quality is low, "
            "so only a near-exact match of the photo itself counted."
        ),
    )
    colour_distance = serializers.FloatField(
        allow_null=True,
        help_text=(
            "The largest a*b* distance between corresponding cells of the record's and the "
            "variant's colour signatures; null when the colours were not compared (either has "
            "none, or the record is grayscale)."
        ),
    )
    colour_threshold = serializers.FloatField(
        allow_null=True,
        help_text="The colour distance the rule allowed; null when the colours were not compared.",
    )
    layout_distance = serializers.FloatField(
        allow_null=True,
        help_text=(
            "For a grayscale record against a grayscale photo: the mean difference between "
            "corresponding cells of their luminance layouts (z-scores of a 4 x 4 grid); null "
            "when not compared (either is in colour, or a signature carries no layout)."
        ),
    )
    layout_threshold = serializers.FloatField(
        allow_null=True,
        help_text="The layout distance the rule allowed; null when the layouts were not compared.",
    )
    keypoint_inliers = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "How many of the record's keypoints agree with one geometric transform onto the "
            "registered photo or its mirror image; null when not checked (the record or the "
            "photo has no keypoints, or a SHA-256 match)."
        ),
    )
    keypoint_threshold = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "How many agreeing keypoints the match needed: 8, or 10 for a record whose colours "
            "cannot confirm a match (grey, faint or no colour signature); null when not checked."
        ),
    )
    strictness = serializers.IntegerField(
        help_text=(
            "How many steps stricter than the registry's rule this match was judged by: the "
            "strictness the pipeline asked for, or more when the keypoints could not check the "
            "match (a record or a photo without them) and the registry is large enough for its "
            "hashes (and colours, when they agree) to match distinct photos."
        ),
    )


class LookupMatchSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["sha256", "pdq", "phash", "url_prefix", "domain", "handle"],
        help_text="What matched: a photo hash, or a claim on the record's URL.",
    )
    distance = serializers.IntegerField(help_text="Hamming distance (0 for exact matches).")
    threshold = serializers.IntegerField(help_text="The threshold the distance was held to.")
    opt_out = serializers.UUIDField(help_text="The opt-out that refuses the use.")
    uses = serializers.ListField(
        child=serializers.ChoiceField(choices=USES), help_text="The uses that opt-out refuses."
    )
    evidence = MatchEvidenceSerializer(
        required=False, help_text="Photo matches only: the variant, hashes and distances."
    )


class LookupResultSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True, help_text="The record's id (null if it had none).")
    decision = serializers.ChoiceField(choices=["exclude", "allow", "invalid"])
    matches = LookupMatchSerializer(
        many=True, required=False, help_text="Why it is excluded (empty when allowed)."
    )
    reason = serializers.CharField(required=False, help_text="What is wrong (`invalid` only).")
    row = serializers.IntegerField(
        required=False, help_text="0-based position in `records` (`invalid` only)."
    )


class LookupResponseSerializer(serializers.Serializer):
    registry_version = serializers.IntegerField(
        help_text="The registry version every result was decided against."
    )
    results = LookupResultSerializer(many=True, help_text="One per record, in request order.")


# --- GET /api/v1/changes ---------------------------------------------------------


class ChangesQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(
        min_value=0,
        default=0,
        help_text="List changes after this registry version (default 0: from the start).",
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=1000, default=100, help_text="Changes per page (1 to 1000)."
    )
    hashes_after = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="Set by `next` to continue a change split over pages; do not set it yourself.",
    )


class ChangeVariantSerializer(serializers.Serializer):
    name = serializers.ChoiceField(
        choices=list(DERIVED_VARIANTS), help_text="Which derived image of the photo."
    )
    pdq = serializers.CharField(help_text=_HASH_HELP["pdq"])
    pdq_quality = serializers.IntegerField(help_text="Its PDQ quality (0-100).")
    phash = serializers.CharField(help_text=_HASH_HELP["phash"])
    colour = serializers.CharField(
        allow_null=True, help_text="Its colour signature (66 hex digits); null when not known."
    )


class ChangeHashSerializer(serializers.Serializer):
    sha256 = serializers.CharField(help_text=_HASH_HELP["sha256"])
    pdq = serializers.CharField(allow_null=True, help_text=_HASH_HELP["pdq"])
    pdq_quality = serializers.IntegerField(
        allow_null=True, help_text="The PDQ quality (0-100); null when not known."
    )
    phash = serializers.CharField(allow_null=True, help_text=_HASH_HELP["phash"])
    colour = serializers.CharField(
        allow_null=True,
        help_text="The photo's colour signature (66 hex digits, docs/matching.md); "
        "null when not known.",
    )
    variants = ChangeVariantSerializer(
        many=True,
        help_text=(
            "The hashes of the photo's derived images (mirror image, crops, small rotations), "
            "which records are matched against too (docs/matching.md); empty when none are known."
        ),
    )


class ChangeClaimSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Claim.Kind.choices)
    value = serializers.CharField(help_text="Normalised, as matching compares it.")


class ChangeSerializer(serializers.Serializer):
    registry_version = serializers.IntegerField(help_text="From this version on the change holds.")
    kind = serializers.ChoiceField(
        choices=["opt_out_filed", "opt_out_changed", "opt_out_withdrawn", "photo_registered"],
        help_text=(
            "`opt_out_filed`/`opt_out_changed`: the opt-out matches the hashes and claims "
            "listed (a change also ends the opt-out it `replaces`); `opt_out_withdrawn`: it "
            "no longer does; `photo_registered`: a new photo falls under active "
            "`all_photos` opt-outs."
        ),
    )
    opt_out = serializers.UUIDField(
        allow_null=True,
        help_text="The opt-out (as lookup matches name it); null for `photo_registered`.",
    )
    replaces = serializers.UUIDField(
        allow_null=True,
        help_text=(
            "`opt_out_changed`: the opt-out it replaces, which stops matching at this "
            "`registry_version` (the new one, `opt_out`, matches from it); null otherwise. "
            "A change into an opt-out excepting your organization is listed as the "
            "`opt_out_withdrawn` of the replaced one."
        ),
    )
    uses = serializers.ListField(
        child=serializers.ChoiceField(choices=USES), help_text="The uses refused."
    )
    scope = serializers.ChoiceField(choices=OptOut.Scope.choices)
    hashes = ChangeHashSerializer(
        many=True,
        help_text="Photos affected, in sha256 order (no more than 10 000 on one page).",
    )
    hashes_complete = serializers.BooleanField(
        help_text=(
            "False when the change covers more hashes than fit on this page: the next page "
            "continues it with the same `registry_version` and the following hashes."
        )
    )
    claims = ChangeClaimSerializer(many=True, help_text="Claims affected (`claims` scope).")
    at = serializers.DateTimeField(help_text="When the ledger recorded it.")


class ChangesPageSerializer(serializers.Serializer):
    registry_version = serializers.IntegerField(
        help_text="The newest registry version; changes up to it are listed."
    )
    next = serializers.URLField(
        allow_null=True,
        help_text=(
            "The next page; null once every change up to `registry_version` is listed "
            "(then ask again later with `since=<registry_version>`)."
        ),
    )
    results = ChangeSerializer(many=True, help_text="Oldest first.")


# --- POST /api/v2/query/urls/ -----------------------------------------------------


class UrlQueryResultSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="The URL as sent.")
    # Spawning's field names, camelCase.
    optOut = serializers.BooleanField(
        help_text="True when the URL is opted out of (generative) AI training."
    )
    optIn = serializers.BooleanField(
        help_text="Always false: the registry records refusals, not opt-ins."
    )


class UrlQueryResponseSerializer(serializers.Serializer):
    urls = UrlQueryResultSerializer(many=True, help_text="One per URL, in request order.")


class ThresholdsSerializer(serializers.Serializer):
    """The PDQ and pHash thresholds a batch was decided with (its own, or the
    registry's), and the strictness it asked for."""

    pdq = serializers.IntegerField()
    phash = serializers.IntegerField()
    strictness = serializers.IntegerField(
        default=0, help_text="Steps stricter than the registry's rule (0: its own)."
    )
    registry_photos = serializers.IntegerField(
        required=False,
        help_text=(
            "The photos the registry held at the batch's registry version (receipts): a match "
            "the keypoints did not check was judged as many steps "
            "stricter as that size needs to keep false exclusions at 1 in 10 000 records or "
            "fewer (the match's `evidence.strictness`)."
        ),
    )
