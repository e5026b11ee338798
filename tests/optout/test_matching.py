"""The pure decision engine against a brute-force oracle and PRODUCT.md's semantics."""

from __future__ import annotations

import secrets
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from optout.matching import (
    DEFAULT_THRESHOLDS,
    Invalid,
    Record,
    Snapshot,
    SnapshotClaim,
    SnapshotOptOut,
    SnapshotPhoto,
    Thresholds,
    ThresholdTooLoose,
    decide,
    record_parse,
)
from optout.matching.rule import (
    DEFAULT_RULE,
    UNKNOWN_QUALITY_RULE,
    QueryHashes,
    VariantHashes,
    rule_for,
)
from optout.matching.urls import claim_hits, host_suffixes
from registry.colour import COLOUR_THRESHOLD, colour_signature
from registry.variants import DEFAULT_VARIANTS, Variant, variant_kind, variants_pack
from tests.fresh_python import LOADED_FRAMEWORKS, run_python
from tests.images import skimage_photo
from tests.optout.batch_helpers import SHA256_EVIDENCE


def flip_bits(hex_value: str, count: int, seed: int = 0) -> str:
    bits = len(hex_value) * 4
    value = int(hex_value, 16)
    positions = list(range(bits))
    rng = __import__("random").Random(seed)
    rng.shuffle(positions)
    for position in positions[:count]:
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def photo(key: int, creator: int = 1, variants: bytes = b"") -> SnapshotPhoto:
    return SnapshotPhoto(
        key=key,
        creator=creator,
        sha256=secrets.token_hex(32),
        pdq=secrets.token_hex(32),
        pdq_quality=100,
        phash=secrets.token_hex(8),
        variants=variants,
    )


def opt_out(key: int, creator: int = 1, **kwargs: object) -> SnapshotOptOut:
    defaults: dict[str, object] = {"uses": ("ai_training",), "scope": "all_photos"}
    defaults.update(kwargs)
    return SnapshotOptOut(
        key=key, public_id=f"00000000-0000-0000-0000-{key:012d}", creator=creator, **defaults
    )  # type: ignore[arg-type]


def decide_single(
    snapshot: Snapshot, record: Record, use: str = "ai_training", organization: int | None = None
):
    return decide(
        [record], snapshot, use=use, organization=organization, thresholds=DEFAULT_THRESHOLDS
    )[0]


def test_sha256_equality_excludes_and_other_bytes_allow():
    given_photo = photo(1)
    snapshot = Snapshot(version=5, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])

    hit = decide_single(snapshot, Record(id="r1", sha256=given_photo.sha256))
    miss = decide_single(snapshot, Record(id="r2", sha256=secrets.token_hex(32)))

    assert hit.decision == "exclude"
    assert [m.as_dict() for m in hit.matches] == [
        {
            "kind": "sha256",
            "distance": 0,
            "threshold": 0,
            "opt_out": "00000000-0000-0000-0000-000000000001",
            "uses": ["ai_training"],
            "evidence": SHA256_EVIDENCE,
        }
    ]
    assert miss.decision == "allow" and miss.matches == ()


ORIGINAL = DEFAULT_RULE.kinds["original"]
CROP = DEFAULT_RULE.kinds["crop"]


def test_a_pdq_only_record_matches_up_to_the_single_hash_threshold():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    limit = ORIGINAL.pdq_only
    assert limit is not None
    at = Record(id="a", pdq=flip_bits(given_photo.pdq, limit), pdq_quality=90)
    beyond = Record(id="b", pdq=flip_bits(given_photo.pdq, limit + 1), pdq_quality=90)

    match = decide_single(snapshot, at).matches[0]
    assert (match.kind, match.distance, match.threshold) == ("pdq", limit, limit)
    assert match.evidence is not None and match.evidence["basis"] == "pdq"
    assert decide_single(snapshot, beyond).decision == "allow"


def test_a_bare_pdq_is_held_to_the_stricter_rule():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    limit = UNKNOWN_QUALITY_RULE.kinds["original"].pdq_only
    assert limit is not None and limit < (ORIGINAL.pdq_only or 0)

    assert decide_single(snapshot, Record(id="a", pdq=flip_bits(given_photo.pdq, limit))).matches
    beyond = Record(id="b", pdq=flip_bits(given_photo.pdq, limit + 1))
    assert decide_single(snapshot, beyond).decision == "allow"


def test_a_phash_only_record_matches_only_within_the_single_hash_threshold():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    limit = UNKNOWN_QUALITY_RULE.kinds["original"].phash_only
    at = Record(
        id="a",
        phash=given_photo.phash if limit is None else flip_bits(given_photo.phash, max(limit, 0)),
    )
    beyond = Record(
        id="b", phash=flip_bits(given_photo.phash, (limit or 0) + 1 if limit and limit >= 0 else 1)
    )

    expected = "exclude" if limit is not None and limit >= 0 else "allow"
    assert decide_single(snapshot, at).decision == expected
    assert decide_single(snapshot, beyond).decision == "allow"


def test_a_record_with_both_hashes_matches_inside_a_box_of_the_photo():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])

    def record(pdq_bits: int, phash_bits: int) -> Record:
        return Record(
            id=f"{pdq_bits}-{phash_bits}",
            pdq=flip_bits(given_photo.pdq, pdq_bits),
            phash=flip_bits(given_photo.phash, phash_bits),
            pdq_quality=90,
        )

    for box in ORIGINAL.both:
        inside = decide_single(snapshot, record(box.pdq, box.phash))
        assert inside.decision == "exclude"
        evidence = inside.matches[0].evidence
        assert evidence is not None
        assert (evidence["variant"], evidence["basis"]) == ("original", "pdq+phash")
        assert (evidence["pdq_distance"], evidence["phash_distance"]) == (box.pdq, box.phash)
        # One more bit on either hash leaves this box; it matches only when
        # another box holds the pair.
        for pdq_bits, phash_bits in ((box.pdq + 1, box.phash), (box.pdq, box.phash + 1)):
            expected = any(other.contains(pdq_bits, phash_bits) for other in ORIGINAL.both)
            outcome = decide_single(snapshot, record(pdq_bits, phash_bits)).decision
            assert outcome == ("exclude" if expected else "allow"), (box, pdq_bits, phash_bits)


def test_a_cropped_repost_matches_the_crop_variant_and_names_it():
    crop = Variant("crop_centre_90", secrets.token_hex(32), 80, secrets.token_hex(8))
    given_photo = photo(1, variants=variants_pack([crop]))
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    box = CROP.both[0]

    def record(pdq_bits: int, phash_bits: int) -> Record:
        return Record(
            id="r",
            pdq=flip_bits(crop.pdq, pdq_bits),
            phash=flip_bits(crop.phash, phash_bits),
            pdq_quality=90,
        )

    match = decide_single(snapshot, record(box.pdq, box.phash)).matches[0]
    assert match.evidence is not None
    assert match.evidence["variant"] == "crop_centre_90"
    assert (match.kind, match.distance, match.threshold) == ("pdq", box.pdq, box.pdq)
    assert decide_single(snapshot, record(box.pdq + 1, box.phash)).decision == "allow"
    assert decide_single(snapshot, record(box.pdq, box.phash + 1)).decision == "allow"


def test_a_low_quality_record_matches_only_nearly_exactly():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    low = DEFAULT_RULE.low_quality.both[0]
    widest = max(ORIGINAL.both, key=lambda box: box.pdq)

    def record(pdq_bits: int, phash_bits: int) -> Record:
        return Record(
            id="r",
            pdq=flip_bits(given_photo.pdq, pdq_bits),
            phash=flip_bits(given_photo.phash, phash_bits),
            pdq_quality=DEFAULT_RULE.min_quality - 1,
        )

    result = decide_single(snapshot, record(low.pdq, low.phash))
    assert result.decision == "exclude"
    assert result.matches[0].evidence is not None
    assert result.matches[0].evidence["quality"] == "low_query"
    assert decide_single(snapshot, record(widest.pdq, widest.phash)).decision == "allow"


def test_refusing_ai_training_refuses_generative_training_but_not_inference():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    record = Record(id="r", sha256=given_photo.sha256)

    assert decide_single(snapshot, record, use="ai_generative_training").decision == "exclude"
    assert decide_single(snapshot, record, use="ai_inference").decision == "allow"
    assert decide_single(snapshot, record, use="data_mining").decision == "allow"


def test_refusing_generative_training_does_not_refuse_all_training():
    given_photo = photo(1)
    snapshot = Snapshot(
        version=1,
        photos=[given_photo],
        claims=[],
        opt_outs=[opt_out(1, uses=("ai_generative_training",))],
    )
    record = Record(id="r", sha256=given_photo.sha256)

    assert decide_single(snapshot, record, use="ai_training").decision == "allow"
    assert decide_single(snapshot, record, use="ai_generative_training").decision == "exclude"


def test_organization_exception_allows_only_that_organization():
    given_photo = photo(1)
    snapshot = Snapshot(
        version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1, exceptions=frozenset({7}))]
    )
    record = Record(id="r", sha256=given_photo.sha256)

    assert decide_single(snapshot, record, organization=7).decision == "allow"
    assert decide_single(snapshot, record, organization=8).decision == "exclude"


def test_scope_photos_covers_only_chosen_photos_and_all_photos_covers_every_photo_of_the_creator():
    chosen, other, strangers = photo(1, creator=1), photo(2, creator=1), photo(3, creator=2)
    only_chosen = Snapshot(
        version=1,
        photos=[chosen, other, strangers],
        claims=[],
        opt_outs=[opt_out(1, scope="photos", photos=frozenset({1}))],
    )
    everything = Snapshot(
        version=1, photos=[chosen, other, strangers], claims=[], opt_outs=[opt_out(1)]
    )

    assert [
        decide_single(only_chosen, Record(id=str(p.key), sha256=p.sha256)).decision
        for p in (chosen, other, strangers)
    ] == ["exclude", "allow", "allow"]
    assert [
        decide_single(everything, Record(id=str(p.key), sha256=p.sha256)).decision
        for p in (chosen, other, strangers)
    ] == ["exclude", "exclude", "allow"]


def test_url_claims_match_prefix_domain_with_subdomains_and_handles():
    claims = [
        SnapshotClaim(
            key=1, creator=1, kind="url_prefix", value="https://photos.example.net/alice/"
        ),
        SnapshotClaim(key=2, creator=1, kind="domain", value="alice.org"),
        SnapshotClaim(key=3, creator=1, kind="handle", value="instagram:alice"),
    ]
    snapshot = Snapshot(
        version=1,
        photos=[],
        claims=claims,
        opt_outs=[opt_out(1, scope="claims", claims=frozenset({1, 2, 3}))],
    )

    def decision(url: str) -> str:
        parsed = record_parse({"id": "u", "url": url})
        assert isinstance(parsed, Record)
        return decide_single(snapshot, parsed).decision

    assert decision("https://photos.example.net/alice/2024/cat.jpg") == "exclude"
    assert decision("HTTPS://Photos.Example.NET:443/alice/cat.jpg#top") == "exclude"
    assert decision("https://photos.example.net/bob/cat.jpg") == "allow"
    assert decision("http://alice.org/x.jpg") == "exclude"
    assert decision("https://cdn.img.alice.org/x.jpg") == "exclude"
    assert decision("https://www.alice.org/x.jpg") == "exclude"
    assert decision("https://notalice.org/x.jpg") == "allow"
    assert decision("https://www.instagram.com/alice/p/123") == "exclude"
    assert decision("https://instagram.com/alicia/p/123") == "allow"


def test_invalid_records_are_reported_with_reason_and_row():
    parsed = [
        record_parse({"id": "a", "sha256": "xyz"}, row=1),
        record_parse({"sha256": "0" * 64}, row=2),
        record_parse({"id": "c"}, row=3),
        record_parse({"id": "d", "phash": "0" * 15}, row=4),
        record_parse({"id": "e", "url": "ftp://example.org/a"}, row=5),
        record_parse("nope", row=6),
    ]

    assert all(isinstance(p, Invalid) for p in parsed)
    assert [(p.row, p.reason) for p in parsed if isinstance(p, Invalid)] == [
        (1, "sha256 must be 64 hexadecimal digits"),
        (2, "id is required"),
        (3, "record has none of sha256, pdq, phash, url"),
        (4, "phash must be 16 hexadecimal digits"),
        (5, "url: 'ftp://example.org/a' is not an http or https URL"),
        (6, "record must be an object"),
    ]


def test_stricter_thresholds_are_accepted_and_looser_refused():
    assert DEFAULT_THRESHOLDS.stricter(pdq=10) == Thresholds(pdq=10, phash=DEFAULT_THRESHOLDS.phash)
    for looser in (
        {"pdq": DEFAULT_THRESHOLDS.pdq + 1},
        {"phash": DEFAULT_THRESHOLDS.phash + 1},
        {"pdq": -1},
    ):
        try:
            DEFAULT_THRESHOLDS.stricter(**looser)
        except ThresholdTooLoose:
            continue
        raise AssertionError(f"{looser} was accepted")


def test_a_stricter_threshold_caps_every_perceptual_match():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    record = Record(
        id="r",
        pdq=flip_bits(given_photo.pdq, 20),
        phash=flip_bits(given_photo.phash, 6),
        pdq_quality=90,
    )

    def outcome(thresholds: Thresholds):
        return decide(
            [record], snapshot, use="ai_training", organization=None, thresholds=thresholds
        )[0]

    assert outcome(DEFAULT_THRESHOLDS).decision == "exclude"
    capped = outcome(DEFAULT_THRESHOLDS.stricter(pdq=24)).matches[0]
    assert capped.threshold == 24 and capped.evidence is not None
    assert capped.evidence["pdq_threshold"] == 24
    assert outcome(DEFAULT_THRESHOLDS.stricter(pdq=19)).decision == "allow"
    assert outcome(DEFAULT_THRESHOLDS.stricter(phash=5)).decision == "allow"


@settings(max_examples=80, deadline=None)
@given(
    codes=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**256 - 1),
            st.integers(min_value=0, max_value=2**64 - 1),
            st.integers(min_value=0, max_value=100),
        ),
        min_size=1,
        max_size=12,
    ),
    pdq_flips=st.integers(min_value=0, max_value=64),
    phash_flips=st.integers(min_value=0, max_value=24),
    mode=st.sampled_from(["both", "pdq", "phash"]),
    quality=st.sampled_from([None, 10, 90]),
)
def test_the_snapshot_applies_the_rule_to_every_variant(
    codes, pdq_flips, phash_flips, mode, quality
):
    """The brute-force snapshot's prefilter never drops a variant the rule
    accepts: its decisions equal the rule evaluated on every variant."""
    names = [name for name in DEFAULT_VARIANTS if name != "original"]
    variants = [
        Variant(names[i % len(names)], f"{pdq:064x}", q, f"{ph:016x}")
        for i, (pdq, ph, q) in enumerate(codes[1:])
    ]
    pdq, ph, q = codes[0]
    given_photo = SnapshotPhoto(
        key=1,
        creator=1,
        sha256="0" * 64,
        pdq=f"{pdq:064x}",
        pdq_quality=q,
        phash=f"{ph:016x}",
        variants=variants_pack(variants),
    )
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    target = variants[-1] if variants else given_photo
    query = QueryHashes(
        pdq=flip_bits(target.pdq, pdq_flips) if mode != "phash" else "",
        phash=flip_bits(target.phash, phash_flips) if mode != "pdq" else "",
        pdq_quality=quality if mode != "phash" else None,
    )
    record = Record(id="r", pdq=query.pdq, phash=query.phash, pdq_quality=query.pdq_quality)
    everything = [
        VariantHashes("original", "original", given_photo.pdq, q, given_photo.phash),
        *(
            VariantHashes(v.name, variant_kind(v.name), v.pdq, v.pdq_quality, v.phash)
            for v in variants
        ),
    ]
    expected = any(rule_for(query).evaluate(query, v).matched for v in everything)

    assert (decide_single(snapshot, record).decision == "exclude") == expected


# --- domain claims looked up by host suffix ---------------------------------------

_LABELS = st.sampled_from(["example", "org", "com", "cdn", "a", "photos", "www", "xample"])


@settings(max_examples=300, deadline=None)
@given(
    host=st.lists(_LABELS, min_size=1, max_size=5).map(".".join),
    domains=st.lists(st.lists(_LABELS, min_size=1, max_size=3).map(".".join), max_size=6),
)
def test_host_suffix_lookup_finds_exactly_the_domains_the_comparison_rule_finds(
    host: str, domains: list[str]
) -> None:
    url = f"https://{host}/picture.jpg"
    pairs = list(enumerate(domains))

    by_comparison = {claim for claim, kind in claim_hits(url, {"domain": pairs})}
    by_suffix = {claim for claim, domain in pairs if domain in host_suffixes(url)}

    assert by_suffix == by_comparison


@settings(max_examples=300, deadline=None)
@given(
    host=st.lists(_LABELS, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "org"])),
    www=st.booleans(),
    port=st.sampled_from(["", ":443", ":8080"]),
    path=st.text(alphabet="abc/@%._-", max_size=12),
    query=st.sampled_from(["", "?q=/a/b", "?x=1#frag"]),
)
def test_the_fast_url_split_equals_urlsplit_on_normalised_urls(host, www, port, path, query):
    from urllib.parse import urlsplit

    from optout.matching.urls import _host_and_path
    from registry.claims import normalize_url

    url = normalize_url(f"https://{'www.' if www else ''}{host}{port}/{path}{query}")
    parts = urlsplit(url)
    expected_host = parts.hostname or ""
    expected_host = expected_host[4:] if expected_host.startswith("www.") else expected_host

    assert _host_and_path(url) == (expected_host, parts.path)


# --- colour signatures --------------------------------------------------------------

COFFEE = colour_signature(skimage_photo("coffee"))
CAT = colour_signature(skimage_photo("chelsea"))
COFFEE_GREY = colour_signature(skimage_photo("coffee").convert("L"))
CAMERA = colour_signature(skimage_photo("camera"))


def test_a_record_carries_its_colour_lowercased_or_is_invalid_saying_why():
    pdq = "ab" * 32
    parsed = record_parse({"id": "a", "pdq": pdq, "colour": f"  {COFFEE.upper()} "}, row=1)

    assert isinstance(parsed, Record) and parsed.colour == COFFEE
    assert record_parse({"id": "b", "phash": "0" * 16, "colour": COFFEE}).colour == COFFEE
    assert record_parse({"id": "c", "pdq": pdq, "colour": ""}).colour == ""
    assert record_parse({"id": "d", "pdq": pdq, "colour": None}).colour == ""
    invalid = [
        record_parse({"id": "e", "pdq": pdq, "colour": COFFEE[:-2]}, row=2),
        record_parse({"id": "f", "pdq": pdq, "colour": "g" + COFFEE[1:]}, row=3),
        record_parse({"id": "g", "pdq": pdq, "colour": 12}, row=4),
        record_parse({"id": "h", "sha256": "0" * 64, "colour": COFFEE}, row=5),
        record_parse({"id": "i", "url": "https://example.org/a.jpg", "colour": COFFEE}, row=6),
    ]
    assert [(p.row, p.reason) for p in invalid if isinstance(p, Invalid)] == [
        (2, "colour must be 66 hexadecimal digits"),
        (3, "colour must be 66 hexadecimal digits"),
        (4, "colour must be 66 hexadecimal digits"),
        (5, "colour needs a pdq or a phash"),
        (6, "colour needs a pdq or a phash"),
    ]


def test_a_record_carries_its_band_lowercased_or_is_invalid_saying_why():
    pdq = "ab" * 32
    band = "cd" * 40 + "5a"  # PDQ, pHash, quality 90
    parsed = record_parse({"id": "a", "pdq": pdq, "band": f" {band.upper()} "}, row=1)

    assert isinstance(parsed, Record) and parsed.band == band
    assert record_parse({"id": "b", "pdq": pdq, "band": None}).band == ""
    invalid = [
        record_parse({"id": "c", "pdq": pdq, "band": band[:-2]}, row=2),
        record_parse({"id": "d", "pdq": pdq, "band": "g" + band[1:]}, row=3),
        record_parse({"id": "e", "pdq": pdq, "band": band[:-2] + "65"}, row=4),
        record_parse({"id": "f", "sha256": "0" * 64, "band": band}, row=5),
    ]
    assert [(p.row, p.reason) for p in invalid if isinstance(p, Invalid)] == [
        (2, "band must be 82 hexadecimal digits"),
        (3, "band must be 82 hexadecimal digits"),
        (4, "band: its last two digits (a PDQ quality) exceed 100"),
        (5, "band needs a pdq or a phash"),
    ]


def test_a_record_whose_colours_disagree_with_the_photo_is_allowed():
    """Equal PDQ and pHash, the coffee cup registered: the cat's colours allow the
    record, the cup's own (or no colour, or a grayscale copy's) exclude it."""
    crop = Variant("crop_centre_90", secrets.token_hex(32), 80, secrets.token_hex(8))
    given_photo = replace(
        photo(1, variants=variants_pack([crop])),
        colour=COFFEE,
        variant_colours=bytes.fromhex(COFFEE),
    )
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])

    for target in (given_photo, crop):

        def record(colour: str, target=target) -> Record:
            return Record(id="r", pdq=target.pdq, phash=target.phash, pdq_quality=90, colour=colour)

        assert decide_single(snapshot, record(CAT)).decision == "allow"
        assert decide_single(snapshot, record("")).decision == "exclude"
        grey = decide_single(snapshot, record(COFFEE_GREY))
        assert grey.decision == "exclude"
        assert grey.matches[0].evidence["colour_distance"] is None
        same = decide_single(snapshot, record(COFFEE))
        assert same.decision == "exclude"
        evidence = same.matches[0].evidence
        assert evidence["variant"] == ("original" if target is given_photo else "crop_centre_90")
        assert (evidence["colour_distance"], evidence["colour_threshold"]) == (
            0.0,
            COLOUR_THRESHOLD,
        )


def test_a_photo_registered_without_colours_matches_on_its_hashes_alone():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    record = Record(
        id="r", pdq=given_photo.pdq, phash=given_photo.phash, pdq_quality=90, colour=CAT
    )

    result = decide_single(snapshot, record)

    assert result.decision == "exclude"
    assert result.matches[0].evidence["colour_distance"] is None


def test_a_black_and_white_photo_never_matches_a_colour_record():
    given_photo = replace(photo(1), colour=CAMERA)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])

    def record(colour: str) -> Record:
        return Record(
            id="r", pdq=given_photo.pdq, phash=given_photo.phash, pdq_quality=90, colour=colour
        )

    assert decide_single(snapshot, record(COFFEE)).decision == "allow"
    # A grey record of the same photo matches; of another, its luminance
    # layout refuses it even at equal hashes.
    assert decide_single(snapshot, record(CAMERA)).decision == "exclude"
    grey_other = decide_single(snapshot, record(COFFEE_GREY))
    assert grey_other.decision == "allow"
    # SHA-256 equality is not a perceptual match: no colour check.
    exact = Record(id="r", sha256=given_photo.sha256, pdq=given_photo.pdq, colour=COFFEE)
    assert [m.kind for m in decide_single(snapshot, exact).matches] == ["sha256"]


def test_the_decision_core_imports_no_django_orm_or_database_driver() -> None:
    """decide() and everything it reads through (rule, snapshot, live index, URLs)
    is a pure core: importing it loads neither Django nor a database driver."""
    snippet = (
        "import sys\n"
        "import optout.matching, optout.matching.decide, optout.matching.live\n"
        "import optout.matching.rule, optout.matching.snapshot, optout.matching.urls\n"
        f"print({LOADED_FRAMEWORKS})\n"
    )

    result = run_python(snippet)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
