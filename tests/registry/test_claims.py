"""registry.claims: URL normalisation's fast path agrees with urlsplit's."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from registry.claims import ClaimInvalid, _normalize_url_parsed, normalize_url


def outcome(function, value: str) -> str:  # type: ignore[no-untyped-def]
    try:
        return "ok " + function(value)
    except ClaimInvalid as error:
        return "invalid " + str(error)


_label = st.from_regex(r"[A-Za-z0-9-]{0,8}", fullmatch=True)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_port = st.one_of(st.just(""), st.from_regex(r":[0-9]{0,6}", fullmatch=True))
_tail = st.text(alphabet=st.sampled_from(list("/?#=&;%.:@ aZ~_-\t\x00é")), max_size=16)
_scheme = st.sampled_from(["http", "HTTPS", "hTtp", "ftp", "https", ""])


@settings(max_examples=500)
@given(scheme=_scheme, host=_host, port=_port, tail=_tail)
@example(scheme="http", host="-A.b.com", port="", tail="/")
@example(scheme="http", host="a.b.com.", port=":99999", tail="/")
@example(scheme="http", host="A.B.COM", port=":080", tail="/x?")
@example(scheme="https", host="a.b.com", port=":443", tail="?q=1#frag")
def test_the_fast_path_gives_what_urlsplit_gives(
    scheme: str, host: str, port: str, tail: str
) -> None:
    url = f"{scheme}://{host}{port}{tail}"

    reference = outcome(_normalize_url_parsed, url.strip())

    assert outcome(normalize_url, url) == reference


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("https://www.example.com:443/a/B?x=1#f", "https://www.example.com/a/B?x=1"),
        ("http://a.example.com:8080", "http://a.example.com:8080/"),
        ("http://a.b.com/x?", "http://a.b.com/x"),
        ("http://user@a.b.com/x", "http://a.b.com/x"),
    ],
)
def test_urls_are_normalised(url: str, normalised: str) -> None:
    assert normalize_url(url) == normalised
