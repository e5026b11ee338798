"""The perceptual decision rule: does a record's hash match one registered variant?

Pure (no Django). The index finds candidates (every registered variant within
``MatchRule.search_plan()``); this rule decides each one and says why, so a
pipeline can apply a stricter policy of its own.

Design (measurements, method and trade-offs: docs/matching.md, "Robust
matching" and "Precision"):

- **Both hashes must agree.** With both a PDQ and a pHash on the record, a
  variant matches when the two distances fall inside one of its kind's boxes
  (``pdq <= P and phash <= H``). Either hash alone is far less precise on real
  photographs than on random codes (pHash <= 8 alone falsely matches about 4 in
  a million pairs of distinct photos); requiring the independent hash to agree
  is what lets the registry hold a dozen variants per photo.
- **Variant-aware thresholds.** The photo itself gets the widest boxes (it
  must absorb resizing, recompression, text and brightness); derived variants
  (the mirror image, crops, small rotations) need a closer match.
- **Quality gating.** A PDQ quality below ``min_quality`` (50; flat colour,
  gradients, near-black frames, sky) never decides on the generous boxes: such
  a registered variant — or a record whose own quality is known to be low —
  matches the original or mirror image only nearly exactly
  (``low_quality``), a derived variant only on an equal pHash and a nearly
  equal PDQ (``low_quality_derived``), and a single-hash record never. When
  both carry colour, a low-quality pair's colours must agree within
  ``confirm_threshold`` (the veto's ``colour_threshold`` is not enough: two
  distinct blue skies fall inside the low-quality boxes and the veto).
- **Grey layouts confirm.** A grey record against a grey variant has no
  colours to compare; when both signatures carry the layout of their
  luminance (``registry.colour``), the match stands only if the layouts
  agree within ``layout_threshold``.
- **One hash kind only.** A record with only a PDQ or only a pHash is held to a
  stricter single-hash threshold, and only against the photo (PDQ or pHash) and
  its mirror image (PDQ).
- **Colour confirms.** When a box matches and both the record and the
  variant carry a colour signature (``registry.colour``), the match stands
  only if the colours agree: the largest cell a*b* distance at most
  ``colour_threshold``. A grey record carries no colour evidence (the check is
  skipped); a grey variant against a colourful record is no match.
  ``colour_threshold`` is set by what brightness +-20 % can do to a colour,
  so the veto never refuses a true copy. Colours that agree closely (within
  ``confirm_threshold``) also widen the boxes a little: each kind's
  ``confirmed`` boxes (the rule two steps looser, cut to what the search plan
  finds anyway) match a colourful record whose colours agree that closely
  with the variant's. Colour is a signal independent of the two luminance hashes, and
  on package photographs no false pair of colour records survives it even
  four steps looser.
- **The middle band finds captions.** A record that carries the hashes of
  its middle band (``QueryHashes.band``, ``registry.hashing.band_of``: the
  top and bottom 15 % cut away, where captions go) is also compared with the
  photo's ``band`` variant, band hashes against band hashes, inside the
  rule's ``band`` boxes; both bands need PDQ quality ``min_quality`` (a
  featureless band never decides). The band variant is never compared with
  the record's own hashes.
- **Keypoints confirm geometrically.** When the record and the registered
  photo both carry keypoints (``registry.keypoints``: corners of the
  luminance and their descriptors), a perceptual match stands only if at
  least ``keypoint_inliers`` of the record's keypoints agree with one
  similarity transform onto the photo or its mirror image; a record whose
  colours cannot confirm it (grey, faint or no colour signature), for
  which the check is the only signal independent of the luminance hashes,
  needs ``grey_keypoint_inliers``. Photos of similar layout fool every
  whole-image signal above; they rarely share eight (ten) corners in the
  same arrangement. Checked per (record, photo) by
  ``decide`` after this rule (the keypoints live in the database, not in the
  index). A featureless copy has too few keypoints to pass: like the quality
  gate, the check does not let content without detail decide a match.
- **SHA-256 equality always matches** (``sha256_evidence``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from registry.colour import (
    COLOUR_CONFIRM_THRESHOLD,
    COLOUR_THRESHOLD,
    LAYOUT_THRESHOLD,
    colour_compare,
    colourful,
    faint_colour,
    grey_against_colour,
    layout_compare,
)
from registry.hashing import band_split

PDQ_BITS = 256
PHASH_BITS = 64
# One step of ``MatchRule.shifted``: the same fraction (1/32) of each hash.
PDQ_STEP = 8
PHASH_STEP = 2
# The geometric check (MatchRule.keypoint_inliers; set by
# benchmarks/bench_keypoints.py, docs/matching.md "Keypoints").
KEYPOINT_INLIERS = 8
# The same for a record whose colours cannot confirm a match (grey, faint or
# none; MatchRule.keypoints_needed): black-and-white photographs of similar
# layout pass 8 more often than other pairs do (bench_keypoints.py on the
# GCompris photographs: 3 of 366 grey-record false pairs, none at 10).
GREY_KEYPOINT_INLIERS = 10

KINDS = ("original", "mirror", "dihedral", "crop", "rotation", "band")
# Variants matched by a record's band hashes (QueryHashes.band) only.
BAND_KINDS = frozenset({"band"})


@dataclass(frozen=True)
class Box:
    """Match when ``pdq distance <= pdq`` and ``phash distance <= phash``."""

    pdq: int
    phash: int

    def contains(self, pdq_distance: int, phash_distance: int) -> bool:
        return pdq_distance <= self.pdq and phash_distance <= self.phash


@dataclass(frozen=True)
class KindRule:
    """Thresholds for one kind of variant.

    ``both``: boxes for a record with PDQ and pHash (a match in any box is a
    match). ``pdq_only`` / ``phash_only``: the single-hash threshold for a
    record carrying only that hash kind; None means such a record never
    matches this kind of variant.
    """

    both: tuple[Box, ...]
    pdq_only: int | None = None
    phash_only: int | None = None
    # Boxes for a record with PDQ and pHash that match only when the colours
    # confirm: the record is colourful, the variant carries a signature and
    # the colour distance is within the rule's colour threshold.
    confirmed: tuple[Box, ...] = ()


@dataclass(frozen=True)
class VariantHashes:
    """One registered variant (``registry.variants.Variant`` or a database row)."""

    name: str
    kind: str
    pdq: str
    pdq_quality: int
    phash: str
    # registry.colour signature (66 hex digits); "" when not known.
    colour: str = ""


@dataclass(frozen=True)
class QueryHashes:
    """A record's perceptual hashes; ``pdq_quality`` when the caller knows it
    (a worker that hashed the image itself, or a record that carries it);
    ``colour`` its registry.colour signature when it carries one ("": none)."""

    pdq: str = ""
    phash: str = ""
    pdq_quality: int | None = None
    colour: str = ""
    # registry.hashing.band_of: the middle band's PDQ, pHash and PDQ quality
    # (82 hex digits); "" when the record carries none.
    band: str = ""

    def band_hashes(self) -> QueryHashes:
        """The middle band's hashes as a query of their own (no colour)."""
        pdq, phash, quality = band_split(self.band)
        return QueryHashes(pdq=pdq, phash=phash, pdq_quality=quality)

    @property
    def band_phash(self) -> str:
        """The middle band's pHash ("" without a band): what its index is searched with."""
        return band_split(self.band)[1] if self.band else ""


@dataclass(frozen=True)
class Evidence:
    """Why a record matched a variant (or did not)."""

    matched: bool
    variant: str
    kind: str
    # "sha256" | "pdq+phash" | "pdq+phash+colour" (a colour-confirmed box) |
    # "pdq" | "phash" | "" (no match)
    basis: str
    pdq_distance: int | None = None
    phash_distance: int | None = None
    pdq_threshold: int | None = None
    phash_threshold: int | None = None
    quality: str = "ok"  # "ok" | "low_registered" | "low_query"
    # The colour check (registry.colour.colour_compare): the distance (math.inf
    # for a grey variant against a colourful record) and the threshold it was
    # held to; both None when not checked (no box matched, a colour missing on
    # either side, or a grey record).
    colour_distance: float | None = None
    colour_threshold: float | None = None
    # The luminance layouts of a grey record and a grey variant (registry.
    # colour.layout_compare): their distance and the threshold it was held
    # to; both None when not compared (no box matched, not both grey, or a
    # signature without a layout).
    layout_distance: float | None = None
    layout_threshold: float | None = None
    # The geometric check (registry.keypoints.inliers, decide.py): how many of
    # the record's keypoints agree with one transform onto the registered
    # photo or its mirror image, and how many the match needed; both None when
    # not checked (either side without keypoints, a SHA-256 match).
    keypoint_inliers: int | None = None
    keypoint_threshold: int | None = None
    # How many steps stricter than the registry's rule the match was judged
    # by: the pipeline's own strictness, or more for a match the keypoints did
    # not check, in a registry large enough to need it (scale.py).
    strictness: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "basis": self.basis,
            "pdq_distance": self.pdq_distance,
            "pdq_threshold": self.pdq_threshold,
            "phash_distance": self.phash_distance,
            "phash_threshold": self.phash_threshold,
            "quality": self.quality,
            "colour_distance": self.colour_distance,
            "colour_threshold": self.colour_threshold,
            "layout_distance": self.layout_distance,
            "layout_threshold": self.layout_threshold,
            "keypoint_inliers": self.keypoint_inliers,
            "keypoint_threshold": self.keypoint_threshold,
            "strictness": self.strictness,
        }


# The photo itself (the "primary" variant) is indexed by both hashes and gets
# the widest boxes; every other variant (the mirror image, crops, rotations) is
# indexed by its pHash, its PDQ kept for confirmation. Kinds in
# PDQ_INDEXED_KINDS are also indexed by PDQ for records that carry a PDQ only.
PRIMARY_KINDS = frozenset({"original"})
PDQ_INDEXED_KINDS = frozenset({"original", "mirror"})
# The widest pHash radius the primary index is searched at: pHash range search
# slows down steeply past 10 bits (docs/performance.md), so a box wider on
# pHash must be narrow enough on PDQ for the PDQ index to find it.
PRIMARY_PHASH_RADIUS = 10


@dataclass(frozen=True)
class SearchPlan:
    """The index searches that find every variant the rule can accept.

    A record with both hashes: the pHash index of primary variants at
    ``primary_phash``, the PDQ index of primary variants at ``primary_pdq``
    (None: not needed), and the pHash index of derived variants at
    ``derived_phash`` (None: derived variants never match). Every accepted
    primary pair is within one of the two primary radii, every accepted derived
    pair within ``derived_phash``; the union of the hits is then judged by the
    rule. A PDQ-only record: the PDQ indexes (``PDQ_INDEXED_KINDS``) at
    ``pdq_only``; a pHash-only record: the primary pHash index at
    ``phash_only`` (None: such a record has no perceptual match). A record
    with band hashes: the band variants' pHash index at ``band_phash``.
    """

    primary_phash: int
    primary_pdq: int | None
    derived_phash: int | None
    pdq_only: int | None
    phash_only: int | None
    # The pHash index of band variants, searched with a record's band pHash.
    band_phash: int | None = None


def hamming_hex(a_hex: str, b_hex: str) -> int:
    if len(a_hex) != len(b_hex):
        raise ValueError("hashes of different lengths")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def _no_match(
    variant: VariantHashes, pdq_distance: int | None, phash_distance: int | None, quality: str
) -> Evidence:
    """No box matched: the distances measured, no thresholds."""
    return Evidence(
        matched=False,
        variant=variant.name,
        kind=variant.kind,
        basis="",
        pdq_distance=pdq_distance,
        phash_distance=phash_distance,
        quality=quality,
    )


def sha256_evidence() -> Evidence:
    """Equal SHA-256: the same file, always a match."""
    return Evidence(
        matched=True,
        variant="original",
        kind="original",
        basis="sha256",
        pdq_distance=None,
        phash_distance=None,
    )


@dataclass(frozen=True)
class MatchRule:
    kinds: Mapping[str, KindRule]
    # Applies instead of ``kinds`` when the registered variant's (or the
    # record's known) PDQ quality is below ``min_quality``: ``low_quality`` to
    # the kinds in ``low_quality_kinds`` (the photo and its mirror image),
    # ``low_quality_derived`` to the other kinds of ``kinds``.
    low_quality: KindRule
    low_quality_kinds: frozenset[str] = field(default=frozenset({"original", "mirror"}))
    min_quality: int = 50
    low_quality_derived: KindRule = field(default=KindRule(both=()))
    # Largest colour distance (registry.colour.colour_compare) of a match, when
    # the record and the variant both carry a colour signature.
    colour_threshold: float = COLOUR_THRESHOLD
    # The closer colour agreement a match in a ``confirmed`` box needs.
    confirm_threshold: float = COLOUR_CONFIRM_THRESHOLD
    # A grey record against a colourful variant (registry.colour.
    # grey_against_colour) carries no colour evidence to confirm it: it is
    # judged by the rule shifted by this many steps (0: as any other record).
    grey_record_shift: int = 0
    # Largest luminance-layout distance (registry.colour.layout_compare) of a
    # match between a grey record and a grey variant that both carry one.
    layout_threshold: float = LAYOUT_THRESHOLD
    # The boxes of a record's band hashes against a band variant (BAND_KINDS;
    # never the record's own hashes: no kind rule of ``kinds`` for them).
    band: tuple[Box, ...] = ()
    # The geometric check (decide.py, registry.keypoints): when the record and
    # the registered photo both carry keypoints, a perceptual match stands
    # only if at least ``keypoint_inliers`` of the record's keypoints agree
    # with one transform onto the photo or its mirror image.
    keypoint_inliers: int = KEYPOINT_INLIERS
    # The same for a record whose colours cannot confirm a match.
    grey_keypoint_inliers: int = GREY_KEYPOINT_INLIERS

    def keypoints_needed(self, query: QueryHashes) -> int:
        """The agreeing keypoints a match of ``query`` needs:
        ``keypoint_inliers`` when the record's colours can confirm a match
        (registry.colour.colourful), ``grey_keypoint_inliers`` when nothing
        but the check can (a grey, faint or colourless record)."""
        if query.colour and colourful(query.colour):
            return self.keypoint_inliers
        return self.grey_keypoint_inliers

    @cached_property
    def grey_record_rule(self) -> MatchRule:
        """The rule a grey record is judged by against a colourful variant."""
        return replace(self.shifted(self.grey_record_shift), grey_record_shift=0)

    def kind_rule(self, kind: str, low_quality: bool) -> KindRule | None:
        if not low_quality:
            return self.kinds.get(kind)
        if kind in self.low_quality_kinds:
            return self.low_quality
        if kind in self.kinds and kind not in PRIMARY_KINDS:
            return self.low_quality_derived
        return None

    def boxes(
        self, kind: str, *, has_pdq: bool, has_phash: bool, low_quality: bool
    ) -> tuple[Box, ...]:
        """The boxes a pair of this kind is judged by; a missing hash kind is
        expressed as an unbounded distance on it (single-hash thresholds). A
        band variant has none (no kind rule): only a record's band hashes are
        compared with it (``band``)."""
        rule = self.kind_rule(kind, low_quality)
        if rule is None:
            return ()
        if has_pdq and has_phash:
            return rule.both
        if has_pdq and rule.pdq_only is not None:
            return (Box(pdq=rule.pdq_only, phash=PHASH_BITS),)
        if has_phash and rule.phash_only is not None:
            return (Box(pdq=PDQ_BITS, phash=rule.phash_only),)
        return ()

    def _kind_rules(self) -> list[KindRule]:
        return [*self.kinds.values(), self.low_quality, self.low_quality_derived]

    def all_boxes(self) -> list[Box]:
        """Every box of the rule: every kind, low quality, colour-confirmed, band."""
        kinds = [box for rule in self._kind_rules() for box in (*rule.both, *rule.confirmed)]
        return [*kinds, *self.band]

    def single_thresholds(self, kind: str) -> list[int]:
        """Every single-hash threshold of the rule on ``kind`` ("pdq" or "phash")."""
        values = (getattr(rule, f"{kind}_only") for rule in self._kind_rules())
        return [value for value in values if value is not None]

    def confirmed_boxes(self, kind: str, *, low_quality: bool) -> tuple[Box, ...]:
        """The boxes a pair with both hashes matches in only when the colours
        confirm it (``KindRule.confirmed``; never for low quality)."""
        rule = None if low_quality else self.kinds.get(kind)
        return () if rule is None else rule.confirmed

    def confirmed_only(self) -> MatchRule:
        """The confirmed boxes as a rule of their own (benchmarks measure them
        with the colour check applied on top)."""
        return MatchRule(
            kinds={name: KindRule(both=rule.confirmed) for name, rule in self.kinds.items()},
            low_quality=KindRule(both=()),
            low_quality_kinds=self.low_quality_kinds,
            min_quality=self.min_quality,
            colour_threshold=self.colour_threshold,
            confirm_threshold=self.confirm_threshold,
        )

    def evaluate(self, query: QueryHashes, variant: VariantHashes) -> Evidence:
        if variant.kind in BAND_KINDS:
            return self._evaluate_band(query, variant)
        if (
            self.grey_record_shift
            and query.colour
            and variant.colour
            and grey_against_colour(query.colour, variant.colour)
        ):
            return self.grey_record_rule.evaluate(query, variant)
        has_pdq, has_phash = bool(query.pdq and variant.pdq), bool(query.phash and variant.phash)
        low_registered, low_query, quality = self._quality_gate(query, variant)
        pdq_distance = hamming_hex(query.pdq, variant.pdq) if has_pdq else None
        phash_distance = hamming_hex(query.phash, variant.phash) if has_phash else None
        boxes = self.boxes(
            variant.kind,
            has_pdq=has_pdq,
            has_phash=has_phash,
            low_quality=low_registered or low_query,
        )
        basis = "+".join(
            name for name, present in (("pdq", has_pdq), ("phash", has_phash)) if present
        )
        for box in boxes:
            if box.contains(
                PDQ_BITS if pdq_distance is None else pdq_distance,
                PHASH_BITS if phash_distance is None else phash_distance,
            ):
                colour = None
                if query.colour and variant.colour:
                    colour = colour_compare(query.colour, variant.colour)
                # A featureless pair has little but its colours to tell it from
                # other featureless images (two blue skies): they must agree as
                # closely as in a confirmed box, not merely escape the veto.
                low = low_registered or low_query
                limit = self.confirm_threshold if low else self.colour_threshold
                colour_threshold = None if colour is None else limit
                # Two grey images: their luminance layouts instead.
                layout = None
                if colour is None and query.colour and variant.colour:
                    layout = layout_compare(query.colour, variant.colour)
                # Colours (or layouts) that disagree stop every box (they all
                # share the check).
                agree = colour is None or colour <= limit
                agree = agree and (layout is None or layout <= self.layout_threshold)
                # Faint colours on either side of a featureless pair confirm
                # nothing (two near-grey flat patches agree in every signal).
                if low and query.colour and variant.colour:
                    agree = agree and not (
                        faint_colour(query.colour) or faint_colour(variant.colour)
                    )
                return Evidence(
                    matched=agree,
                    variant=variant.name,
                    kind=variant.kind,
                    basis=basis if agree else "",
                    pdq_distance=pdq_distance,
                    phash_distance=phash_distance,
                    pdq_threshold=box.pdq if has_pdq and agree else None,
                    phash_threshold=box.phash if has_phash and agree else None,
                    quality=quality,
                    colour_distance=colour,
                    colour_threshold=colour_threshold,
                    layout_distance=layout,
                    layout_threshold=None if layout is None else self.layout_threshold,
                )
        both_known = pdq_distance is not None and phash_distance is not None
        confirmed = (
            self.confirmed_boxes(variant.kind, low_quality=low_registered or low_query)
            if both_known and query.colour and variant.colour
            else ()
        )
        for box in confirmed:
            if box.contains(pdq_distance or 0, phash_distance or 0):
                colour = colour_compare(query.colour, variant.colour)
                if colour is None or colour > self.confirm_threshold:
                    break  # a grey record, or colours that do not agree closely
                return Evidence(
                    matched=True,
                    variant=variant.name,
                    kind=variant.kind,
                    basis=f"{basis}+colour",  # the colours made this match
                    pdq_distance=pdq_distance,
                    phash_distance=phash_distance,
                    pdq_threshold=box.pdq,
                    phash_threshold=box.phash,
                    quality=quality,
                    colour_distance=colour,
                    colour_threshold=self.confirm_threshold,
                )
        return _no_match(variant, pdq_distance, phash_distance, quality)

    def _quality_gate(self, query: QueryHashes, variant: VariantHashes) -> tuple[bool, bool, str]:
        """Whether the registered variant's and the record's (when known) PDQ
        quality is below ``min_quality``, and the evidence's ``quality``."""
        low_registered = variant.pdq_quality < self.min_quality
        low_query = query.pdq_quality is not None and query.pdq_quality < self.min_quality
        quality = "low_registered" if low_registered else ("low_query" if low_query else "ok")
        return low_registered, low_query, quality

    def _evaluate_band(self, query: QueryHashes, variant: VariantHashes) -> Evidence:
        """The record's band hashes against a band variant: inside a box, both
        bands of PDQ quality at least ``min_quality``; no colour check (the
        record's colour is the whole picture's, not its band's)."""
        if not (query.band and variant.pdq and variant.phash):
            return _no_match(variant, None, None, "ok")
        band = query.band_hashes()
        pdq_distance = hamming_hex(band.pdq, variant.pdq)
        phash_distance = hamming_hex(band.phash, variant.phash)
        low_registered, low_query, quality = self._quality_gate(band, variant)
        boxes = () if low_registered or low_query else self.band
        for box in boxes:
            if box.contains(pdq_distance, phash_distance):
                return Evidence(
                    matched=True,
                    variant=variant.name,
                    kind=variant.kind,
                    basis="pdq+phash",
                    pdq_distance=pdq_distance,
                    phash_distance=phash_distance,
                    pdq_threshold=box.pdq,
                    phash_threshold=box.phash,
                    quality=quality,
                )
        return _no_match(variant, pdq_distance, phash_distance, quality)

    def shifted(self, levels: int) -> MatchRule:
        """The rule with every threshold moved by ``levels`` steps of
        ``PDQ_STEP`` PDQ bits and ``PHASH_STEP`` pHash bits: negative is
        stricter (a pipeline's own policy), positive looser (the precision
        benchmark's tail measurements). Thresholds never go below -1 (nothing
        matches); the colour threshold is kept."""

        def box(b: Box) -> Box:
            return Box(
                pdq=max(-1, b.pdq + levels * PDQ_STEP), phash=max(-1, b.phash + levels * PHASH_STEP)
            )

        def single(value: int | None, step: int) -> int | None:
            return None if value is None else max(-1, value + levels * step)

        def kind(rule: KindRule) -> KindRule:
            return KindRule(
                both=tuple(box(b) for b in rule.both),
                pdq_only=single(rule.pdq_only, PDQ_STEP),
                phash_only=single(rule.phash_only, PHASH_STEP),
                confirmed=tuple(box(b) for b in rule.confirmed),
            )

        return MatchRule(
            kinds={name: kind(rule) for name, rule in self.kinds.items()},
            low_quality=kind(self.low_quality),
            low_quality_kinds=self.low_quality_kinds,
            min_quality=self.min_quality,
            low_quality_derived=kind(self.low_quality_derived),
            colour_threshold=self.colour_threshold,
            confirm_threshold=self.confirm_threshold,
            grey_record_shift=self.grey_record_shift,
            layout_threshold=self.layout_threshold,
            band=tuple(box(b) for b in self.band),
            keypoint_inliers=self.keypoint_inliers,
            grey_keypoint_inliers=self.grey_keypoint_inliers,
        )

    def search_plan(self) -> SearchPlan:
        """The searches the engine runs for this rule (``SearchPlan``). Raises
        ValueError for a rule the indexes cannot serve: a PDQ-only match of a
        kind outside ``PDQ_INDEXED_KINDS``, or a pHash-only match of a derived
        kind."""
        lq_primary = bool(self.low_quality_kinds & PRIMARY_KINDS)
        lq_derived = bool(self.low_quality_kinds - PRIMARY_KINDS)
        primary = [rule for kind, rule in self.kinds.items() if kind in PRIMARY_KINDS]
        primary += [self.low_quality] if lq_primary else []
        derived = [rule for kind, rule in self.kinds.items() if kind not in PRIMARY_KINDS]
        derived += [self.low_quality_derived] + ([self.low_quality] if lq_derived else [])
        pdq_indexed = [rule for kind, rule in self.kinds.items() if kind in PDQ_INDEXED_KINDS]
        pdq_indexed += [self.low_quality] if self.low_quality_kinds & PDQ_INDEXED_KINDS else []
        unindexed = [rule for kind, rule in self.kinds.items() if kind not in PDQ_INDEXED_KINDS]
        unindexed += [self.low_quality_derived]
        unindexed += [self.low_quality] if self.low_quality_kinds - PDQ_INDEXED_KINDS else []
        if any(rule.pdq_only is not None for rule in unindexed):
            raise ValueError("a PDQ-only match needs a kind indexed by PDQ")
        if any(rule.phash_only is not None for rule in derived):
            raise ValueError("derived variants are indexed by pHash only with PDQ confirmation")
        primary_boxes = [box for rule in primary for box in (*rule.both, *rule.confirmed)]
        # Boxes wider than PRIMARY_PHASH_RADIUS on pHash are found by the PDQ
        # search; the pHash search then only needs the boxes beyond its radius.
        wide = [box.pdq for box in primary_boxes if box.phash > PRIMARY_PHASH_RADIUS]
        reach = max(wide) if wide else -1
        primary_phash = max((box.phash for box in primary_boxes if box.pdq > reach), default=-1)
        derived_boxes = [box.phash for rule in derived for box in (*rule.both, *rule.confirmed)]
        pdq_only = [rule.pdq_only for rule in pdq_indexed if rule.pdq_only is not None]
        phash_only = [rule.phash_only for rule in primary if rule.phash_only is not None]
        band = [box.phash for box in self.band]
        return SearchPlan(
            primary_phash=primary_phash,
            primary_pdq=max(wide) if wide else None,
            derived_phash=max(derived_boxes) if derived_boxes else None,
            pdq_only=max(pdq_only) if pdq_only else None,
            phash_only=max(phash_only) if phash_only else None,
            band_phash=max(band) if band else None,
        )


# The registry's rule, calibrated on package photographs (benchmarks/
# bench_robust.py, bench_precision.py; docs/matching.md). pHash distances
# between two imagehash pHashes are always even (each hash has 32 bits set).
#
# The photo itself: resizing moves PDQ by up to ~60 bits while pHash stays
# within 4, a caption moves pHash by up to 18 while PDQ stays near 32,
# brightness and recompression sit in between; three boxes follow that
# staircase and stop where distinct photos start (PDQ ~54 with pHash 8, ~64
# with 12, ~74 with 4). The box wider than PRIMARY_PHASH_RADIUS on pHash is 32
# on PDQ, so the PDQ index at 32 finds it. A PDQ-only record matches the photo
# at PDQ <= 31 (HMA's threshold), its mirror image at <= 24 (a mirrored repost
# moves PDQ by at most ~14 from the mirror variant); a pHash-only record only
# the photo itself, on an equal pHash.
_PRIMARY_BOXES = (Box(pdq=32, phash=18), Box(pdq=48, phash=10), Box(pdq=60, phash=4))
# The mirror image, crops and +-2 degree rotations: the repost is the variant
# plus recompression, within PDQ 44 at pHash <= 2, 32 at 4, 24 at 6 (pHash <= 6:
# the derived index is searched at 6). The mirror image used to get the
# photo's boxes: the same recall on mirrored reposts, about a quarter more
# false matches and twice the entries in both primary indexes.
_DERIVED_BOXES = (Box(pdq=44, phash=2), Box(pdq=32, phash=4), Box(pdq=24, phash=6))
# When the colours confirm (a colourful record whose colour signature agrees
# with the variant's): the boxes two steps looser (``shifted(2)``), cut to what
# the search plan already finds (pHash <= 10 or PDQ <= 32 on the photo, pHash
# <= 6 on derived variants), so they cost no search. On package photographs
# no false pair of colour records survives the colour check up to four steps
# looser (docs/matching.md, "Colour as a third signal").
_CONFIRMED_PRIMARY = (Box(pdq=32, phash=22), Box(pdq=64, phash=10), Box(pdq=76, phash=8))
_CONFIRMED_DERIVED = (Box(pdq=60, phash=6),)
_BAND_BOXES = (Box(pdq=32, phash=4),)
DEFAULT_RULE = MatchRule(
    kinds={
        "original": KindRule(
            both=_PRIMARY_BOXES, pdq_only=31, phash_only=0, confirmed=_CONFIRMED_PRIMARY
        ),
        "mirror": KindRule(both=_DERIVED_BOXES, pdq_only=24, confirmed=_CONFIRMED_DERIVED),
        "crop": KindRule(both=_DERIVED_BOXES, confirmed=_CONFIRMED_DERIVED),
        "rotation": KindRule(both=_DERIVED_BOXES, confirmed=_CONFIRMED_DERIVED),
        # Turned or flipped over (not registered by default): nearly exact only.
        "dihedral": KindRule(both=(Box(pdq=24, phash=4),)),
    },
    # PDQ quality < 50 on either side: the photo or its mirror image nearly
    # exactly; a crop or rotation only on an equal pHash and PDQ within 4.
    low_quality=KindRule(both=(Box(pdq=24, phash=4),)),
    low_quality_derived=KindRule(both=(Box(pdq=4, phash=0),)),
    # A grey record against a colourful variant: two steps stricter. Turning a
    # photo grey barely moves its hashes (the grayscale edit matches at every
    # shift down to -4), while black-and-white photos of other content are
    # the false matches the colour check cannot see (docs/matching.md).
    grey_record_shift=-2,
    # A record's middle band against the photo's: a caption in the top or
    # bottom 15 % leaves the band within 26 PDQ and 4 pHash bits; distinct
    # photos' bands start at about (64, 8) (docs/matching.md, "Captions: the
    # middle band").
    band=_BAND_BOXES,
)

# For a record whose PDQ quality is unknown (a bare hash): two steps stricter.
# Most false matches of the default rule on package photographs are records of
# near-featureless images (sky, blur) meeting smooth registered photos; the
# quality gate catches them when the record says its quality, this rule when it
# does not (docs/matching.md, "Precision").
UNKNOWN_QUALITY_RULE = DEFAULT_RULE.shifted(-2)


# A pipeline may ask for the rule up to this many steps stricter
# (``Thresholds.strictness``): a point further down the trade-off curve between
# recall per edit and false exclusions per record (docs/matching.md, "Trade-off").
MAX_STRICTNESS = 4
_STRICTER = {0: (DEFAULT_RULE, UNKNOWN_QUALITY_RULE)} | {
    steps: (DEFAULT_RULE.shifted(-steps), UNKNOWN_QUALITY_RULE.shifted(-steps))
    for steps in range(1, MAX_STRICTNESS + 1)
}


def rule_for(query: QueryHashes, strictness: int = 0) -> MatchRule:
    """The registry's rule for a record: DEFAULT_RULE when the record carries
    its PDQ quality, UNKNOWN_QUALITY_RULE otherwise; ``strictness`` steps
    stricter (0 to MAX_STRICTNESS) when a pipeline asked for it."""
    known, unknown = _STRICTER[strictness]
    return known if query.pdq_quality is not None else unknown
