"""``optout check MANIFEST``: check a manifest against the registry, end to end.

Submit the manifest as a batch, follow it to its end with a progress bar,
download the exclusions, save the signed receipt and verify it (signature and
statement, against what was actually sent and received), and on request write
the manifest minus the excluded records. Imports no Django: the command line
runs from a plain install. Messages go to stderr; stdout stays empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tqdm import tqdm

from optout import client, manifest_filter, receipts
from optout.manifests import ManifestInvalid

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FINAL_STATUSES = ("done", "failed")
# Consecutive failed polls (registry restarting, proxy hiccup) before giving up;
# with the back-off below that is about five minutes of outage.
MAX_POLL_FAILURES = 12
MAX_BACKOFF_SECONDS = 30.0
# Submissions over the key's quota (HTTP 429) or refused for the moment (502,
# 503, 504) are tried this many times in all,
# each after the wait the registry's Retry-After asks for, up to this long.
SUBMIT_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 60.0
# A count above this is no count (a progress bar cannot show it).
MAX_COUNT = 10**15
# Smaller manifests upload in about a second: no bar for them.
UPLOAD_BAR_BYTES = 16 * 1024 * 1024
# Invalid rows named on stderr; the rest are one download away (?decision=invalid).
INVALID_SHOWN = 10


class UsageError(Exception):
    """Something about the command line or local files: exit status 2."""


class CheckFailed(Exception):
    """The batch failed, or what came back does not hold up: exit status 1."""


@dataclass(frozen=True)
class CheckOptions:
    manifest: Path
    url: str
    api_key: str
    use: str
    output: Path
    filtered: Path | None
    receipt: Path | None
    public_key: Path | None
    idempotency_key: str | None
    poll_interval: float
    progress: bool
    strictness: int = 0


@dataclass(frozen=True)
class Exclusions:
    """What was downloaded: row -> record id, and the digest a receipt states."""

    rows: dict[int, str]
    ids_sha256: str


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run(options: CheckOptions) -> int:
    try:
        return _run(options)
    except UsageError as error:
        print(f"optout check: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (client.ApiError, CheckFailed) as error:
        print(f"optout check: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:  # a full disk, a file removed under our feet
        print(f"optout check: {error}", file=sys.stderr)
        return EXIT_FAILED


def _run(options: CheckOptions) -> int:
    trusted_key = _trusted_key_from_file(options.public_key)
    _check_paths(options)
    manifest_sha256, default_key = manifest_digests(
        options.manifest, options.use, options.strictness
    )
    registry = client.Registry(options.url, options.api_key)
    try:
        batch = _submit(registry, options, options.idempotency_key or default_key)
        batch = _wait(registry, batch, options)
    except KeyboardInterrupt:
        print(
            "optout check: interrupted; the registry goes on checking the batch: run the "
            "same command again to pick it up",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    batch_id = str(batch["id"])
    if batch.get("status") == "failed":
        reason = batch.get("failure_reason") or batch.get("detail") or "no reason given"
        raise CheckFailed(f"batch {batch_id} failed: {reason}")
    receipt_path = options.receipt or _receipt_default(options, batch_id)
    _summary(batch)
    _invalid_warn(registry, batch)
    exclusions = _download(registry, batch_id, options.output)
    receipt = _receipt_save(batch, receipt_path)
    trusted_key = trusted_key or _trusted_key_fetch(registry)
    problems = receipt_problems(
        receipt,
        trusted_key,
        batch_id=batch_id,
        use=options.use,
        manifest_sha256=manifest_sha256,
        exclusions=exclusions,
        strictness=options.strictness,
    )
    if problems:
        raise CheckFailed(
            "the receipt does NOT verify:\n  "
            + "\n  ".join(problems)
            + ("\n  the filtered manifest was not written" if options.filtered else "")
        )
    say(f"receipt verified: signed by key id {receipts.key_id(trusted_key)}")
    if options.filtered:
        _filter(options.manifest, options.filtered, exclusions)
    return EXIT_OK


# --- before anything is sent -------------------------------------------------------


def manifest_digests(manifest: Path, use: str, strictness: int = 0) -> tuple[str, str]:
    """(sha256 of the manifest, the default Idempotency-Key: sha256 of the use
    (and the strictness, when some was asked for) followed by the manifest
    bytes). The same manifest checked for the same use again gets the same key,
    so a rerun resumes the batch instead of starting one."""
    plain = hashlib.sha256()
    keyed = hashlib.sha256(use.encode("utf-8"))
    if strictness:
        keyed.update(f"\0strictness={strictness}\0".encode())
    try:
        with manifest.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                plain.update(block)
                keyed.update(block)
    except OSError as error:
        raise UsageError(f"cannot read {manifest}: {error.strerror or error}") from None
    return plain.hexdigest(), keyed.hexdigest()


def _trusted_key_from_file(path: Path | None) -> Ed25519PublicKey | None:
    if path is None:
        return None
    try:
        key = receipts.public_key_load(path.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read --public-key {path}: {error.strerror or error}") from None
    except receipts.KeyInvalid as error:
        raise UsageError(f"--public-key {path}: {error}") from None
    say(f"trusting the public key in {path} (key id {receipts.key_id(key)})")
    return key


def _check_paths(options: CheckOptions) -> None:
    """Refuse, before anything is sent, outputs that would overwrite an input or
    each other, or that cannot be written where they are to go."""
    given = {"-o": options.output, "--receipt": options.receipt, "--filtered": options.filtered}
    outputs = [(flag, path) for flag, path in given.items() if path is not None]
    for index, (flag, path) in enumerate(outputs):
        _check_output(options, flag, path)
        for other_flag, other in outputs[:index]:
            if _same_file(path, other):
                raise UsageError(
                    f"{other_flag} {other} and {flag} {path} are the same file: "
                    "give each its own path"
                )
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a folder, not a file")
        if not _resolved(path.parent).is_dir():
            raise UsageError(f"{flag} {path}: the folder {path.parent} does not exist")
        # The exclusions and the filtered manifest go to a temporary file in the
        # same folder first; the receipt is written in place.
        if not os.access(path.parent, os.W_OK | os.X_OK) or (
            flag == "--receipt" and path.exists() and not os.access(path, os.W_OK)
        ):
            raise UsageError(f"{flag} {path}: cannot write there (permission denied)")
    if options.receipt is None and not os.access(Path.cwd(), os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write the receipt in the current folder {Path.cwd()}: pass --receipt FILE"
        )
    if options.filtered is None:
        return
    try:
        found = manifest_filter.manifest_format(options.manifest)
    except ManifestInvalid as error:
        raise UsageError(f"{options.manifest}: {error}") from None
    named = manifest_filter.EXTENSION_FORMATS.get(options.filtered.suffix.lower())
    if named is not None and named != found:
        raise UsageError(
            f"--filtered {options.filtered}: the filtered manifest keeps the manifest's "
            f"format ({found}); give it a matching extension"
        )


def _check_output(options: CheckOptions, flag: str, path: Path) -> None:
    """``path`` must not be one of the files read."""
    if _same_file(path, options.manifest):
        raise UsageError(f"{flag} {path} would overwrite the manifest")
    if options.public_key is not None and _same_file(path, options.public_key):
        raise UsageError(f"{flag} {path} would overwrite the --public-key file")


def _receipt_default(options: CheckOptions, batch_id: str) -> Path:
    """<batch id>.receipt.json in the current folder, unless that is another file of this run."""
    path = Path(f"{batch_id}.receipt.json")
    _check_output(options, "the receipt", path)
    for flag, other in (("-o", options.output), ("--filtered", options.filtered)):
        if other is not None and _same_file(path, other):
            raise UsageError(f"the receipt {path} would overwrite {flag} {other}: pass --receipt")
    return path


def _same_file(one: Path, other: Path) -> bool:
    """The same file, through symlinks and hard links too (or both not there yet)."""
    if _resolved(one) == _resolved(other):
        return True
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


# --- the batch -----------------------------------------------------------------


def _submit(registry: client.Registry, options: CheckOptions, key: str) -> dict[str, Any]:
    """Submit the manifest; a submission over the key's quota (HTTP 429) or met
    by a gateway or a registry busy for the moment (502, 503, 504) is tried
    again, a few times, after the wait the registry asks for. The same
    Idempotency-Key makes a retry safe: one the registry did take is followed."""
    attempt = 1
    while True:
        try:
            status, batch = _upload(registry, options, key)
        except client.ApiError as error:
            if error.code == "idempotency_conflict" and options.idempotency_key is None:
                raise CheckFailed(
                    f"the registry refused the default Idempotency-Key ({key[:16]}…): this "
                    f"manifest's bytes were already submitted for {options.use} as another "
                    "request (another file name or format?): pass --idempotency-key to check "
                    "it again"
                ) from None
            if error.status not in client.TRANSIENT_STATUSES or attempt >= SUBMIT_ATTEMPTS:
                raise
            delay = _retry_delay(error, 2.0**attempt)
            say(f"{error}; retrying in {delay:.0f}s")
            time.sleep(delay)
            attempt += 1
        else:
            break
    if "id" not in batch:
        raise CheckFailed(f"the registry accepted the manifest but named no batch id: {batch}")
    if status == 202:
        stricter = f", {options.strictness} steps stricter" if options.strictness else ""
        say(f"submitted {options.manifest.name} for {options.use}{stricter}: batch {batch['id']}")
    else:
        say(
            f"batch {batch['id']} was already submitted with this Idempotency-Key "
            f"({key[:16]}…): following it (pass --idempotency-key to check again)"
        )
    return batch


def _retry_delay(error: client.ApiError, otherwise: float) -> float:
    """The wait the registry's Retry-After asks for (else ``otherwise``), bounded."""
    wanted = otherwise if error.retry_after is None else error.retry_after
    return min(wanted, MAX_RETRY_AFTER_SECONDS)


def _upload(
    registry: client.Registry, options: CheckOptions, key: str
) -> tuple[int, dict[str, Any]]:
    size = options.manifest.stat().st_size
    with tqdm(
        total=size,
        desc="uploading",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not options.progress or size < UPLOAD_BAR_BYTES,
        leave=False,
    ) as bar:
        return registry.batch_submit(
            options.manifest,
            use=options.use,
            strictness=options.strictness,
            idempotency_key=key,
            on_read=bar.update,
        )


def _wait(registry: client.Registry, accepted: dict[str, Any], options: CheckOptions) -> Any:
    """The batch once done or failed, as GET /api/v1/batches/<id> shows it (the
    submission's answer carries neither counts nor receipt)."""
    batch_id = str(accepted["id"])
    batch: dict[str, Any] = {"id": batch_id, "status": "queued"}
    with tqdm(desc="checking", unit="record", file=sys.stderr, disable=not options.progress) as bar:
        failures = 0
        while True:
            delay = options.poll_interval
            try:
                batch = registry.batch_get(batch_id)
            except client.ApiError as error:
                failures += 1
                if not error.transient or failures >= MAX_POLL_FAILURES:
                    raise
                delay = _retry_delay(error, _backoff(options.poll_interval, failures))
                say(f"{error}; retrying in {delay:.0f}s")
            else:
                failures = 0
                _progress_show(bar, batch)
                if batch.get("status") in FINAL_STATUSES:
                    return batch
            time.sleep(delay)


def _backoff(interval: float, failures: int) -> float:
    return min(interval * 2**failures, max(interval, MAX_BACKOFF_SECONDS))


def _count(value: Any) -> int | None:
    """A count the registry sent, or None when it is not one (unknown)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _fraction(value: Any) -> float:
    """The progress the registry sent, 0 to 1; 0 when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    if value != value or value <= 0:  # NaN, or nothing done yet
        return 0.0
    return 1.0 if value >= 1 else float(value)


def _progress_show(bar: tqdm[Any], batch: dict[str, Any]) -> None:
    records = _count(batch.get("record_count")) or 0
    fraction = _fraction(batch.get("progress"))
    if batch.get("status") == "done":
        fraction = 1.0
    if records and bar.total != records:
        bar.total = records
    bar.n = round(fraction * records) if records else 0
    bar.set_postfix_str(str(batch.get("status", "")), refresh=False)
    bar.refresh()


def _counts(batch: dict[str, Any]) -> dict[str, Any]:
    counts = batch.get("counts")
    return counts if isinstance(counts, dict) else {}


def _summary(batch: dict[str, Any]) -> None:
    counts = _counts(batch)
    say(
        f"batch {batch['id']} done: {batch.get('record_count', '?')} records, "
        f"{counts.get('excluded', '?')} excluded, {counts.get('invalid', '?')} invalid, "
        f"registry version {batch.get('registry_version', '?')}"
    )


def _invalid_warn(registry: client.Registry, batch: dict[str, Any]) -> None:
    """Records the registry could not read were not checked: say which ones."""
    counts = _counts(batch)
    invalid = _count(counts.get("invalid"))
    if not invalid:
        return
    shown = []
    try:
        for line in registry.result_lines(str(batch["id"]), decision="invalid"):
            item = json.loads(line)
            shown.append(f"  row {item.get('row')}: {item.get('reason')}")
            if len(shown) == INVALID_SHOWN:
                break
    except (client.ApiError, ValueError, AttributeError) as error:
        shown.append(f"  (cannot list them: {error})")
    more = f"\n  … and {invalid - len(shown)} more" if invalid > len(shown) else ""
    say(
        f"warning: {invalid} records are invalid and were NOT checked (kept in a filtered "
        "manifest):\n" + "\n".join(shown) + more
    )


# --- what comes back -------------------------------------------------------------


def _download(registry: client.Registry, batch_id: str, target: Path) -> Exclusions:
    rows: dict[int, str] = {}
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            for number, line in enumerate(registry.result_lines(batch_id), start=1):
                if not line.strip():
                    continue
                row, record_id = _exclusion_row(line, number)
                if row in rows:
                    raise CheckFailed(f"the exclusions name row {row} twice (line {number})")
                rows[row] = record_id
                out.write(line if line.endswith(b"\n") else line + b"\n")
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    ordered = [rows[row] for row in sorted(rows)]
    say(f"exclusions: {len(rows)} records written to {target}")
    return Exclusions(rows=rows, ids_sha256=receipts.excluded_ids_digest(ordered))


def _exclusion_row(line: bytes, number: int) -> tuple[int, str]:
    try:
        item = json.loads(line)
        row = item["row"]
        record_id = item.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckFailed(
            f"line {number} of the exclusions is not a JSON object with a row: {line[:200]!r}"
        ) from None
    if not isinstance(row, int) or isinstance(row, bool) or row < 1:
        raise CheckFailed(f"line {number} of the exclusions has no valid row: {row!r}")
    return row, "" if record_id is None else str(record_id)


def _receipt_save(batch: dict[str, Any], path: Path) -> dict[str, Any]:
    receipt = batch.get("receipt")
    if not isinstance(receipt, dict):
        raise CheckFailed(f"batch {batch['id']} is done but carries no receipt")
    try:
        path.write_text(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n", "utf-8")
    except OSError as error:
        raise UsageError(f"cannot write the receipt {path}: {error.strerror or error}") from None
    say(f"receipt: saved to {path}")
    return receipt


def _trusted_key_fetch(registry: client.Registry) -> Ed25519PublicKey:
    answer = registry.public_key()
    try:
        key = receipts.public_key_load(str(answer.get("public_key") or ""))
    except receipts.KeyInvalid as error:
        raise CheckFailed(f"the registry's public key is not usable: {error}") from None
    say(
        f"trusting the public key fetched from {registry.url('/api/v1/receipts/public-key')} "
        f"(key id {receipts.key_id(key)}); pass --public-key FILE to pin a key you "
        "obtained independently"
    )
    return key


def receipt_problems(
    receipt: dict[str, Any],
    trusted_key: Ed25519PublicKey,
    *,
    batch_id: str,
    use: str,
    manifest_sha256: str,
    exclusions: Exclusions,
    strictness: int = 0,
) -> list[str]:
    """Everything wrong with ``receipt`` for this run; empty when it holds up."""
    try:
        receipts.receipt_verify(receipt, trusted_key)
    except receipts.ReceiptInvalid as error:
        return [error.reason]
    statement = receipt["statement"]
    expected: list[tuple[str, Any, str]] = [
        ("type", receipts.STATEMENT_TYPE, "a batch receipt"),
        ("batch", batch_id, "the batch checked"),
        ("use", use, "the use declared"),
        ("manifest_sha256", manifest_sha256, "the sha256 of the local manifest"),
        ("excluded_count", len(exclusions.rows), "the number of exclusions downloaded"),
        ("excluded_ids_sha256", exclusions.ids_sha256, "the sha256 of the downloaded ids"),
    ]
    problems = [
        f"{field} is {statement.get(field)!r}, expected {value!r} ({meaning})"
        for field, value, meaning in expected
        if statement.get(field) != value
    ]
    # The registry's own rule states no strictness.
    thresholds = statement.get("thresholds") or {}
    stated = thresholds.get("strictness", 0) if isinstance(thresholds, dict) else thresholds
    if stated != strictness:
        problems.append(
            f"thresholds.strictness is {stated!r}, expected {strictness!r} "
            "(the strictness asked for)"
        )
    return problems


def _filter(manifest: Path, target: Path, exclusions: Exclusions) -> None:
    try:
        result = manifest_filter.manifest_filter(manifest, target, exclusions.rows)
    except manifest_filter.FilterError as error:
        raise CheckFailed(str(error)) from None
    except (OSError, ManifestInvalid) as error:
        raise CheckFailed(f"cannot write the filtered manifest {target}: {error}") from None
    say(f"filtered manifest: {target} ({result.kept} records kept, {result.dropped} dropped)")
