"""A record's URL against claims: URL prefix, domain with its subdomains, platform handle."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import urlsplit


def _host_and_path(url: str) -> tuple[str, str]:
    """Host (without "www.") and path of a URL normalised by
    ``registry.claims.normalize_url`` (scheme://host[:port]/path[?query], host
    lowercase); string slicing, several times faster than urlsplit, which is
    kept for anything else (an IPv6 host, a URL not in that form)."""
    _, separator, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if separator and slash and netloc and "[" not in netloc and "@" not in netloc:
        host = netloc.partition(":")[0]
        path = "/" + tail.partition("?")[0].partition("#")[0]
    else:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path
    if host.startswith("www."):
        host = host[4:]
    return host, path


def host_suffixes(url: str) -> list[str]:
    """The domains a URL's host falls under: the host and each parent domain
    ("a.b.example.org" → a.b.example.org, b.example.org, example.org, org).
    A domain claim covers the URL exactly when its value is one of these, the
    rule ``claim_hits`` applies by comparison."""
    host, _ = _host_and_path(url)
    if not host:
        return []
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def claim_hits(
    url: str, claims_by_kind: Mapping[str, Iterable[tuple[int, str]]]
) -> Iterator[tuple[int, str]]:
    """(claim id, kind) of every claim the normalised ``url`` falls under;
    ``claims_by_kind`` maps a kind to its (claim id, normalised value) pairs."""
    host, path = _host_and_path(url)
    for claim, value in claims_by_kind.get("url_prefix", ()):
        if url.startswith(value):
            yield claim, "url_prefix"
    for claim, domain in claims_by_kind.get("domain", ()):
        if host == domain or host.endswith("." + domain):
            yield claim, "domain"
    first_segment = path.strip("/").split("/", 1)[0].lstrip("@").lower()
    for claim, value in claims_by_kind.get("handle", ()):
        platform, _, name = value.partition(":")
        on_platform = host in (platform, f"{platform}.com") or host.endswith("." + platform)
        if on_platform and first_segment == name:
            yield claim, "handle"
