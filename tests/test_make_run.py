"""`make run` on a machine with nothing but Python: SQLite, in-process tasks, demo data.

Runs the real Makefile target in a subprocess without DATABASE_URL or REDIS_URL,
waits for the server, logs in to the admin with the demo operator account and
checks the demo creator in the SQLite database `make run` created.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.contrib.auth.hashers import check_password

BASE_DIR = Path(__file__).resolve().parents[1]
# Migrations, seeding (hashing six photos) and server start take ~10 s on a
# quiet machine; a busy 2-core CI box gets head room.
START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_environment(port: int, run_dir: Path) -> dict[str, str]:
    """The caller's environment minus every service and Django setting."""
    dropped = ("DATABASE_URL", "REDIS_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and not key.startswith(("DJANGO_", "OPTOUT_", "CELERY_", "EMAIL_"))
    }
    env |= {
        "PORT": str(port),
        "OPTOUT_RUN_DIR": str(run_dir),
        "PYTHON": getattr(sys, "_base_executable", sys.executable),
    }
    return env


class Output:
    """Collects a process's output lines from a background thread."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            self.lines.append(raw.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.lines)


def get(url: str, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], output: Output) -> dict:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"make run exited with {process.returncode}:\n{output.text}")
        if "Demo creator login:" in output.text and f"on {base}/" in output.text:
            try:
                status, body = get(f"{base}/healthz")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status, body = 0, ""
            if status == 200:
                return json.loads(body)
        time.sleep(0.25)
    pytest.fail(f"make run not healthy within {START_SECONDS}s:\n{output.text}")


def form_post(
    opener: urllib.request.OpenerDirector, base: str, path: str, fields: dict[str, str]
) -> tuple[int, str, str]:
    """Fetch the form at ``path`` and post ``fields`` to it with its CSRF token
    (and the cookie the opener keeps), as a browser does: status, final URL, page."""
    status, page = get(f"{base}{path}", opener)
    assert status == 200
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match is not None
    form = urlencode({"csrfmiddlewaretoken": match.group(1), **fields}).encode()
    request = urllib.request.Request(
        f"{base}{path}", data=form, headers={"Referer": f"{base}{path.split('?')[0]}"}
    )
    with opener.open(request, timeout=10) as response:
        return response.status, response.url, response.read().decode()


def with_cookies() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def admin_login(base: str) -> tuple[int, str, str]:
    """Log in through the admin's login form."""
    fields = {
        "username": "admin@example.org",
        "password": "admin-password-1234",
        "next": "/admin/",
    }
    return form_post(with_cookies(), base, "/admin/login/?next=/admin/", fields)


def sign_up_and_confirm(base: str, output: Output, email: str) -> tuple[int, str]:
    """Sign up through the form; the confirmation email is printed on the
    console (development's email backend): follow its link."""
    opener = with_cookies()
    password = "a new creator's passphrase 42"
    fields = {"email": email, "password1": password, "password2": password}
    _, url, _ = form_post(opener, base, "/accounts/signup/", fields)
    assert url == f"{base}/accounts/signup/done/"
    deadline = time.monotonic() + 10
    link = None
    while link is None and time.monotonic() < deadline:
        link = re.search(
            rf"To: {re.escape(email)}\n(?:.*\n)*?.*?(/accounts/confirm/\S+/)", output.text
        )
        time.sleep(0.1)
    assert link is not None, output.text
    with opener.open(f"{base}{link.group(1)}", timeout=10) as response:
        return response.status, response.url


def demo_creator_rows(database: Path) -> tuple[str, str | None, int, list[str]]:
    with sqlite3.connect(database) as db:
        password, confirmed_at, creator_id = db.execute(
            "SELECT u.password, c.email_confirmed_at, c.id FROM auth_user u "
            "JOIN registry_creator c ON c.user_id = u.id WHERE u.username = ?",
            ["demo@example.org"],
        ).fetchone()
        photos = db.execute(
            "SELECT count(*) FROM registry_photo WHERE creator_id = ?", [creator_id]
        ).fetchone()[0]
        active = [
            row[0]
            for row in db.execute(
                "SELECT uses FROM optout_optout WHERE creator_id = ? AND withdrawn_at IS NULL",
                [creator_id],
            )
        ]
    return password, confirmed_at, photos, active


@pytest.mark.timeout(240)
def test_make_run_starts_the_registry_with_demo_data(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        ["make", "run"],
        cwd=BASE_DIR,
        env=bare_environment(port, run_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output(process.stdout)
    try:
        health = wait_until_healthy(base, process, output)
        login_status, login_page = get(f"{base}/accounts/login/")
        admin_status, admin_url, admin_page = admin_login(base)
        confirmed_status, confirmed_url = sign_up_and_confirm(base, output, "new@example.org")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    assert f"Opt-Out Registry on {base}/" in output.text
    assert "Demo creator login: demo@example.org / demo-password-1234" in output.text
    assert "Admin login: admin@example.org / admin-password-1234" in output.text
    assert health["database"] is True
    assert health["redis"] is None
    # 6 photos, 1 claim, 1 opt-out: each took one registry version.
    assert health["registry_version"] == 8
    assert login_status == 200, login_page
    assert (admin_status, admin_url) == (200, f"{base}/admin/")
    assert "Site administration" in admin_page
    assert "Subject: Confirm your email for the Opt-Out Registry" in output.text
    assert (confirmed_status, confirmed_url) == (200, f"{base}/me/")
    password, confirmed_at, photos, active = demo_creator_rows(run_dir / "db.sqlite3")
    assert check_password("demo-password-1234", password)
    assert confirmed_at is not None
    assert photos == 6
    assert [json.loads(uses) for uses in active] == [["ai_training"]]


def make_dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run when pyproject.toml has changed since
    the last install (as on a fresh clone), printed by `make -n`, not run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PORT", "HOST", "PYTHON", "PYTEST_ARGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    result = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", target],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# Creating (or refreshing) .venv and installing the project with its dev extras
# from pyproject.toml: nothing is installed by hand.
INSTALL = [
    "test -x .venv/bin/python || python3 -m venv .venv",
    ".venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip",
    ".venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'",
    "touch .venv/.installed",
]


def test_make_run_installs_into_the_venv_then_migrates_seeds_and_serves_on_port_8000() -> None:
    commands = make_dry_run("run")

    assert commands == [
        *INSTALL,
        "DJANGO_DEBUG=1 .venv/bin/python manage.py migrate --noinput",
        "DJANGO_DEBUG=1 .venv/bin/python manage.py seed_demo",
        'echo "Opt-Out Registry on http://127.0.0.1:8000/"',
        "DJANGO_DEBUG=1 .venv/bin/python manage.py runserver --noreload 127.0.0.1:8000",
    ]


def test_make_test_installs_into_the_venv_then_runs_pytest() -> None:
    commands = make_dry_run("test")

    assert commands[: len(INSTALL)] == INSTALL
    assert commands[-1].strip() == ".venv/bin/python -m pytest"
    # Between them, `make browser` installs Debian's chromium when it is missing.
    assert any("apt-get install -y -qq chromium" in line for line in commands)
