"""The ``optout`` command line.

``optout hash DIR`` hashes a folder of photos on the creator's own machine and
writes one JSON line per photo, ready to upload: the registry receives hashes,
never the photos. ``optout check MANIFEST`` checks a pipeline's manifest
against the registry (optout/check.py); ``optout verify RECEIPT`` verifies a
batch receipt offline. None of them imports Django or touches a database, so
they run from a plain ``pip install`` without any settings. Subcommands import
what they need inside their own functions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from registry import hashing, variants

# What `optout hash` picks up; any other file is not a photo and is skipped.
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2  # argparse's own exit status for a bad command line
EXIT_INTERRUPTED = 130
# `optout check --poll-interval`: more than an hour between polls is a typo.
MAX_POLL_INTERVAL_SECONDS = 3600.0

HASH_EPILOG = """\
Output: one JSON object per photo, in path order:
  {"path": "<path relative to DIR>", "sha256": ..., "pdq": ..., "pdq_quality": ...,
   "phash": ..., "width": ..., "height": ..., "colour": ..., "band": ...,
   "keypoints": ...,
   "variants": [{"name": "mirror", "pdq": ..., "pdq_quality": ..., "phash": ...,
                 "colour": ..., "keypoints": ...}, ...]}
Upload this file to the registry to register the photos by hash; only the
file name (not the folder) of each path is kept there.

"colour" is the image's colour layout, 66 hex digits: the average hue and
saturation (CIE a*, b*; no brightness) of each cell of a 4 x 4 grid, and how
colourful the image is. It confirms a match of the perceptual hashes.

"band" is the PDQ, pHash and PDQ quality of the image's middle band (the top
and bottom 15 % of its height cut away, where captions go), 82 hex digits.
Records that carry it are also matched by their middle band, which finds
copies with a caption or credit line added.

"keypoints" are the image's local keypoints, base64 (about 5.8 KB): up to 128
corners of a 256-pixel grey copy, each with its position and a 256-bit
descriptor (comparisons of pairs of pixels around it), not the pixels. They
confirm a match of the perceptual hashes geometrically: an edited copy keeps
dozens of corners in the same arrangement, a different photograph does not.
The mirror variant carries the mirror image's keypoints.

"variants" are the hashes of images derived from each photo (its mirror image,
centre and corner crops, 2-degree rotations): with them, a mirrored or
cropped repost of the photo still matches. They take about half the hashing
time of a 1-megapixel photo; --no-variants leaves them out (the registry then
knows the photo's own hashes and keypoints only).

Files are picked by extension (.jpg .jpeg .png .webp .gif, any case); other
files, and hidden files and folders (names starting with "."), are skipped.
A photo that cannot be hashed (or a name that is not a regular file: a named
pipe, a device) is reported on stderr and the run goes on. -o may not be one
of the photos.

By default every pixel is decoded: the hashes are exactly the ones the registry
computes from an uploaded photo. --fast decodes JPEGs of 768 x 768 and larger at
1/2, 1/4 or 1/8 scale and is about 5 times faster; their PDQ and pHash may then
differ from the exact hashes by a few bits (measured on 1024 x 768 photos: PDQ
at most 4 of 256, pHash at most 2 of 64), a margin a match then has to find
within the registry's thresholds. sha256, width and height are the same.
With variants, the variants and the keypoints are computed from the full decode
(they are what a photo is registered with), so --fast saves less (about half
the time on 12-megapixel photos, little on small ones); --fast --no-variants is
fastest, for the records a pipeline checks: their keypoints come from the
reduced decode too.

Exit status:
  0  every photo was hashed
  1  at least one photo could not be hashed (each is reported on stderr),
     or the output could not be written (a full disk)
  2  usage error (bad arguments, DIR is not a folder, -o cannot be written)
"""


@dataclass(frozen=True)
class HashResult:
    """One photo file: its output line, or the reason it could not be hashed."""

    path: str
    line: dict[str, Any] | None = None
    error: str = ""


class OutputFailed(Exception):
    """The JSON lines could not be written (a full disk): the run stops."""


def photo_paths(root: Path) -> tuple[list[str], list[OSError]]:
    """Photo files under ``root`` as POSIX paths relative to it, sorted, and the
    folders that could not be listed (reported, so no photo is skipped silently).

    Sorting the whole list (not folder by folder) makes the output order the
    plain string order of the paths, the same on every machine.
    """
    found = []
    unreadable: list[OSError] = []
    for folder, subfolders, files in os.walk(root, onerror=unreadable.append):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(root)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in PHOTO_EXTENSIONS:
                continue
            found.append((relative / name).as_posix())
    return sorted(found), unreadable


def hash_file(
    root: str, path: str, max_bytes: int, fast: bool = False, with_variants: bool = True
) -> HashResult:
    """Hash one file (and its derived variants, from the same full decode);
    every failure becomes a HashResult, never an exception."""
    derived: list[variants.Variant] = []
    try:
        data = _read_capped(Path(root, path), max_bytes)
        if with_variants:
            hashes, derived = variants.hash_bytes_with_variants(
                data, max_bytes=max_bytes, fast=fast
            )
        else:
            hashes = hashing.hash_bytes(data, max_bytes=max_bytes, fast=fast)
    except hashing.ImageRejected as rejected:
        return HashResult(path, error=f"{rejected.reason} ({rejected.code})")
    except OSError as error:
        return HashResult(path, error=f"cannot read file: {error.strerror or error}")
    except Exception as error:
        # Whatever one file does to a decoder, the other files still get hashed.
        return HashResult(path, error=f"cannot hash: {type(error).__name__}: {error}")
    line: dict[str, Any] = {"path": path, **hashes.as_dict()}
    if with_variants:
        line["variants"] = [variant.as_dict() for variant in derived]
    return HashResult(path, line=line)


def _read_capped(file: Path, max_bytes: int) -> bytes:
    # Only a regular file is opened: opening a named pipe waits for a writer
    # (forever), and a device is no photo.
    if not stat.S_ISREG(file.stat().st_mode):
        raise hashing.ImageRejected("not_a_file", "not a regular file")
    with file.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise hashing.ImageRejected(
                "too_large", f"file is {size} bytes; the limit is {max_bytes} bytes"
            )
        # A buffer of the file's size (+1 to see it grow), not of max_bytes:
        # a 25 MB buffer per photo costs more in page faults than the read.
        data = handle.read(size + 1)
        if len(data) > size:  # it grew since fstat: read on up to the cap
            data += handle.read(max_bytes + 1 - len(data))
        return data


def _hash_one(job: tuple[str, str, int, bool, bool]) -> HashResult:
    return hash_file(*job)


def _ignore_interrupts() -> None:
    # Ctrl-C is the parent's to handle; workers just stop when it shuts the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def hash_results(
    root: Path,
    paths: Sequence[str],
    *,
    workers: int,
    max_bytes: int,
    fast: bool = False,
    with_variants: bool = True,
) -> Iterator[HashResult]:
    """Results in the order of ``paths``, computed by ``workers`` processes."""
    jobs = [(str(root), path, max_bytes, fast, with_variants) for path in paths]
    workers = min(workers, len(jobs))
    if workers <= 1:
        yield from map(_hash_one, jobs)
        return
    # Small chunks keep every worker busy to the end; 16 files per round trip
    # is enough to hide the inter-process overhead next to decoding a photo.
    chunksize = max(1, min(16, len(jobs) // (workers * 4)))
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts)
    try:
        # map() yields in submission order: the output is deterministic however
        # the work is spread over the processes.
        yield from executor.map(_hash_one, jobs, chunksize=chunksize)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def write_results(
    results: Iterable[HashResult], total: int, out: TextIO, *, progress: bool
) -> tuple[int, int]:
    """Write the JSON lines, report failures on stderr; return (hashed, failed)."""
    hashed = failed = 0
    with tqdm(
        total=total, desc="hashing", unit="photo", file=sys.stderr, disable=not progress
    ) as bar:
        for result in results:
            if result.line is not None:
                _output_write(out, json.dumps(result.line) + "\n")
                hashed += 1
            else:
                tqdm.write(f"failed: {result.path}: {result.error}", file=sys.stderr)
                failed += 1
            bar.update(1)
    return hashed, failed


@contextmanager
def _output_errors() -> Iterator[None]:
    """A failed write of the output is OutputFailed (a reader gone away stays
    BrokenPipeError: a quiet stop)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputFailed(error.strerror or str(error)) from None


def _output_write(out: TextIO, text: str) -> None:
    with _output_errors():
        out.write(text)


def _output_close(out: TextIO) -> None:
    with _output_errors():
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()


def _stdout_discard() -> None:
    # What stdout still buffers would fail again when Python flushes it at exit.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def photo_at(root: Path, paths: Sequence[str], output: Path) -> str | None:
    """The photo among ``paths`` that ``output`` is (the same file, also through a
    symlink or a hard link), if any."""
    try:
        target = output.stat()
    except OSError:  # nothing there yet (or nothing reachable): no photo
        return None
    for path in paths:
        try:
            found = (root / path).stat()
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            return path
    return None


def command_hash(args: argparse.Namespace) -> int:
    root: Path = args.directory
    paths, unreadable = photo_paths(root)
    if args.output is not None and (photo := photo_at(root, paths, args.output)) is not None:
        print(
            f"optout hash: error: -o {args.output} would overwrite the photo {photo}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for error in unreadable:
        print(f"failed: {error.filename}: cannot read folder: {error.strerror}", file=sys.stderr)
    try:
        out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    except OSError as error:
        print(f"optout hash: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        try:
            results = hash_results(
                root,
                paths,
                workers=args.workers,
                max_bytes=args.max_bytes,
                fast=args.fast,
                with_variants=not args.no_variants,
            )
            hashed, failed = write_results(results, len(paths), out, progress=not args.quiet)
        finally:
            _output_close(out)
    except BrokenProcessPool:
        print("optout hash: a worker process died (out of memory?); run aborted", file=sys.stderr)
        return EXIT_SOME_FAILED
    except BrokenPipeError:
        # The reader went away (`optout hash DIR | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        _stdout_discard()
        return EXIT_SOME_FAILED
    except OutputFailed as error:
        if out is sys.stdout:
            _stdout_discard()
        print(
            f"optout hash: cannot write {args.output or 'to stdout'}: {error}; run aborted",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    failed += len(unreadable)
    print(f"hashed {hashed}, failed {failed}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


CHECK_EPILOG = """\
Submits MANIFEST (JSONL, CSV, Parquet, or a webdataset .tar) as a batch for
one use, follows it with a progress bar until the registry has decided every
record, then:
  - writes the excluded records to -o, one JSON object per line (id, row,
    matches); default: exclusions.jsonl in the current folder;
  - saves the signed receipt to --receipt (default: <batch id>.receipt.json in
    the current folder) and verifies it: the signature against --public-key
    FILE if given, else against the key fetched from
    URL/api/v1/receipts/public-key (stderr says which was trusted); and the
    statement against this run: batch id, use, the manifest's sha256, the
    number of exclusions and the sha256 of their ids, the --strictness;
  - with --filtered, writes the manifest minus the excluded records, in the
    manifest's own format. Rows are matched by number as the registry numbers
    them (JSONL and CSV: line number, the CSV header being line 1; Parquet:
    row; .tar: sample), and each dropped row's id must be the excluded id.
    Rows the registry found invalid (named on stderr) were not checked; they
    stay in the filtered manifest.

Running the same command again follows the same batch instead of submitting
a new one: the Idempotency-Key defaults to the sha256 of the use followed by
the manifest bytes. Pass another --idempotency-key to check again against
the registry as it is now.

The API key comes from --key or the environment variable OPTOUT_API_KEY
(prefer the environment: other users of a machine can see command lines).

Exit status:
  0  batch done, receipt verified, files written
  1  the batch failed, the registry refused a request or could not be
     reached, or the receipt does not verify (each said on stderr)
  2  usage error (bad arguments, unreadable files, no API key)
"""

VERIFY_EPILOG = """\
Checks the receipt's Ed25519 signature over its statement with the key you
trust (the registry's published key: a PEM file, or the base64 raw key), not
with the key the receipt names, and prints what the receipt states. Needs no
network access.

Exit status:
  0  the receipt is valid
  1  the receipt is not valid (the reason is on stderr)
  2  usage error (unreadable receipt file, not a public key)
"""


def command_check(args: argparse.Namespace) -> int:
    from optout import check

    api_key = args.key or os.environ.get("OPTOUT_API_KEY", "")
    if not api_key:
        print("optout check: error: no API key: pass --key or set OPTOUT_API_KEY", file=sys.stderr)
        return EXIT_USAGE
    options = check.CheckOptions(
        manifest=args.manifest,
        url=args.url,
        api_key=api_key,
        use=args.use,
        output=args.output,
        filtered=args.filtered,
        receipt=args.receipt,
        public_key=args.public_key,
        idempotency_key=args.idempotency_key,
        poll_interval=args.poll_interval,
        progress=not args.quiet,
        strictness=args.strictness,
    )
    return check.run(options)


def command_verify(args: argparse.Namespace) -> int:
    from optout import receipts

    try:
        trusted = _trusted_key(args.public_key)
        data = args.receipt.read_bytes()
    except (OSError, receipts.KeyInvalid) as error:
        message = getattr(error, "strerror", None) or error
        print(f"optout verify: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        receipt = _unwrap_receipt(json.loads(data.decode("utf-8")))
    except UnicodeDecodeError as error:
        receipt = f"not UTF-8 text: {error.reason} at byte {error.start}"
    except ValueError as error:
        receipt = f"not JSON: {error}"
    except RecursionError:
        receipt = "not JSON: nested too deeply"
    try:
        if isinstance(receipt, str):
            raise receipts.ReceiptInvalid(receipt)
        try:
            receipts.receipt_verify(receipt, trusted)
        except RecursionError:
            raise receipts.ReceiptInvalid("malformed receipt: nested too deeply") from None
        statement = receipt["statement"]
        if statement.get("type") != receipts.STATEMENT_TYPE:
            raise receipts.ReceiptInvalid(f"not a batch receipt: type {statement.get('type')!r}")
    except receipts.ReceiptInvalid as error:
        print(f"optout verify: {args.receipt} is NOT valid: {error.reason}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"receipt valid: signed by key id {receipts.key_id(trusted)}")
    for label, field in VERIFY_SUMMARY:
        print(f"{label + ':':<18}{statement.get(field, '-')}")
    return EXIT_OK


VERIFY_SUMMARY = (
    ("batch", "batch"),
    ("organization", "organization"),
    ("use", "use"),
    ("registry version", "registry_version"),
    ("records", "record_count"),
    ("excluded", "excluded_count"),
    ("invalid", "invalid_count"),
    ("manifest sha256", "manifest_sha256"),
    ("finished at", "finished_at"),
)


def _trusted_key(value: str) -> Any:
    """--public-key: a file holding the key, or the key itself (base64 or PEM)."""
    from optout import receipts

    path = Path(value)
    if path.is_file():
        return receipts.public_key_load(path.read_bytes())
    try:
        return receipts.public_key_load(value)
    except receipts.KeyInvalid as error:
        raise receipts.KeyInvalid(f"--public-key {value}: no such file, and {error}") from None


def _unwrap_receipt(data: Any) -> Any:
    """A receipt, also when given the whole batch (its ``receipt`` field)."""
    if isinstance(data, dict) and "statement" not in data and isinstance(data.get("receipt"), dict):
        return data["receipt"]
    return data


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {value}")
    return path


def _registry_url(value: str) -> str:
    """--url: checked here, so that a URL urllib cannot use is a usage error, not
    a traceback; one with a password in it is refused without showing it."""
    shown = _url_shown(value)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as error:
        reason = f" ({error})" if shown == value else ""  # a masked password is not echoed
        raise argparse.ArgumentTypeError(f"not a valid URL{reason}: {shown}") from None
    if parts.scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {shown}")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise argparse.ArgumentTypeError(f"not a valid URL (blank or control characters): {shown}")
    if "@" in parts.netloc:
        raise argparse.ArgumentTypeError(
            f"a user name or password in the URL is not used (the API key goes in --key or "
            f"$OPTOUT_API_KEY): {shown}"
        )
    if "?" in value or "#" in value:
        raise argparse.ArgumentTypeError(
            f"the registry's URL takes no query or fragment (?, #): {shown}"
        )
    if not parts.hostname or port == 0:
        raise argparse.ArgumentTypeError(f"not a valid URL (no host or port): {shown}")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"not a valid host name: {shown}") from None
    return value.rstrip("/")


def _url_shown(value: str) -> str:
    """``value`` with everything between the scheme and its last @ masked: an
    error message must not echo a password (user:password@host)."""
    scheme, separator, rest = value.partition("://")
    if not separator:
        scheme, rest = "", value
    if "@" not in rest:
        return value
    return f"{scheme}{separator}***@{rest.rpartition('@')[2]}"


def _poll_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < seconds <= MAX_POLL_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_POLL_INTERVAL_SECONDS:.0f} seconds, got {value}"
        )
    return seconds


def _directory(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {value}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optout",
        description="Opt-Out Registry command line: hash photos locally, check manifests.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hash_parser = commands.add_parser(
        "hash",
        help="hash a folder of photos into JSON lines (nothing leaves this machine)",
        description="Hash every photo under DIR (recursively) into JSON lines.",
        epilog=HASH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hash_parser.add_argument("directory", type=_directory, metavar="DIR")
    hash_parser.add_argument(
        "-o", "--output", type=Path, metavar="OUT.jsonl", help="write here instead of stdout"
    )
    hash_parser.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes hashing in parallel (default: the number of CPUs, %(default)s here)",
    )
    hash_parser.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=hashing.MAX_BYTES,
        metavar="N",
        help="skip (and report) photo files larger than this (default: %(default)s, "
        "the registry's own upload limit)",
    )
    hash_parser.add_argument(
        "--fast",
        action="store_true",
        help="decode large JPEGs at reduced scale: up to 5x faster (with --no-variants), "
        "PDQ and pHash within a few bits of the exact hashes (see below)",
    )
    hash_parser.add_argument(
        "--no-variants",
        action="store_true",
        help="leave out the hashes of the derived images (mirror, crops, rotations): "
        "faster, but edited reposts of the photos match less often",
    )
    hash_parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (failures are still reported)"
    )
    hash_parser.set_defaults(handler=command_hash)
    _add_check_parser(commands)
    _add_verify_parser(commands)
    return parser


def _add_check_parser(commands: Any) -> None:
    from optout.matching.rule import MAX_STRICTNESS
    from optout.uses import USES

    check_parser = commands.add_parser(
        "check",
        help="check a manifest against the registry; write exclusions, receipt, filtered manifest",
        description="Check the records of MANIFEST against the Opt-Out Registry.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check_parser.add_argument("manifest", type=_existing_file, metavar="MANIFEST")
    check_parser.add_argument(
        "--url",
        type=_registry_url,
        default=os.environ.get("OPTOUT_URL"),
        required="OPTOUT_URL" not in os.environ,
        help="the registry, e.g. https://registry.example.org (default: $OPTOUT_URL)",
    )
    check_parser.add_argument("--key", metavar="KEY", help="API key (default: $OPTOUT_API_KEY)")
    check_parser.add_argument(
        "--use",
        choices=USES,
        default="ai_training",
        metavar="USE",
        help=f"the declared use: {', '.join(USES)} (default: %(default)s)",
    )
    check_parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("exclusions.jsonl"),
        metavar="EXCLUSIONS.jsonl",
        help="where the exclusions go (default: %(default)s)",
    )
    check_parser.add_argument(
        "--filtered", type=Path, metavar="FILTERED", help="write the manifest minus exclusions here"
    )
    check_parser.add_argument(
        "--receipt",
        type=Path,
        metavar="RECEIPT.json",
        help="where the receipt goes (default: <batch id>.receipt.json)",
    )
    check_parser.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM_FILE",
        help="the registry's public key to verify the receipt with (default: fetch it)",
    )
    check_parser.add_argument(
        "--idempotency-key",
        metavar="K",
        help="default: sha256 of the use and the manifest (a rerun follows the same batch)",
    )
    check_parser.add_argument(
        "--poll-interval",
        type=_poll_seconds,
        default=2.0,
        metavar="S",
        help=f"seconds between status requests, at most {MAX_POLL_INTERVAL_SECONDS:.0f} "
        "(default: %(default)s)",
    )
    check_parser.add_argument(
        "--strictness",
        type=int,
        choices=range(MAX_STRICTNESS + 1),
        default=0,
        metavar="K",
        help=f"decide with the registry's rule K steps stricter, 0 to {MAX_STRICTNESS}: fewer "
        "false exclusions, fewer edited copies caught (default: %(default)s, the registry's own)",
    )
    check_parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    check_parser.set_defaults(handler=command_check)


def _add_verify_parser(commands: Any) -> None:
    verify_parser = commands.add_parser(
        "verify",
        help="verify a batch receipt offline",
        description="Verify the signature of a batch receipt and print what it states.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify_parser.add_argument("receipt", type=Path, metavar="RECEIPT")
    verify_parser.add_argument(
        "--public-key",
        required=True,
        metavar="KEY_FILE_OR_BASE64",
        help="the registry's public key: a PEM file, or the base64 raw key",
    )
    verify_parser.set_defaults(handler=command_verify)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
