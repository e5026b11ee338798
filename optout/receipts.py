"""Batch receipts: a signed statement of one batch check, verifiable offline.

A receipt is ``{"statement": {...}, "algorithm": "Ed25519", "signature": ...,
"public_key": ..., "key_id": ...}``. The signature covers the canonical JSON of
the statement (sorted keys, no spaces, UTF-8), so a receipt may be re-indented or
re-serialized by any JSON tool and still verify, while changing any value breaks
it. ``public_key`` and ``key_id`` only name the key that signed: a verifier
trusts the key it obtained independently (the registry's published key), never
the one a receipt carries about itself.

The top of this module is pure (no Django): ``optout verify`` runs it offline on
a machine without the registry's settings. The functions at the bottom read the
registry's signing key from the Django settings and import Django inside them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
STATEMENT_TYPE = "optout-registry.batch-receipt"
STATEMENT_VERSION = 1
_RAW_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
# 16 hex digits (64 bits) tell keys apart in logs and on screen; the key itself,
# not its id, is what a verifier compares.
_KEY_ID_HEX = 16


class ReceiptInvalid(ValueError):
    """The receipt does not verify; ``reason`` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyInvalid(ValueError):
    """Text or bytes that are not an Ed25519 key of the expected kind."""


# --- canonical form ----------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no whitespace, UTF-8.

    NaN and infinities have no JSON form and are refused (ValueError), as are
    values JSON cannot represent (TypeError)."""
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def excluded_ids_digest(ids: Iterable[str]) -> str:
    """sha256 (hex) over the excluded records' ids in row order, each followed by
    a newline: what a receipt's ``excluded_ids_sha256`` states, and what a pipeline
    recomputes from the exclusions it downloaded."""
    digest = hashlib.sha256()
    for record_id in ids:
        digest.update(record_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


# --- keys --------------------------------------------------------------------


def private_key_generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_load(pem: str | bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, unencrypted)."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if b"\\n" in data and b"\n" not in data.strip():
        data = data.replace(b"\\n", b"\n")  # PEM squeezed onto one line of an env file
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyInvalid(f"not a PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyInvalid(f"not an Ed25519 key but {type(key).__name__}")
    return key


def private_key_pem(private_key: Ed25519PrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_load(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text, base64 (of the raw 32 bytes or of
    DER), or bytes (PEM, base64, raw 32 bytes or DER)."""
    if isinstance(key, Ed25519PublicKey):
        return key
    data = key.encode("utf-8", "replace") if isinstance(key, str) else bytes(key)
    if b"-----BEGIN" in data:
        return _public_key_from_pem(data)
    if not isinstance(key, str) and len(data) == _RAW_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded:
        return _public_key_from_binary(decoded)
    if not isinstance(key, str):
        return _public_key_from_binary(data)
    raise KeyInvalid(_NOT_A_KEY)


_NOT_A_KEY = "not an Ed25519 public key: expected PEM, or base64 of the 32 raw bytes or of DER"


def _public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyInvalid(f"not a PEM public key: {error}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyInvalid(f"not an Ed25519 key but {type(loaded).__name__}")
    return loaded


def _public_key_from_binary(data: bytes) -> Ed25519PublicKey:
    if len(data) == _RAW_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        loaded = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyInvalid(_NOT_A_KEY) from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyInvalid(f"not an Ed25519 key but {type(loaded).__name__}")
    return loaded


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_base64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key_raw(public_key)).decode("ascii")


def public_key_to_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the raw public key."""
    return hashlib.sha256(public_key_raw(public_key)).hexdigest()[:_KEY_ID_HEX]


# --- sign and verify ---------------------------------------------------------


def receipt_sign(
    statement: dict[str, Any], private_key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    """Sign ``statement`` with ``private_key`` (default: the registry's signing key)."""
    key = private_key if private_key is not None else signing_key()
    public_key = key.public_key()
    signature = key.sign(canonical_json(statement))
    return {
        "statement": statement,
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(signature).decode("ascii"),
        "public_key": public_key_base64(public_key),
        "key_id": key_id(public_key),
    }


def receipt_verify(receipt: Any, public_key: Ed25519PublicKey | str | bytes) -> None:
    """Raise ReceiptInvalid unless ``receipt`` was signed by ``public_key``.

    ``public_key`` is the key the caller trusts (PEM, base64 or bytes; KeyInvalid
    if it is none of these); the key embedded in the receipt only serves to say
    that another key signed it."""
    trusted = public_key_load(public_key)
    statement, signature = _receipt_parts(receipt)
    embedded = _embedded_key(receipt)
    try:
        trusted.verify(signature, canonical_json(statement))
    except InvalidSignature:
        if embedded is not None and public_key_raw(embedded) != public_key_raw(trusted):
            raise ReceiptInvalid(
                f"signed by another key (key id {key_id(embedded)}), "
                f"not by the trusted key (key id {key_id(trusted)})"
            ) from None
        raise ReceiptInvalid(
            "the signature does not match the statement: the statement was altered "
            "or the signature is damaged"
        ) from None
    if embedded is not None and public_key_raw(embedded) != public_key_raw(trusted):
        raise ReceiptInvalid(
            f"the receipt names key id {key_id(embedded)} but was signed by the trusted key "
            f"(key id {key_id(trusted)}): its public_key field was altered"
        )
    if receipt.get("key_id") not in (None, key_id(trusted)):
        raise ReceiptInvalid(
            f"the receipt names key id {receipt['key_id']!r}, the trusted key is {key_id(trusted)}"
        )


def _receipt_parts(receipt: Any) -> tuple[dict[str, Any], bytes]:
    if not isinstance(receipt, dict):
        raise ReceiptInvalid("malformed receipt: not a JSON object")
    statement = receipt.get("statement")
    if not isinstance(statement, dict):
        raise ReceiptInvalid("malformed receipt: no statement object")
    algorithm = receipt.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise ReceiptInvalid(f"unsupported algorithm {algorithm!r}; expected {ALGORITHM}")
    encoded = receipt.get("signature")
    if not isinstance(encoded, str):
        raise ReceiptInvalid("malformed receipt: no signature")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptInvalid("malformed receipt: the signature is not base64") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise ReceiptInvalid(
            f"malformed receipt: the signature is {len(signature)} bytes, not {_SIGNATURE_BYTES}"
        )
    try:
        canonical_json(statement)
    except (TypeError, ValueError) as error:
        raise ReceiptInvalid(f"malformed receipt: the statement is not JSON: {error}") from None
    return statement, signature


def _embedded_key(receipt: dict[str, Any]) -> Ed25519PublicKey | None:
    embedded = receipt.get("public_key")
    if embedded is None:
        return None
    if not isinstance(embedded, str):
        raise ReceiptInvalid("malformed receipt: public_key is not a string")
    try:
        return public_key_load(embedded)
    except KeyInvalid as error:
        raise ReceiptInvalid(f"malformed receipt: public_key: {error}") from None


# --- the registry's signing key (Django settings) ----------------------------

_keys: dict[tuple[str, str], Ed25519PrivateKey] = {}
_keys_lock = threading.Lock()


def signing_key() -> Ed25519PrivateKey:
    """The registry's receipt signing key, loaded once per process.

    From OPTOUT_RECEIPT_SIGNING_KEY (PEM), else the file
    OPTOUT_RECEIPT_SIGNING_KEY_FILE. With DEBUG on (OPTOUT_RECEIPT_SIGNING_KEY_GENERATE),
    a missing file is generated (git-ignored, under RUN_DIR); in production a
    missing key is a configuration error, because a receipt signed by a throwaway
    key proves nothing.
    """
    from django.conf import settings

    pem = str(settings.OPTOUT_RECEIPT_SIGNING_KEY or "")
    path = str(settings.OPTOUT_RECEIPT_SIGNING_KEY_FILE or "")
    cache_key = (pem, "" if pem else path)
    with _keys_lock:
        if cache_key not in _keys:
            _keys[cache_key] = _signing_key_load(pem, Path(path) if path else None)
        return _keys[cache_key]


def signing_key_cache_clear() -> None:
    """Forget loaded keys (a rotated key file is read again)."""
    with _keys_lock:
        _keys.clear()


def public_key_pem() -> str:
    """The public half of the signing key, PEM: what operators publish."""
    return public_key_to_pem(signing_key().public_key())


def public_key_info() -> dict[str, str]:
    """What /api/v1/receipts/public-key answers."""
    public_key = signing_key().public_key()
    return {
        "algorithm": ALGORITHM,
        "public_key": public_key_base64(public_key),
        "public_key_pem": public_key_to_pem(public_key),
        "key_id": key_id(public_key),
    }


def _signing_key_load(pem: str, path: Path | None) -> Ed25519PrivateKey:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    if pem:
        try:
            return private_key_load(pem)
        except KeyInvalid as error:
            raise ImproperlyConfigured(f"OPTOUT_RECEIPT_SIGNING_KEY: {error}") from None
    if path is not None and path.exists():
        try:
            return private_key_load(path.read_bytes())
        except (OSError, KeyInvalid) as error:
            raise ImproperlyConfigured(f"OPTOUT_RECEIPT_SIGNING_KEY_FILE {path}: {error}") from None
    if not settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE or path is None:
        raise ImproperlyConfigured(
            "No receipt signing key. Set OPTOUT_RECEIPT_SIGNING_KEY to an Ed25519 private "
            "key in PEM (PKCS#8), or OPTOUT_RECEIPT_SIGNING_KEY_FILE to a file holding one; "
            "`python manage.py receipt_key --generate` prints a new key. Only DEBUG runs "
            "generate a key of their own."
        )
    return _dev_key_create(path)


def _dev_key_create(path: Path) -> Ed25519PrivateKey:
    """Generate the development key into ``path`` (mode 0600), or read the one a
    concurrent process (web server, worker) created first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = private_key_generate()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(private_key_pem(key))
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if the file exists: the first process to get there wins,
        # and every other one reads the winner's complete file.
        os.link(temporary, path)
    except FileExistsError:
        return private_key_load(path.read_bytes())
    finally:
        temporary.unlink(missing_ok=True)
    return key
