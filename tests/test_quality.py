"""Quality gates as tests: lint, format, types, migrations, deploy checks.

Each runs the real tool in a subprocess, exactly as a developer would, and shows
its output when it fails.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

BASE_DIR = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def development_env(tmp_path: Path) -> dict[str, str]:
    """DEBUG settings with nothing external: SQLite in a temporary folder."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL") and not key.startswith("DJANGO_")
    }
    return env | {"DJANGO_DEBUG": "1", "OPTOUT_RUN_DIR": str(tmp_path)}


def test_ruff_check_passes() -> None:
    result = run([str(BIN / "ruff"), "check", "."])

    assert result.returncode == 0, output(result)


def test_ruff_format_check_passes() -> None:
    result = run([str(BIN / "ruff"), "format", "--check", "."])

    assert result.returncode == 0, output(result)


@pytest.mark.timeout(600)
def test_mypy_passes(tmp_path: Path) -> None:
    # The django-stubs plugin imports the settings, which need DEBUG or a secret key.
    result = run([str(BIN / "mypy"), "registry", "optout", "config"], env=development_env(tmp_path))

    assert result.returncode == 0, output(result)


def test_no_model_change_lacks_a_migration(tmp_path: Path) -> None:
    result = run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        env=development_env(tmp_path),
    )

    assert result.returncode == 0, output(result)


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "OPTOUT_RECEIPT_"))
    }
    return env | {
        "DJANGO_DEBUG": "0",
        # 64 random URL-safe characters, like a real deployment's key.
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "registry.example.org",
        "OPTOUT_RUN_DIR": str(tmp_path),
    }


def test_deploy_check_passes_with_production_settings(tmp_path: Path) -> None:
    signing_key = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    env = production_env(tmp_path) | {"OPTOUT_RECEIPT_SIGNING_KEY": signing_key.decode()}

    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env=env
    )

    assert result.returncode == 0, output(result)
    assert "System check identified no issues" in result.stdout, output(result)


def test_deploy_check_fails_without_a_receipt_signing_key(tmp_path: Path) -> None:
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=production_env(tmp_path),
    )

    assert result.returncode != 0, output(result)
    assert "optout.E001" in result.stderr + result.stdout, output(result)
    assert "OPTOUT_RECEIPT_SIGNING_KEY" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("*.pem")), "production must never generate a key"


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env |= {"DJANGO_DEBUG": "0", "OPTOUT_RUN_DIR": str(tmp_path)}

    result = run([sys.executable, "manage.py", "check"], env=env)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_readme_shows_every_committed_screenshot_and_only_existing_ones() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    shown = set(re.findall(r"\(docs/screenshots/([\w.-]+\.png)\)", readme))
    committed = {path.name for path in (BASE_DIR / "docs" / "screenshots").glob("*.png")}

    assert committed, "the browser test commits screenshots under docs/screenshots/"
    assert shown == committed


def test_ci_script_runs_the_readme_test_command() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    ci = (BASE_DIR / ".ci" / "run").read_text()

    assert "make test" in readme
    assert ci.rstrip().splitlines()[-1] == "make test"
