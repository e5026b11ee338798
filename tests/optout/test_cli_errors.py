"""The `optout` command line on bad input, odd files and odd answers: one line on
stderr and a non-zero exit, never a traceback, never a clobbered input.

`optout check` talks here to a small fake registry in this process (each test
scripts its answers); the end-to-end runs against the real one are in
test_cli_check.py."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from optout import check, cli, receipts
from tests.images import jpeg_bytes

OPTOUT = Path(sys.executable).parent / "optout"
CLOSED_URL = "http://127.0.0.1:9"
MANIFEST = b'{"id": "a", "url": "https://a.example/a"}\n'


def optout(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    assert OPTOUT.exists(), f"{OPTOUT} is missing: run `pip install -e '.[dev]'`"
    return subprocess.run([str(OPTOUT), *args], text=True, timeout=60, check=False, **options)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """cli.main in this process: (exit status, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exit:  # argparse's usage errors
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


def last_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.splitlines()[-1]


# --- optout hash ----------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    for seed in range(2):
        (root / f"p{seed}.jpg").write_bytes(jpeg_bytes(seed))
    return root


@pytest.mark.parametrize("through", ["itself", "symlink", "hard-link", "dotted-path"])
def test_hash_refuses_an_output_that_is_one_of_the_photos_and_leaves_it_alone(
    through: str, photos: Path, tmp_path: Path
) -> None:
    photo = photos / "p0.jpg"
    before = photo.read_bytes()
    output = {
        "itself": photo,
        "symlink": tmp_path / "link.jsonl",
        "hard-link": tmp_path / "hard.jsonl",
        "dotted-path": photos / ".." / "imgs" / "p0.jpg",
    }[through]
    if through == "symlink":
        output.symlink_to(photo)
    elif through == "hard-link":
        os.link(photo, output)

    result = optout("hash", str(photos), "-o", str(output), "--no-variants", capture_output=True)

    assert result.stderr == f"optout hash: error: -o {output} would overwrite the photo p0.jpg\n"
    assert result.returncode == 2
    assert photo.read_bytes() == before


def test_hash_reports_a_named_pipe_named_like_a_photo_and_hashes_the_rest(photos: Path) -> None:
    os.mkfifo(photos / "pipe.jpg")

    result = optout(
        "hash", str(photos), "--no-variants", "-q", "--workers", "1", capture_output=True
    )

    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [
        "p0.jpg",
        "p1.jpg",
    ]
    assert result.stderr == (
        "failed: pipe.jpg: not a regular file (not_a_file)\nhashed 2, failed 1\n"
    )
    assert result.returncode == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("into", ["-o", "stdout"])
def test_hash_onto_a_full_disk_says_it_cannot_write(into: str, photos: Path) -> None:
    args = ["hash", str(photos), "--no-variants", "-q"]
    with open("/dev/full", "w") as full:
        if into == "-o":
            result = optout(*args, "-o", "/dev/full", capture_output=True)
        else:
            result = optout(*args, stdout=full, stderr=subprocess.PIPE)

    target = "/dev/full" if into == "-o" else "to stdout"
    assert result.stderr == (
        f"optout hash: cannot write {target}: No space left on device; run aborted\n"
    )
    assert result.returncode == 1


# --- optout verify ------------------------------------------------------------------------


@pytest.fixture
def public_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "pub.pem"
    key = receipts.private_key_generate().public_key()
    path.write_text(receipts.public_key_to_pem(key), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"statement": "\xff\xfe"}', "not UTF-8 text: invalid start byte at byte 15"),
        (b"[" * 200_000, "not JSON: nested too deeply"),
    ],
    ids=["not-utf-8", "deeply-nested"],
)
def test_verify_of_a_receipt_that_is_not_json_says_so(
    content: bytes,
    reason: str,
    public_key_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receipt = tmp_path / "bin.json"
    receipt.write_bytes(content)

    code, stderr = run(capsys, "verify", str(receipt), "--public-key", str(public_key_file))

    assert last_line(stderr) == f"optout verify: {receipt} is NOT valid: {reason}"
    assert code == 1


# --- optout check: the command line, before anything is sent --------------------------------


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.jsonl"
    path.write_bytes(MANIFEST)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-o", "same.jsonl", "--receipt", "same.jsonl"],
            "-o same.jsonl and --receipt same.jsonl are the same file: give each its own path",
        ),
        (
            ["-o", "x.jsonl", "--filtered", "./x.jsonl"],
            "-o x.jsonl and --filtered x.jsonl are the same file: give each its own path",
        ),
        (
            ["--receipt", "r.jsonl", "--filtered", "sub/../r.jsonl"],
            "--receipt r.jsonl and --filtered sub/../r.jsonl are the same file: "
            "give each its own path",
        ),
        (
            ["-o", "link.jsonl", "--filtered", "target.jsonl"],
            "-o link.jsonl and --filtered target.jsonl are the same file: give each its own path",
        ),
        (
            ["-o", "pub.pem", "--public-key", "pub.pem"],
            "-o pub.pem would overwrite the --public-key file",
        ),
        (["-o", "sub"], "-o sub is a folder, not a file"),
        (["--receipt", "sub"], "--receipt sub is a folder, not a file"),
    ],
    ids=[
        "o-receipt",
        "o-filtered",
        "receipt-filtered",
        "symlink",
        "public-key",
        "o-folder",
        "receipt-folder",
    ],
)
def test_check_refuses_outputs_that_clash_before_anything_is_sent(
    args: list[str],
    message: str,
    manifest: Path,
    public_key_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "target.jsonl")
    before = sorted(path.name for path in tmp_path.iterdir())

    code, stderr = run(capsys, "check", str(manifest), "--url", CLOSED_URL, "--key", "k", *args)

    assert last_line(stderr) == f"optout check: error: {message}"
    assert code == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert public_key_file.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "ro/x.jsonl"], "-o ro/x.jsonl: cannot write there (permission denied)"),
        (
            ["--filtered", "ro/f.jsonl"],
            "--filtered ro/f.jsonl: cannot write there (permission denied)",
        ),
    ],
    ids=["exclusions", "filtered"],
)
def test_check_refuses_an_output_folder_it_cannot_write_in_before_anything_is_sent(
    args: list[str],
    message: str,
    manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    access = os.access

    def no_writing_in_ro(path: Any, mode: int, **options: Any) -> bool:
        # A read-only folder, also when the tests run as root (who may write anywhere).
        if Path(path).resolve() == read_only.resolve() and mode & os.W_OK:
            return False
        return access(path, mode, **options)

    monkeypatch.setattr(os, "access", no_writing_in_ro)

    code, stderr = run(capsys, "check", str(manifest), "--url", CLOSED_URL, "--key", "k", *args)

    assert last_line(stderr) == f"optout check: error: {message}"
    assert code == 2


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "3601", "0"])
def test_check_poll_interval_is_bounded(
    value: str, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stderr = run(
        capsys, "check", str(manifest), "--url", CLOSED_URL, "--key", "k", "--poll-interval", value
    )

    assert last_line(stderr) == (
        "optout check: error: argument --poll-interval: must be more than 0 and at most "
        f"3600 seconds, got {value}"
    )
    assert code == 2


def test_check_help_states_the_poll_interval_bound(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])

    assert "seconds between status requests, at most 3600" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "not a valid URL (Invalid IPv6 URL): http://[::1"),
        ("http://h:99999", "not a valid URL (Port out of range 0-65535): http://h:99999"),
        ("http://", "not a valid URL (no host or port): http://"),
        ("http://a..b", "not a valid host name: http://a..b"),
        ("http://h/?x=1", "the registry's URL takes no query or fragment (?, #): http://h/?x=1"),
        ("http://h/#top", "the registry's URL takes no query or fragment (?, #): http://h/#top"),
        ("http://h x", "not a valid URL (blank or control characters): http://h x"),
        (
            "http://me:s3cret@h",
            "a user name or password in the URL is not used (the API key goes in --key or "
            "$OPTOUT_API_KEY): http://***@h",
        ),
        ("http://me:s3cret@[::1", "not a valid URL: http://***@[::1"),
        ("http://me:s3cret/x@h", "not a valid URL: http://***@h"),
    ],
    ids=[
        "ipv6",
        "port",
        "no-host",
        "empty-label",
        "query",
        "fragment",
        "blank",
        "password",
        "password-ipv6",
        "password-port",
    ],
)
def test_check_url_is_checked_when_parsed_and_a_password_is_never_echoed(
    url: str, message: str, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stderr = run(capsys, "check", str(manifest), "--url", url, "--key", "k")

    assert last_line(stderr) == f"optout check: error: argument --url: {message}"
    assert "s3cret" not in stderr
    assert code == 2


# --- optout check against a fake registry ---------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeRegistry:
    """Answers each (method, path prefix) with the next scripted answer (the last
    one again once they run out) and records the requests."""

    url: str = ""
    script: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def answer(self, method: str, path: str) -> Answer:
        for (known, prefix), answers in self.script.items():
            if known == method and path.startswith(prefix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        return Answer(404, {"error": "not_found", "detail": "Not found."})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.respond()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.respond()

        def respond(self) -> None:
            fake.requests.append((self.command, self.path, dict(self.headers)))
            answer = fake.answer(self.command, self.path)
            body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body)
            data = body.encode() if isinstance(body, str) else body
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def signing() -> receipts.Ed25519PrivateKey:
    return receipts.private_key_generate()


def done_batch(key: receipts.Ed25519PrivateKey, **fields: Any) -> dict[str, Any]:
    """A finished batch of MANIFEST, nothing excluded, with a valid receipt."""
    statement = {
        "type": receipts.STATEMENT_TYPE,
        "batch": "b1",
        "use": "ai_training",
        "manifest_sha256": hashlib.sha256(MANIFEST).hexdigest(),
        "excluded_count": 0,
        "excluded_ids_sha256": receipts.excluded_ids_digest([]),
    }
    return {
        "id": "b1",
        "status": "done",
        "receipt": receipts.receipt_sign(statement, key),
        **fields,
    }


def script_done(
    registry: FakeRegistry, key: receipts.Ed25519PrivateKey, submitted: list[Answer], **fields: Any
) -> None:
    registry.script = {
        ("POST", "/api/v1/batches"): submitted,
        ("GET", "/api/v1/batches/b1/exclusions"): [Answer(200, b"")],
        ("GET", "/api/v1/batches/b1"): [Answer(200, done_batch(key, **fields))],
        ("GET", "/api/v1/receipts/public-key"): [
            Answer(200, {"public_key": receipts.public_key_base64(key.public_key())})
        ],
    }


def check_args(registry: FakeRegistry, manifest: Path, *more: str) -> list[str]:
    return [
        "check",
        str(manifest),
        "--url",
        registry.url,
        "--key",
        "k",
        "--quiet",
        "--poll-interval",
        "0.01",
        *more,
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"record_count": "many", "progress": "x", "counts": {"invalid": "lots"}},
        {"record_count": 10**400, "progress": float("nan"), "counts": {"invalid": True}},
        {"record_count": -1, "progress": 1e308, "counts": {"invalid": 2.5}},
    ],
    ids=["strings", "huge-nan-bool", "negative-inf-float"],
)
def test_check_takes_counts_that_are_not_whole_numbers_as_unknown(
    fields: dict[str, Any],
    registry: FakeRegistry,
    signing: receipts.Ed25519PrivateKey,
    manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script_done(registry, signing, [Answer(202, {"id": "b1", "status": "queued"})], **fields)

    code, stderr = run(capsys, *check_args(registry, manifest))

    assert "Traceback" not in stderr
    assert "warning:" not in stderr
    assert last_line(stderr).startswith("receipt verified: signed by key id ")
    assert code == 0
    assert (tmp_path / "b1.receipt.json").is_file()


def test_check_progress_with_counts_that_are_not_numbers_does_not_fail() -> None:
    # The progress bar itself (the command above runs with --quiet).
    from tqdm import tqdm

    with tqdm(disable=True) as bar:
        for batch in (
            {"status": "running", "record_count": "many", "progress": "x"},
            {"status": "running", "record_count": 10**400, "progress": float("inf")},
            {"status": "done", "record_count": 3.5, "progress": None},
        ):
            check._progress_show(bar, batch)


def test_a_reused_default_idempotency_key_is_explained(
    registry: FakeRegistry, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conflict = {
        "error": "idempotency_conflict",
        "detail": "Idempotency-Key 'x' was already used for another request (batch b0); use a "
        "new key for a different manifest, use or thresholds",
    }
    registry.script = {("POST", "/api/v1/batches"): [Answer(422, conflict)]}
    key = check.manifest_digests(manifest, "ai_training")[1]

    code, stderr = run(capsys, *check_args(registry, manifest))
    chosen_code, chosen_stderr = run(
        capsys, *check_args(registry, manifest, "--idempotency-key", "mine")
    )

    assert last_line(stderr) == (
        f"optout check: the registry refused the default Idempotency-Key ({key[:16]}…): "
        "this manifest's bytes were already submitted for ai_training as another request "
        "(another file name or format?): pass --idempotency-key to check it again"
    )
    assert code == 1
    # A key the user chose: the registry's own words.
    assert last_line(chosen_stderr) == (
        f"optout check: POST {registry.url}/api/v1/batches: HTTP 422: {conflict['detail']}"
    )
    assert chosen_code == 1
    # The default key is still the one reruns follow.
    assert [headers["Idempotency-Key"] for _, _, headers in registry.requests] == [key, "mine"]


def test_a_submission_over_quota_is_tried_again_after_retry_after(
    registry: FakeRegistry,
    signing: receipts.Ed25519PrivateKey,
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    over = Answer(429, {"error": "throttled", "detail": "slow down"}, {"Retry-After": "0"})
    script_done(registry, signing, [over, over, Answer(202, {"id": "b1", "status": "queued"})])

    code, stderr = run(capsys, *check_args(registry, manifest))

    posts = [path for method, path, _ in registry.requests if method == "POST"]
    assert posts == ["/api/v1/batches"] * 3
    assert (
        stderr.count(f"POST {registry.url}/api/v1/batches: HTTP 429: slow down; retrying in 0s")
        == 2
    )
    assert code == 0


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_submission_met_by_a_busy_registry_is_tried_again(
    registry: FakeRegistry,
    signing: receipts.Ed25519PrivateKey,
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
) -> None:
    busy = Answer(status, {"error": "unavailable", "detail": "busy"}, {"Retry-After": "0"})
    script_done(registry, signing, [busy, Answer(202, {"id": "b1", "status": "queued"})])

    code, _ = run(capsys, *check_args(registry, manifest))

    posts = [path for method, path, _ in registry.requests if method == "POST"]
    assert posts == ["/api/v1/batches"] * 2
    assert code == 0


def test_a_submission_refused_for_good_is_not_tried_again(
    registry: FakeRegistry, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.script = {("POST", "/api/v1/batches"): [Answer(400, {"detail": "bad use"})]}

    code, _ = run(capsys, *check_args(registry, manifest))

    assert len(registry.requests) == 1
    assert code == 1


def test_a_submission_over_quota_gives_up_after_a_few_tries(
    registry: FakeRegistry, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = Answer(429, {"error": "throttled", "detail": "slow down"}, {"Retry-After": "0"})
    registry.script = {("POST", "/api/v1/batches"): [over]}

    code, stderr = run(capsys, *check_args(registry, manifest))

    assert len(registry.requests) == check.SUBMIT_ATTEMPTS
    assert (
        last_line(stderr)
        == f"optout check: POST {registry.url}/api/v1/batches: HTTP 429: slow down"
    )
    assert code == 1
