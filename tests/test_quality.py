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
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from django.db import connection

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


# --- the test run itself: PostgreSQL when named, no silent skips in CI ----------------

NEEDS_POSTGRES = """
import pytest


@pytest.mark.postgres
def test_needs_postgres() -> None:
    pass


def test_runs_anywhere() -> None:
    pass
"""


def run_with_our_conftest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    """pytest on a test file outside tests/, with this project's settings and
    conftest (as a plugin), and no DATABASE_URL: the postgres test skips."""
    test_file = tmp_path / "test_needs.py"
    test_file.write_text(NEEDS_POSTGRES)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "CI", "PYTEST_ADDOPTS")
    }
    env |= {"OPTOUT_RUN_DIR": str(tmp_path / "run")} | ({"CI": "true"} if ci else {})
    command = [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "--rootdir", "."]
    command += ["-p", "tests.conftest", "-p", "no:cacheprovider", "-q", str(test_file)]
    return run(command, env=env)


def test_in_ci_a_skipped_test_fails_the_run(tmp_path: Path) -> None:
    in_ci = run_with_our_conftest(tmp_path, ci=True)
    outside_ci = run_with_our_conftest(tmp_path, ci=False)

    assert "1 passed, 1 skipped" in in_ci.stdout, output(in_ci)
    assert in_ci.returncode == 1, output(in_ci)
    assert "CI: 1 skipped test(s) count as failures" in in_ci.stdout
    assert "needs PostgreSQL: set DATABASE_URL" in in_ci.stdout
    assert "1 passed, 1 skipped" in outside_ci.stdout, output(outside_ci)
    assert outside_ci.returncode == 0, output(outside_ci)


@pytest.mark.django_db
def test_the_tests_run_on_the_database_database_url_names() -> None:
    url = os.environ.get("DATABASE_URL")

    if url:
        assert connection.vendor == "postgresql"
        # pytest-django's test database next to the one named: test_<name>.
        assert connection.settings_dict["NAME"] == "test_" + urlsplit(url).path.lstrip("/")
    else:
        assert connection.vendor == "sqlite"


# --- the skeleton: pinned dependencies, compose file, example environment ------------


def test_every_dependency_is_pinned_to_one_version() -> None:
    project = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += extra

    unpinned = [r for r in requirements if r.count("==") != 1 or any(c in r for c in "<>~!,*")]

    assert any(r.startswith("Django==5.2.") for r in project["dependencies"])
    assert unpinned == []


def test_compose_runs_gunicorn_workers_beat_postgresql_and_redis_with_health_checks() -> None:
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]

    assert set(services) == {"web", "worker", "beat", "db", "redis"}
    assert "gunicorn config.wsgi:application" in services["web"]["command"]
    assert services["worker"]["command"].startswith("celery -A config worker")
    assert services["beat"]["command"].startswith("celery -A config beat")
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("web", "worker", "beat", "db", "redis"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
    assert "pgdata:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert "pgdata" in compose["volumes"]


def test_env_example_names_only_settings_that_are_read_and_every_required_one() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (BASE_DIR / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    settings_source = (BASE_DIR / "config" / "settings.py").read_text()

    assert {
        "DJANGO_DEBUG",
        "DJANGO_SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
    } <= names
    assert [name for name in sorted(names) if f'"{name}"' not in settings_source] == []
