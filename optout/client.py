"""A small client of the registry's pipeline API, on the standard library only.

``optout check`` uses it; it needs no Django and no HTTP library beyond
``urllib``, so the command line runs from a plain install. Every failure becomes
an ``ApiError`` whose message is the registry's own JSON ``detail`` (with the
fields it names), never a traceback.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import mimetypes
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Long enough for a large manifest to be accepted on a slow link (the timeout
# applies to each socket operation, not the whole upload).
TIMEOUT_SECONDS = 120
# Statuses that say "try again shortly" rather than "this request is wrong".
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
_READ_BLOCK = 1024 * 1024


class ApiError(Exception):
    """A request to the registry failed. ``transient``: worth retrying later;
    ``code``: the registry's machine-readable ``error``, if it sent one;
    ``retry_after``: the seconds its Retry-After header asked to wait, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        code: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.code = code
        self.retry_after = retry_after


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the API key to wherever it points, and urllib turns
    # a redirected POST into a GET: the registry's URL must be the final one.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class MultipartBody:
    """A multipart/form-data body read in blocks: the manifest is streamed from
    disk, never held in memory as a whole."""

    def __init__(self, fields: dict[str, str], file_field: str, path: Path) -> None:
        self.boundary = "optout-" + secrets.token_hex(16)
        head = b"".join(
            self._part_head(name) + value.encode("utf-8") + b"\r\n"
            for name, value in fields.items()
        )
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        head += self._part_head(file_field, path.name, content_type)
        self._parts: list[bytes | Path] = [head, path, f"\r\n--{self.boundary}--\r\n".encode()]
        self.length = len(head) + path.stat().st_size + len(self._parts[2])  # type: ignore[arg-type]
        self._current: IO[bytes] | None = None
        self._index = 0
        self.on_read: Callable[[int], None] = lambda size: None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_head(self, name: str, filename: str = "", content_type: str = "") -> bytes:
        disposition = f'form-data; name="{name}"'
        if filename:
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{quoted}"'
        lines = [f"--{self.boundary}", f"Content-Disposition: {disposition}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def read(self, size: int = -1) -> bytes:
        size = _READ_BLOCK if size is None or size < 0 else size
        while self._index < len(self._parts):
            part = self._parts[self._index]
            if isinstance(part, bytes):
                self._index += 1
                self.on_read(len(part))
                return part
            if self._current is None:
                self._current = part.open("rb")
            data = self._current.read(size)
            if data:
                self.on_read(len(data))
                return data
            self._current.close()
            self._current = None
            self._index += 1
        return b""

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


@dataclass(frozen=True)
class Registry:
    """The registry at ``base_url`` (scheme and host, no /api), as one organization."""

    base_url: str
    api_key: str = ""
    timeout: float = TIMEOUT_SECONDS

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def open(
        self,
        method: str,
        path: str,
        *,
        body: MultipartBody | None = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> http.client.HTTPResponse:
        """Send one request; a response with status >= 400 becomes an ApiError."""
        opener = urllib.request.build_opener(_NoRedirects)
        try:
            request = urllib.request.Request(self.url(path), data=body, method=method)  # noqa: S310 (http(s) only, checked by the caller)
            request.add_header("Accept", "application/json")
            request.add_header("User-Agent", "optout-cli")
            if authenticated and self.api_key:
                request.add_header("Authorization", f"Api-Key {self.api_key}")
            if body is not None:
                request.add_header("Content-Type", body.content_type)
                request.add_header("Content-Length", str(body.length))
            for name, value in (headers or {}).items():
                request.add_header(name, value)
            response = opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise _http_error(method, self.url(path), error) from None
        except urllib.error.URLError as error:
            raise ApiError(
                f"cannot reach {self.url(path)}: {error.reason}", transient=True
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise ApiError(f"{method} {self.url(path)} failed: {error}", transient=True) from None
        except ValueError as error:  # a URL urllib cannot use (the command line checks --url)
            raise ApiError(f"{method} {self.url(path)}: not a usable URL: {error}") from None
        finally:
            if body is not None:
                body.close()
        assert isinstance(response, http.client.HTTPResponse)
        return response

    def json(self, method: str, path: str, **options: Any) -> Any:
        return self.json_with_status(method, path, **options)[1]

    def json_with_status(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        with self.open(method, path, **options) as response:
            try:
                return response.status, json.loads(response.read())
            except (ValueError, OSError, http.client.HTTPException) as error:
                raise ApiError(
                    f"{method} {self.url(path)}: the answer is not JSON ({error})", transient=True
                ) from None

    def batch_submit(
        self,
        manifest: Path,
        *,
        use: str,
        idempotency_key: str,
        on_read: Callable[[int], None],
        strictness: int = 0,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, the batch): 202 for a new batch, 200 for one this
        Idempotency-Key already submitted."""
        fields = {"use": use}
        if strictness:
            fields["strictness"] = str(strictness)
        body = MultipartBody(fields, "manifest", manifest)
        body.on_read = on_read
        status, answer = self.json_with_status(
            "POST", "/api/v1/batches", body=body, headers={"Idempotency-Key": idempotency_key}
        )
        return status, _object(answer, "POST /api/v1/batches")

    def batch_get(self, batch_id: str) -> dict[str, Any]:
        path = f"/api/v1/batches/{urllib.parse.quote(batch_id)}"
        return _object(self.json("GET", path), f"GET {path}")

    def result_lines(self, batch_id: str, *, decision: str = "exclude") -> Iterator[bytes]:
        """The batch's excluded (or invalid) records, JSON Lines, streamed line by line."""
        query = "format=jsonl" + ("" if decision == "exclude" else f"&decision={decision}")
        path = f"/api/v1/batches/{urllib.parse.quote(batch_id)}/exclusions?{query}"
        with self.open("GET", path) as response:
            try:
                yield from response
            except (OSError, http.client.HTTPException) as error:
                raise ApiError(f"the download of {self.url(path)} broke off: {error}") from None

    def public_key(self) -> dict[str, Any]:
        path = "/api/v1/receipts/public-key"
        return _object(self.json("GET", path, authenticated=False), f"GET {path}")


def _object(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ApiError(f"{what}: expected a JSON object, got {type(answer).__name__}")
    return answer


def _http_error(method: str, url: str, error: urllib.error.HTTPError) -> ApiError:
    status = error.code
    try:
        body = error.read()
    except (OSError, http.client.HTTPException):
        body = b""
    finally:
        error.close()
    if 300 <= status < 400:
        location = error.headers.get("Location", "?")
        return ApiError(
            f"{method} {url}: HTTP {status}, redirected to {location}; "
            "pass the registry's final address as --url",
            status=status,
        )
    try:
        answer = json.loads(body)
    except ValueError:
        answer = _NOT_JSON
    message = f"{method} {url}: HTTP {status}: {_describe(answer, body, error.reason)}"
    code = answer.get("error") if isinstance(answer, dict) else None
    return ApiError(
        message,
        status=status,
        transient=status in TRANSIENT_STATUSES,
        code=code if isinstance(code, str) else "",
        retry_after=_retry_after(error.headers.get("Retry-After")),
    )


# An error body that is not JSON (an HTML page of a proxy, plain text).
_NOT_JSON = object()


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(answer: Any, body: bytes, reason: str) -> str:
    """The registry's error body in words: its detail, then each field it names
    (``answer``: the body decoded as JSON, or _NOT_JSON)."""
    if answer is _NOT_JSON:
        text = body.decode("utf-8", "replace").strip()
        return (text[:300] + "…" if len(text) > 300 else text) or reason
    if not isinstance(answer, dict):
        return str(answer)[:300]
    detail = str(answer.get("detail") or answer.get("error") or reason)
    fields = answer.get("fields")
    if isinstance(fields, dict):
        problems = [f"{name}: {_flatten(value)}" for name, value in fields.items()]
        unique = [problem for problem in problems if detail not in problem]
        if unique:
            detail += "\n  " + "\n  ".join(unique[:20])
            if len(unique) > 20:
                detail += f"\n  … and {len(unique) - 20} more"
    return detail


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_flatten(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    return str(value)
