"""How strict a match nothing independent confirms must be at the registry's size.

A record is falsely excluded with probability about N x p: N the photos the
registry holds, p the rate at which one of them (any of its variants) matches
a distinct photo under the rule (docs/matching.md, "Precision"). The colour
check and the geometric check (decide.py) make p small for the matches they
judge; a match neither can judge — a record or a photo without colour and
without keypoints (hashes from other tools, a grey pair without keypoints) —
rests on the two luminance hashes alone, whose p on real photographs is
10⁻⁸-ish: at a million photos about one record in a hundred would be excluded
for nothing. Such a match is therefore judged by the rule as many steps
stricter (``MatchRule.shifted``) as keep N x p at or under
``FALSE_EXCLUSION_TARGET`` per record, up to ``MAX_STRICTNESS``: the full
rule (every crop, mirror and rotation) for small registries, near-exact
copies only for large ones.

The rates are the precision benchmark's estimates at the rule itself
(``benchmarks/bench_precision.py``, ``bench_colour.py --product``; the larger
of the package photographs and the outside ones), per what a record carries;
each step stricter divides them by ``STEP_FACTOR`` or more (the tails measured
fall 4 to 7 x per step; docs/matching.md, "Trade-off")."""

from __future__ import annotations

from optout.matching.rule import MAX_STRICTNESS, QueryHashes

# At most one false exclusion per 10 000 records checked (step 3b's target).
FALSE_EXCLUSION_TARGET = 1e-4
STEP_FACTOR = 4.0
# Per-photo false-match rate of the rule for a match nothing confirms, by
# (hashes the record carries, whether it states its PDQ quality).
UNCONFIRMED_RATE: dict[tuple[str, bool], float] = {
    # Records with quality and no colour: 1.2e-8 (package photographs, 8.3e-9
    # on the Debian ones); grey records without keypoints: 1.1e-8 / 1.9e-8.
    ("pdq+phash", True): 1.9e-8,
    # Bare records (UNKNOWN_QUALITY_RULE, already two steps stricter): 5.5e-9 / 1.1e-9.
    ("pdq+phash", False): 5.5e-9,
    ("pdq", True): 1.3e-10,
    ("pdq", False): 4.6e-10,
    ("phash", True): 7.8e-9,
    # A bare pHash alone never matches (rule.py): nothing to hold back.
    ("phash", False): 0.0,
}


def record_form(query: QueryHashes) -> tuple[str, bool]:
    """What the record carries, as UNCONFIRMED_RATE is keyed."""
    hashes = "+".join(name for name, value in (("pdq", query.pdq), ("phash", query.phash)) if value)
    return hashes, query.pdq_quality is not None


def unconfirmed_strictness(photos: int, query: QueryHashes) -> int:
    """Steps stricter than the registry's rule (0 to MAX_STRICTNESS) that a
    match of ``query`` nothing confirms is judged by, in a registry of
    ``photos`` photos (``form_strictness`` of the record's form)."""
    return form_strictness(photos, record_form(query))


def form_strictness(photos: int, form: tuple[str, bool]) -> int:
    """The fewest steps that bring the expected false exclusions per record
    of this form (UNCONFIRMED_RATE's keys) to FALSE_EXCLUSION_TARGET in a
    registry of ``photos`` photos; MAX_STRICTNESS when none does."""
    expected = photos * UNCONFIRMED_RATE.get(form, 0.0)
    for steps in range(MAX_STRICTNESS + 1):
        if expected <= FALSE_EXCLUSION_TARGET:
            return steps
        expected /= STEP_FACTOR
    return MAX_STRICTNESS
