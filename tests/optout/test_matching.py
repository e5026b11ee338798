"""The pure decision engine against a brute-force oracle and PRODUCT.md's semantics."""

from __future__ import annotations

import secrets

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
from optout.matching.urls import claim_hits, host_suffixes
from registry.hashing import hamming


def flip_bits(hex_value: str, count: int, seed: int = 0) -> str:
    bits = len(hex_value) * 4
    value = int(hex_value, 16)
    positions = list(range(bits))
    rng = __import__("random").Random(seed)
    rng.shuffle(positions)
    for position in positions[:count]:
        value ^= 1 << position
    return f"{value:0{len(hex_value)}x}"


def photo(key: int, creator: int = 1) -> SnapshotPhoto:
    return SnapshotPhoto(
        key=key,
        creator=creator,
        sha256=secrets.token_hex(32),
        pdq=secrets.token_hex(32),
        pdq_quality=100,
        phash=secrets.token_hex(8),
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
        }
    ]
    assert miss.decision == "allow" and miss.matches == ()


def test_pdq_at_threshold_matches_and_one_bit_more_does_not():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])
    at = flip_bits(given_photo.pdq, 31)
    beyond = flip_bits(given_photo.pdq, 32)

    assert decide_single(snapshot, Record(id="a", pdq=at)).matches[0].distance == 31
    assert decide_single(snapshot, Record(id="b", pdq=beyond)).decision == "allow"


def test_phash_at_threshold_matches_and_one_bit_more_does_not():
    given_photo = photo(1)
    snapshot = Snapshot(version=1, photos=[given_photo], claims=[], opt_outs=[opt_out(1)])

    assert (
        decide_single(snapshot, Record(id="a", phash=flip_bits(given_photo.phash, 8))).decision
        == "exclude"
    )
    assert (
        decide_single(snapshot, Record(id="b", phash=flip_bits(given_photo.phash, 9))).decision
        == "allow"
    )


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
    assert DEFAULT_THRESHOLDS.stricter(pdq=10) == Thresholds(pdq=10, phash=8)
    for looser in ({"pdq": 32}, {"phash": 9}, {"pdq": -1}):
        try:
            DEFAULT_THRESHOLDS.stricter(**looser)
        except ThresholdTooLoose:
            continue
        raise AssertionError(f"{looser} was accepted")


@settings(max_examples=60, deadline=None)
@given(
    registered=st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=40),
    query=st.integers(min_value=0, max_value=2**64 - 1),
    flips=st.integers(min_value=0, max_value=12),
    threshold=st.integers(min_value=0, max_value=8),
)
def test_phash_range_search_equals_brute_force(registered, query, flips, threshold):
    photos = [
        SnapshotPhoto(key=i, creator=1, sha256=f"{i:064x}", phash=f"{code:016x}")
        for i, code in enumerate(registered)
    ]
    near = f"{registered[0]:016x}"
    queries = [f"{query:016x}", flip_bits(near, flips, seed=query % 1000)]
    snapshot = Snapshot(version=1, photos=photos, claims=[], opt_outs=[opt_out(1)])

    for value in queries:
        found = sorted(snapshot.within("phash", value, threshold))
        oracle = sorted(
            (i, hamming(p.phash, value))
            for i, p in enumerate(photos)
            if hamming(p.phash, value) <= threshold
        )
        assert found == oracle


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
