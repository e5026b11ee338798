"""A friendly 413 page for uploads beyond the request size cap.

Django parses a form post the first time something reads ``request.POST``
(the CSRF check does, before any view runs), and an oversized post either
raises RequestDataTooBig there, which Django turns into a bare 400, or, for
file uploads past FILE_UPLOAD_MAX_MEMORY_SIZE, silently drops the files (the
in-memory handler is the only one, so nothing would ever reach the disk). This
middleware parses page posts itself first and answers both cases with a page
that says what happened. API paths keep their JSON error handling.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class UploadTooLargeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and not request.path.startswith("/api/"):
            reason = ""
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                # Parsing here also drains the body, so the browser reads this
                # page instead of seeing its upload cut off.
                request.POST  # noqa: B018
            except RequestDataTooBig:
                reason = "size"
            except (TooManyFilesSent, TooManyFieldsSent):
                reason = "count"
            if not reason and limit is not None and _content_length(request) > limit:
                reason = "size"
            if reason:
                context = {
                    "reason": reason,
                    "max_upload_bytes": limit,
                    "max_files": settings.DATA_UPLOAD_MAX_NUMBER_FILES,
                }
                return render(request, "413.html", context, status=413)
        return self.get_response(request)
