"""How strict a match the keypoints did not check must be at the registry's size.

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
fit; docs/matching.md, "Held back by the registry's size"). A match whose
colours agree is far more selective, but not enough at every size either:
it has a tail of its own (COLOURS_AGREE). A match the keypoints checked is
not held back."""

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


# A record form that never matches on its hashes alone.
NEVER = Tail(0.0, 1.0)
# By (hashes the record carries, whether it states its PDQ quality): the
# package photographs' fits (bench_precision.py, runs of 2026-11-28), the rate
# and the factor taken from the 45 Debian photographs (bench_precision.py
# --photos) where they hold back more; their figures in brackets.
UNCONFIRMED: dict[tuple[str, bool], Tail] = {
    # Records with quality and no colour: 1.2e-8 (8.3e-9 on the Debian
    # photographs); grey records without keypoints 1.1e-8 (1.9e-8). Tail
    # 19 / 82 / 314 pairs at k = 2, 3, 4: 4.06 x per step.
    ("pdq+phash", True): Tail(1.9e-8, 4.0),
    # Bare records (UNKNOWN_QUALITY_RULE, itself two steps stricter): 5.5e-9
    # (1.1e-9); 18 / 68 / 197 pairs at k = 3, 4, 5: 3.31 x.
    ("pdq+phash", False): Tail(5.5e-9, 3.3),
    # A PDQ with its quality: 1.3e-10 (1.1e-9); 5 / 10 / 42 pairs at k = 2, 3,
    # 4 on the Debian photographs: 2.9 x (6 / 30 at k = 4, 5 on the package ones).
    ("pdq", True): Tail(1.1e-9, 2.9),
    # A bare PDQ: 4.6e-10 (5.1e-10); 6 / 24 / 53 pairs at k = 3, 4, 5 (Debian): 2.97 x.
    ("pdq", False): Tail(5.1e-10, 2.9),
    # A pHash with its quality: 7.8e-9 (9.5e-10); 8 / 28 / 88 pairs at k = 2, 3, 4: 3.32 x.
    ("phash", True): Tail(7.8e-9, 3.3),
    # A bare pHash alone never matches (rule.py): nothing to hold back.
    ("phash", False): NEVER,
}
# A match whose colours agree (a colour record against a colour photo
# registered without keypoints): 2.5e-11 per photo on the package
# photographs, 1.4e-10 on the Debian ones, 2.0e-9 on the 121 GCompris ones,
# falling 4.7 x (GCompris) to 12 x (package) per step (bench_colour.py
# --product, its strictness table): the largest rate, the slowest fall.
COLOURS_AGREE = Tail(2.0e-9, 4.7)


def record_form(query: QueryHashes) -> tuple[str, bool]:
    """What the record carries, as UNCONFIRMED is keyed."""
    hashes = "+".join(name for name, value in (("pdq", query.pdq), ("phash", query.phash)) if value)
    return hashes, query.pdq_quality is not None


def held_back_strictness(photos: int, query: QueryHashes, *, colours_agree: bool) -> int:
    """Steps stricter than the registry's rule (0 to MAX_STRICTNESS) that a
    match of ``query`` the keypoints did not check is judged by, in a
    registry of ``photos`` photos: by COLOURS_AGREE's tail when the colours
    were compared and agreed, by the record form's (UNCONFIRMED) otherwise."""
    tail = COLOURS_AGREE if colours_agree else UNCONFIRMED.get(record_form(query), NEVER)
    return tail_strictness(photos, tail)


def form_strictness(photos: int, form: tuple[str, bool]) -> int:
    """``tail_strictness`` of a record form nothing confirms (UNCONFIRMED's keys)."""
    return tail_strictness(photos, UNCONFIRMED.get(form, NEVER))


def tail_strictness(photos: int, tail: Tail) -> int:
    """The fewest steps that bring the expected false exclusions per record,
    ``photos`` x the tail's rate, to FALSE_EXCLUSION_TARGET; MAX_STRICTNESS
    when none does."""
    expected = photos * tail.rate
    for steps in range(MAX_STRICTNESS + 1):
        if expected <= FALSE_EXCLUSION_TARGET:
            return steps
        expected /= tail.factor
    return MAX_STRICTNESS


def held_back_table(photos: int) -> list[dict[str, object]]:
    """How a match the keypoints did not check is judged in a registry of
    ``photos`` photos: per record form nothing confirms, then for a match
    whose colours agree (GET /api/v1/registry)."""
    rows: list[dict[str, object]] = [
        {
            "hashes": hashes,
            "pdq_quality": quality,
            "colours_agree": False,
            "strictness": tail_strictness(photos, tail),
        }
        for (hashes, quality), tail in UNCONFIRMED.items()
    ]
    rows.append(
        {
            "hashes": "pdq+phash",
            "pdq_quality": True,
            "colours_agree": True,
            "strictness": tail_strictness(photos, COLOURS_AGREE),
        }
    )
    return rows
