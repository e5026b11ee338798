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
of the package photographs and the outside ones), per what a record carries,
with the factor each step stricter divides them by (the slope of the same
fit; docs/matching.md, "Held back by the registry's size")."""

from __future__ import annotations

from typing import NamedTuple

from optout.matching.rule import MAX_STRICTNESS, QueryHashes

# At most one false exclusion per 10 000 records checked (step 3b's target).
FALSE_EXCLUSION_TARGET = 1e-4


class Tail(NamedTuple):
    """A record form's false matches under the rule: ``rate`` per registered
    photo at the rule itself, divided by ``factor`` for every step stricter
    (the slope of the precision benchmark's log-linear fit of its tail)."""

    rate: float
    factor: float


# By (hashes the record carries, whether it states its PDQ quality); the
# package photographs' fits (bench_precision.py, run of 2026-11-28), the rate
# raised where an outside corpus measured more.
UNCONFIRMED: dict[tuple[str, bool], Tail] = {
    # Records with quality and no colour: 1.2e-8 (8.3e-9 on the Debian
    # photographs); grey records without keypoints 1.1e-8 (1.9e-8). Tail
    # 19 / 82 / 314 pairs at k = 2, 3, 4: 4.06 x per step.
    ("pdq+phash", True): Tail(1.9e-8, 4.0),
    # Bare records (UNKNOWN_QUALITY_RULE, itself two steps stricter): 5.5e-9
    # (1.1e-9); 18 / 68 / 197 pairs at k = 3, 4, 5: 3.31 x.
    ("pdq+phash", False): Tail(5.5e-9, 3.3),
    # A PDQ with its quality: 1.3e-10; 6 / 30 pairs at k = 4, 5 and on: 4.8 x.
    ("pdq", True): Tail(1.3e-10, 4.5),
    # A bare PDQ: 4.6e-10; 2.97 x.
    ("pdq", False): Tail(4.6e-10, 2.9),
    # A pHash with its quality: 7.8e-9; 8 / 28 / 88 pairs at k = 2, 3, 4: 3.32 x.
    ("phash", True): Tail(7.8e-9, 3.3),
    # A bare pHash alone never matches (rule.py): nothing to hold back.
    ("phash", False): Tail(0.0, 1.0),
}


def record_form(query: QueryHashes) -> tuple[str, bool]:
    """What the record carries, as UNCONFIRMED is keyed."""
    hashes = "+".join(name for name, value in (("pdq", query.pdq), ("phash", query.phash)) if value)
    return hashes, query.pdq_quality is not None


def unconfirmed_strictness(photos: int, query: QueryHashes) -> int:
    """Steps stricter than the registry's rule (0 to MAX_STRICTNESS) that a
    match of ``query`` nothing confirms is judged by, in a registry of
    ``photos`` photos (``form_strictness`` of the record's form)."""
    return form_strictness(photos, record_form(query))


def form_strictness(photos: int, form: tuple[str, bool]) -> int:
    """The fewest steps that bring the expected false exclusions per record
    of this form (UNCONFIRMED's keys) to FALSE_EXCLUSION_TARGET in a
    registry of ``photos`` photos; MAX_STRICTNESS when none does."""
    tail = UNCONFIRMED.get(form, Tail(0.0, 1.0))
    expected = photos * tail.rate
    for steps in range(MAX_STRICTNESS + 1):
        if expected <= FALSE_EXCLUSION_TARGET:
            return steps
        expected /= tail.factor
    return MAX_STRICTNESS
