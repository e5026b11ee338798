"""Normalising claims and URLs so that equal things compare equal. Pure.

- domain: lowercase, IDNA (punycode), no scheme, path, port, trailing dot or
  leading ``www.``; a claim on a domain covers its subdomains.
- URL prefix: ``scheme://host[:port]/path[?query]`` with lowercase scheme and
  host, default ports and fragments dropped; the path keeps its case.
- handle: ``platform:name``, lowercase, without a leading ``@``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HANDLE = re.compile(r"^([a-z0-9][a-z0-9.-]{0,62}):@?([a-z0-9._-]{1,100})$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
# The common form of a URL: http(s), a plain host name, maybe a port, a path
# and query of printable characters, maybe a fragment. Such a URL is normalised
# with string operations; anything else (user info, IPv6 literals, spaces,
# control characters, odd ports) goes through urlsplit. Both give the same
# result (tests/registry/test_claims.py).
_SIMPLE_URL = re.compile(
    r"([hH][tT][tT][pP][sS]?)://([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?"
    r"([/?][^#\x00-\x20\x7f]*)?(?:#[^\x00-\x20\x7f]*)?"
)


class ClaimInvalid(ValueError):
    """The value cannot be normalised; the message says why."""


@lru_cache(maxsize=65_536)
def _host(raw: str) -> str:
    """A host name, lowercase and IDNA-encoded; raises ClaimInvalid. Cached:
    the URLs of a manifest share few hosts, and IDNA encoding is most of the
    cost of normalising a URL."""
    host = raw.strip().rstrip(".").lower()
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ClaimInvalid(f"{raw!r} is not a valid host name") from None
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ClaimInvalid(f"{raw!r} is not a valid domain name (like example.com)")
    return host


def normalize_domain(value: str) -> str:
    raw = value.strip()
    if "://" in raw:
        raw = urlsplit(raw).hostname or ""
    raw = raw.split("/", 1)[0].split(":", 1)[0]
    host = _host(raw)
    if host.startswith("www."):
        host = host[4:]
    return host


def normalize_url(value: str) -> str:
    """Canonical form of an http(s) URL; raises ClaimInvalid."""
    raw = value.strip()
    if len(raw) > MAX_URL_LENGTH:
        raise ClaimInvalid(f"URL is longer than {MAX_URL_LENGTH} characters")
    simple = _SIMPLE_URL.fullmatch(raw)
    if simple is not None:
        scheme, host, port, rest = simple.groups()
        scheme = scheme.lower()
        if (port is None or int(port) <= 65535) and host.strip("."):
            host = _host(host.lower())
            if port is not None and int(port) != _DEFAULT_PORTS[scheme]:
                host = f"{host}:{int(port)}"
            path, _, query = (rest or "").partition("?")
            return f"{scheme}://{host}{path or '/'}" + (f"?{query}" if query else "")
    return _normalize_url_parsed(raw)


def _normalize_url_parsed(raw: str) -> str:
    """normalize_url through urlsplit: any URL, the reference for the fast path."""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as error:
        raise ClaimInvalid(f"{raw!r} is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ClaimInvalid(f"{raw!r} is not an http or https URL")
    if not parts.hostname:
        raise ClaimInvalid(f"{raw!r} has no host")
    host = _host(parts.hostname)
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def normalize_url_prefix(value: str) -> str:
    return normalize_url(value)


def normalize_handle(value: str) -> str:
    raw = value.strip().lower()
    match = _HANDLE.match(raw)
    if not match:
        raise ClaimInvalid(
            f"{value!r} is not a handle; write platform:name, for example instagram:alice"
        )
    platform, name = match.groups()
    return f"{platform}:{name}"


NORMALIZERS = {
    "domain": normalize_domain,
    "url_prefix": normalize_url_prefix,
    "handle": normalize_handle,
}


def normalize_claim(kind: str, value: str) -> str:
    try:
        normalizer = NORMALIZERS[kind]
    except KeyError:
        raise ClaimInvalid(
            f"unknown claim kind {kind!r}; use one of {sorted(NORMALIZERS)}"
        ) from None
    return normalizer(value)
