"""Batch receipts (optout/receipts.py): signing, offline verification, the
registry's signing key, its public endpoint, `manage.py receipt_key` and
`optout verify`."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from optout import receipts
from optout.receipts import ReceiptInvalid
from tests.fresh_python import LOADED_FRAMEWORKS, run_python

OPTOUT = Path(sys.executable).parent / "optout"
REPO = Path(__file__).resolve().parents[2]

STATEMENT: dict[str, Any] = {
    "type": "optout-registry.batch-receipt",
    "version": 1,
    "batch": "5b0e4f4e-7f55-4c43-9a0c-1d1b1f1e3c11",
    "organization": "0e8f2b7a-4e8e-4b44-8a65-3f3a4f0b2d22",
    "use": "ai_training",
    "manifest_sha256": "ab" * 32,
    "manifest_format": "jsonl",
    "record_count": 1000,
    "excluded_count": 12,
    "invalid_count": 1,
    "excluded_ids_sha256": "cd" * 32,
    "registry_version": 42,
    "thresholds": {"pdq": 31, "phash": 8},
    "algorithms": {"sha256": "SHA-256", "pdq": "PDQ"},
    "started_at": "2026-11-02T10:00:00+00:00",
    "finished_at": "2026-11-02T10:00:07+00:00",
}


@pytest.fixture(autouse=True)
def fresh_key_cache() -> Iterator[None]:
    receipts.signing_key_cache_clear()
    yield
    receipts.signing_key_cache_clear()


@pytest.fixture
def key() -> receipts.Ed25519PrivateKey:
    return receipts.private_key_generate()


@pytest.fixture
def other_key() -> receipts.Ed25519PrivateKey:
    return receipts.private_key_generate()


def public_pem(key: receipts.Ed25519PrivateKey) -> str:
    return receipts.public_key_to_pem(key.public_key())


# --- canonical JSON --------------------------------------------------------------


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    one = {"b": 1, "a": {"y": [2, "é"], "x": None}}
    other = {"a": {"x": None, "y": [2, "é"]}, "b": 1}

    assert receipts.canonical_json(one) == receipts.canonical_json(other)
    assert receipts.canonical_json(one) == '{"a":{"x":null,"y":[2,"é"]},"b":1}'.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_canonical_json_refuses_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        receipts.canonical_json({"progress": value})


# --- sign and verify ---------------------------------------------------------------


def test_a_signed_receipt_verifies_against_the_signing_public_key(
    key: receipts.Ed25519PrivateKey,
) -> None:
    receipt = receipts.receipt_sign(STATEMENT, key)

    receipts.receipt_verify(receipt, public_pem(key))

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert receipt["statement"] == STATEMENT
    assert receipt["algorithm"] == "Ed25519"
    assert receipt["public_key"] == base64.b64encode(raw).decode()
    assert len(base64.b64decode(receipt["signature"])) == 64
    assert receipt["key_id"] == receipts.key_id(key.public_key())
    assert len(receipt["key_id"]) == 16


def test_a_receipt_reserialized_with_other_key_order_and_indentation_still_verifies(
    key: receipts.Ed25519PrivateKey,
) -> None:
    receipt = receipts.receipt_sign(STATEMENT, key)
    shuffled = dict(reversed(list(receipt["statement"].items())))
    text = json.dumps({**receipt, "statement": shuffled}, indent=4)

    receipts.receipt_verify(json.loads(text), receipt["public_key"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("excluded_count", 13), ("registry_version", 41), ("excluded_ids_sha256", "ef" * 32)],
)
def test_a_tampered_statement_fails(
    key: receipts.Ed25519PrivateKey, field: str, value: object
) -> None:
    receipt = receipts.receipt_sign(STATEMENT, key)
    receipt["statement"] = {**receipt["statement"], field: value}

    with pytest.raises(ReceiptInvalid) as raised:
        receipts.receipt_verify(receipt, public_pem(key))

    assert raised.value.reason == (
        "the signature does not match the statement: the statement was altered "
        "or the signature is damaged"
    )


def test_a_receipt_signed_by_another_key_fails_against_the_trusted_key(
    key: receipts.Ed25519PrivateKey, other_key: receipts.Ed25519PrivateKey
) -> None:
    forged = receipts.receipt_sign(STATEMENT, other_key)

    with pytest.raises(ReceiptInvalid) as raised:
        receipts.receipt_verify(forged, public_pem(key))

    assert raised.value.reason == (
        f"signed by another key (key id {receipts.key_id(other_key.public_key())}), "
        f"not by the trusted key (key id {receipts.key_id(key.public_key())})"
    )


def test_a_receipt_whose_embedded_key_was_swapped_fails_against_the_trusted_key(
    key: receipts.Ed25519PrivateKey, other_key: receipts.Ed25519PrivateKey
) -> None:
    # Verifying with the embedded key would accept this forgery: the attacker
    # signed a changed statement and embedded their own key.
    forged = receipts.receipt_sign({**STATEMENT, "excluded_count": 0}, other_key)
    receipts.receipt_verify(forged, forged["public_key"])
    # And a genuine receipt whose embedded key was replaced names the wrong key.
    genuine = receipts.receipt_sign(STATEMENT, key)
    swapped = {**genuine, "public_key": forged["public_key"], "key_id": forged["key_id"]}

    with pytest.raises(ReceiptInvalid, match="signed by another key"):
        receipts.receipt_verify(forged, public_pem(key))
    with pytest.raises(ReceiptInvalid) as raised:
        receipts.receipt_verify(swapped, public_pem(key))

    assert raised.value.reason == (
        f"the receipt names key id {forged['key_id']} but was signed by the trusted key "
        f"(key id {genuine['key_id']}): its public_key field was altered"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: "not a receipt", "malformed receipt: not a JSON object"),
        (lambda r: {**r, "statement": None}, "malformed receipt: no statement object"),
        (
            lambda r: {k: v for k, v in r.items() if k != "signature"},
            "malformed receipt: no signature",
        ),
        (lambda r: {**r, "signature": "@@@"}, "malformed receipt: the signature is not base64"),
        (
            lambda r: {**r, "signature": base64.b64encode(b"short").decode()},
            "malformed receipt: the signature is 5 bytes, not 64",
        ),
        (lambda r: {**r, "algorithm": "RSA"}, "unsupported algorithm 'RSA'; expected Ed25519"),
        (
            lambda r: {**r, "public_key": "AAAA"},
            "malformed receipt: public_key: not an Ed25519 public key: expected PEM, or "
            "base64 of the 32 raw bytes or of DER",
        ),
    ],
    ids=["not-object", "no-statement", "no-signature", "bad-base64", "short", "rsa", "bad-key"],
)
def test_a_malformed_receipt_fails_with_its_reason(
    key: receipts.Ed25519PrivateKey, change: Any, reason: str
) -> None:
    receipt = change(receipts.receipt_sign(STATEMENT, key))

    with pytest.raises(ReceiptInvalid) as raised:
        receipts.receipt_verify(receipt, public_pem(key))

    assert raised.value.reason == reason


def test_the_public_key_loads_from_pem_base64_raw_bytes_and_der(
    key: receipts.Ed25519PrivateKey,
) -> None:
    public = key.public_key()
    raw = receipts.public_key_raw(public)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms: list[str | bytes] = [
        public_pem(key),
        public_pem(key).encode(),
        base64.b64encode(raw).decode(),
        f"  {base64.b64encode(raw).decode()}\n",
        raw,
        der,
        base64.b64encode(der).decode(),
    ]

    loaded = [receipts.public_key_raw(receipts.public_key_load(form)) for form in forms]

    assert loaded == [raw] * len(forms)


def test_a_key_of_another_kind_or_garbage_is_refused(key: receipts.Ed25519PrivateKey) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    with pytest.raises(receipts.KeyInvalid, match="not an Ed25519 key but"):
        receipts.public_key_load(ec_pem)
    with pytest.raises(receipts.KeyInvalid, match="expected PEM, or base64 of the 32 raw"):
        receipts.public_key_load("not a key at all!")
    with pytest.raises(receipts.KeyInvalid):
        receipts.receipt_verify(receipts.receipt_sign(STATEMENT, key), "not a key at all!")


# --- the registry's signing key ----------------------------------------------------------


def dev_settings(settings: Settings, path: Path) -> None:
    settings.DEBUG = True
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = True
    settings.OPTOUT_RECEIPT_SIGNING_KEY = ""
    settings.OPTOUT_RECEIPT_SIGNING_KEY_FILE = path


def test_debug_generates_the_key_file_once_with_mode_0600_and_reuses_it(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "receipt-signing-key.pem"
    dev_settings(settings, path)

    first = receipts.signing_key()
    again = receipts.signing_key()
    receipts.signing_key_cache_clear()
    reloaded = receipts.signing_key()

    assert again is first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert receipts.private_key_load(path.read_bytes()).private_bytes_raw() == (
        first.private_bytes_raw()
    )
    assert reloaded.private_bytes_raw() == first.private_bytes_raw()
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]


def test_the_default_dev_key_file_is_under_the_git_ignored_run_dir() -> None:
    from django.conf import settings

    run_dir = Path(settings.RUN_DIR).resolve()
    key_file = Path(settings.OPTOUT_RECEIPT_SIGNING_KEY_FILE).resolve()

    assert key_file == run_dir / "receipt-signing-key.pem"
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".run/" in ignored
    assert "receipt-signing-key.pem" in ignored


def test_production_without_a_key_refuses_and_writes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "receipt-signing-key.pem"
    dev_settings(settings, path)
    settings.DEBUG = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = False

    with pytest.raises(ImproperlyConfigured) as raised:
        receipts.signing_key()

    assert str(raised.value).startswith(
        "No receipt signing key. Set OPTOUT_RECEIPT_SIGNING_KEY to an Ed25519 private key"
    )
    assert not path.parent.exists()


def test_production_takes_the_key_from_the_setting_also_with_escaped_newlines(
    settings: Settings, tmp_path: Path, key: receipts.Ed25519PrivateKey
) -> None:
    dev_settings(settings, tmp_path / "absent.pem")
    settings.DEBUG = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY = receipts.private_key_pem(key).replace("\n", "\\n")

    loaded = receipts.signing_key()

    assert loaded.private_bytes_raw() == key.private_bytes_raw()
    assert receipts.public_key_pem() == public_pem(key)
    assert not (tmp_path / "absent.pem").exists()


def test_production_takes_the_key_from_the_file(
    settings: Settings, tmp_path: Path, key: receipts.Ed25519PrivateKey
) -> None:
    path = tmp_path / "key.pem"
    path.write_text(receipts.private_key_pem(key))
    dev_settings(settings, path)
    settings.DEBUG = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = False

    assert receipts.signing_key().private_bytes_raw() == key.private_bytes_raw()


def test_a_setting_that_is_not_an_ed25519_key_is_a_configuration_error(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    settings.OPTOUT_RECEIPT_SIGNING_KEY = (
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"
    )

    with pytest.raises(ImproperlyConfigured, match=r"^OPTOUT_RECEIPT_SIGNING_KEY: not a PEM"):
        receipts.signing_key()
    assert not (tmp_path / "key.pem").exists()


def test_receipt_sign_uses_the_registry_key_by_default(settings: Settings, tmp_path: Path) -> None:
    dev_settings(settings, tmp_path / "key.pem")

    receipt = receipts.receipt_sign(STATEMENT)

    receipts.receipt_verify(receipt, receipts.public_key_pem())


# --- GET /api/v1/receipts/public-key -------------------------------------------------------


@pytest.mark.django_db
def test_the_public_key_endpoint_needs_no_auth_and_verifies_registry_receipts(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    receipt = receipts.receipt_sign(STATEMENT)

    response = APIClient().get("/api/v1/receipts/public-key")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"algorithm", "public_key", "public_key_pem", "key_id"}
    assert body["algorithm"] == "Ed25519"
    assert body["key_id"] == receipt["key_id"]
    assert body["public_key"] == receipt["public_key"]
    assert body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----\n")
    receipts.receipt_verify(receipt, body["public_key"])
    receipts.receipt_verify(receipt, body["public_key_pem"])


@pytest.mark.django_db
def test_the_public_key_endpoint_ignores_credentials_it_does_not_need(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key not-a-valid-key")

    response = client.get("/api/v1/receipts/public-key")

    assert response.status_code == 200
    assert response.json()["key_id"] == receipts.key_id(receipts.signing_key().public_key())


@pytest.mark.django_db
def test_the_public_key_endpoint_without_a_configured_key_is_a_json_503(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    settings.DEBUG = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = False

    response = APIClient().get("/api/v1/receipts/public-key")

    assert response.status_code == 503
    assert response.json() == {
        "error": "not_configured",
        "detail": "Receipt signing is not configured on this registry.",
    }


@pytest.mark.django_db
def test_the_public_key_endpoint_is_get_only(settings: Settings, tmp_path: Path) -> None:
    dev_settings(settings, tmp_path / "key.pem")

    response = APIClient().post("/api/v1/receipts/public-key", {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


# --- manage.py receipt_key -------------------------------------------------------------


def test_receipt_key_prints_the_public_key_pem(settings: Settings, tmp_path: Path) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    out, err = StringIO(), StringIO()

    call_command("receipt_key", stdout=out, stderr=err)

    assert out.getvalue() == receipts.public_key_pem()
    assert err.getvalue() == f"key id {receipts.key_id(receipts.signing_key().public_key())}\n"


def test_receipt_key_generate_prints_a_new_private_key_and_writes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    out, err = StringIO(), StringIO()

    call_command("receipt_key", "--generate", stdout=out, stderr=err)
    call_command("receipt_key", "--generate", stdout=out, stderr=err)

    pems = out.getvalue().split("-----END PRIVATE KEY-----\n")[:-1]
    keys = [receipts.private_key_load(pem + "-----END PRIVATE KEY-----\n") for pem in pems]
    assert len(keys) == 2
    assert keys[0].private_bytes_raw() != keys[1].private_bytes_raw()
    assert f"New key id {receipts.key_id(keys[0].public_key())}." in err.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_receipt_key_in_production_without_a_key_is_a_command_error(
    settings: Settings, tmp_path: Path
) -> None:
    dev_settings(settings, tmp_path / "key.pem")
    settings.DEBUG = False
    settings.OPTOUT_RECEIPT_SIGNING_KEY_GENERATE = False

    with pytest.raises(Exception, match="No receipt signing key") as raised:
        call_command("receipt_key", stdout=StringIO(), stderr=StringIO())

    assert type(raised.value).__name__ == "CommandError"


# --- optout verify -------------------------------------------------------------------


def optout(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPTOUT.exists(), f"{OPTOUT} is missing: run `pip install -e '.[dev]'`"
    return subprocess.run(
        [str(OPTOUT), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def receipt_file(tmp_path: Path, key: receipts.Ed25519PrivateKey) -> Path:
    path = tmp_path / "batch.receipt.json"
    path.write_text(json.dumps(receipts.receipt_sign(STATEMENT, key), indent=2))
    return path


@pytest.fixture
def key_file(tmp_path: Path, key: receipts.Ed25519PrivateKey) -> Path:
    path = tmp_path / "registry.pub.pem"
    path.write_text(public_pem(key))
    return path


def test_verify_of_a_valid_receipt_prints_what_it_states_and_exits_0(
    receipt_file: Path, key_file: Path, key: receipts.Ed25519PrivateKey
) -> None:
    result = optout("verify", str(receipt_file), "--public-key", str(key_file))

    assert result.stdout == (
        f"receipt valid: signed by key id {receipts.key_id(key.public_key())}\n"
        "batch:            5b0e4f4e-7f55-4c43-9a0c-1d1b1f1e3c11\n"
        "organization:     0e8f2b7a-4e8e-4b44-8a65-3f3a4f0b2d22\n"
        "use:              ai_training\n"
        "registry version: 42\n"
        "records:          1000\n"
        "excluded:         12\n"
        "invalid:          1\n"
        f"manifest sha256:  {'ab' * 32}\n"
        "finished at:      2026-11-02T10:00:07+00:00\n"
    )
    assert result.stderr == ""
    assert result.returncode == 0


def test_verify_takes_the_key_as_base64_and_a_whole_batch_answer(
    tmp_path: Path, key: receipts.Ed25519PrivateKey
) -> None:
    batch = {"id": STATEMENT["batch"], "receipt": receipts.receipt_sign(STATEMENT, key)}
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(batch))

    result = optout(
        "verify", str(path), "--public-key", receipts.public_key_base64(key.public_key())
    )

    assert result.stdout.startswith("receipt valid: signed by key id ")
    assert result.returncode == 0


def test_verify_of_a_tampered_receipt_says_why_and_exits_1(
    receipt_file: Path, key_file: Path
) -> None:
    receipt = json.loads(receipt_file.read_text())
    receipt["statement"]["excluded_count"] += 1
    receipt_file.write_text(json.dumps(receipt))

    result = optout("verify", str(receipt_file), "--public-key", str(key_file))

    assert result.stdout == ""
    assert result.stderr == (
        f"optout verify: {receipt_file} is NOT valid: the signature does not match the "
        "statement: the statement was altered or the signature is damaged\n"
    )
    assert result.returncode == 1


def test_verify_against_another_key_exits_1(
    receipt_file: Path, tmp_path: Path, other_key: receipts.Ed25519PrivateKey
) -> None:
    other = tmp_path / "other.pem"
    other.write_text(public_pem(other_key))

    result = optout("verify", str(receipt_file), "--public-key", str(other))

    assert "is NOT valid: signed by another key" in result.stderr
    assert result.returncode == 1


def test_verify_of_a_file_that_is_not_json_exits_1(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "receipt.json"
    path.write_text("{not json")

    result = optout("verify", str(path), "--public-key", str(key_file))

    assert result.stderr.startswith(f"optout verify: {path} is NOT valid: not JSON: ")
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["verify", "{receipt}", "--public-key", "missing.pem"],
            "optout verify: error: "
            "--public-key missing.pem: no such file, and not an Ed25519 public key: expected "
            "PEM, or base64 of the 32 raw bytes or of DER",
        ),
        (
            ["verify", "{missing}", "--public-key", "{key}"],
            "optout verify: error: No such file or directory",
        ),
        (
            ["verify", "{receipt}"],
            "optout verify: error: the following arguments are required: --public-key",
        ),
    ],
    ids=["no-key-file", "no-receipt-file", "no-key-argument"],
)
def test_verify_usage_errors_exit_2(
    args: list[str], message: str, receipt_file: Path, key_file: Path, tmp_path: Path
) -> None:
    values = {"receipt": receipt_file, "key": key_file, "missing": tmp_path / "missing.json"}

    result = optout(*[arg.format(**values) for arg in args])

    assert result.stderr.splitlines()[-1] == message
    assert result.returncode == 2


def test_verify_imports_no_django(receipt_file: Path, key_file: Path) -> None:
    snippet = (
        "import sys\n"
        "from optout import cli\n"
        f"code = cli.main(['verify', {str(receipt_file)!r}, '--public-key', {str(key_file)!r}])\n"
        f"print(code, {LOADED_FRAMEWORKS})\n"
    )

    result = run_python(snippet)

    assert result.stdout.splitlines()[-1] == "0 []"
    assert result.returncode == 0


def manage(*args: str, run_dir: Path, debug: str) -> subprocess.CompletedProcess[str]:
    """manage.py in a fresh process whose settings come from the environment only."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "OPTOUT_", "DATABASE_"))
    }
    env |= {"DJANGO_DEBUG": debug, "DJANGO_SECRET_KEY": "s" * 50, "OPTOUT_RUN_DIR": str(run_dir)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )


def test_a_debug_environment_generates_its_key_under_run_dir_and_production_refuses(
    tmp_path: Path,
) -> None:
    production = manage("receipt_key", run_dir=tmp_path / "prod", debug="0")
    development = manage("receipt_key", run_dir=tmp_path / "dev", debug="1")

    assert production.returncode == 1
    assert "CommandError: No receipt signing key." in production.stderr
    assert not (tmp_path / "prod" / "receipt-signing-key.pem").exists()
    assert development.returncode == 0, development.stderr
    key = receipts.private_key_load((tmp_path / "dev" / "receipt-signing-key.pem").read_bytes())
    assert development.stdout == receipts.public_key_to_pem(key.public_key())
