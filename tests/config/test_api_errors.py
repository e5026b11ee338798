"""Every API failure is a JSON body {"error", "detail", "fields"?}, never HTML, never a 500."""

from __future__ import annotations

import logging

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory, override_settings
from rest_framework.test import APIClient

from config import urls
from registry import api as registry_api
from registry import services
from registry.models import Claim, ConsentEvent, Photo
from tests.factories import CreatorFactory
from tests.images import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    _, raw = services.token_create(creator=CreatorFactory(), name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def test_malformed_json_is_400_json(api: APIClient) -> None:
    response = api.post(
        "/api/v1/me/claims", '{"kind": "domain", "value": ', content_type="application/json"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "parse_error",
        "detail": "JSON parse error - Expecting value: line 1 column 29 (char 28)",
    }
    assert Claim.objects.count() == 0


def test_validation_error_names_the_field(api: APIClient) -> None:
    response = api.post("/api/v1/me/claims", {"kind": "domain"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": "This field is required.",
        "fields": {"value": ["This field is required."]},
    }


def test_unauthenticated_is_401_json_with_www_authenticate() -> None:
    response = APIClient().post("/api/v1/me/claims", {"kind": "domain"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
    }


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token", "Malformed Authorization header: expected 'Token <token>'."),
        ("Token a b", "Malformed Authorization header: expected 'Token <token>'."),
        ("Token opt_unknown", "Invalid or revoked token."),
    ],
)
def test_bad_token_is_401_json(header: str, detail: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/me/photos")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"error": "authentication_failed", "detail": detail}


def test_forbidden_is_403_json() -> None:
    _, raw = services.token_create(creator=CreatorFactory(email_confirmed_at=None), name="t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")

    response = client.get("/api/v1/me/claims")

    assert response.status_code == 403
    assert response.json() == {
        "error": "permission_denied",
        "detail": "A confirmed, active creator account is required.",
    }


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here", "/api/v1/me/photos/", "/api/v2/me/photos", "/api/"]
)
def test_unknown_api_path_is_404_json(path: str) -> None:
    response = APIClient().get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": "Not found."}


@override_settings(DEBUG=True)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/batches/null,null"),
        ("get", "/api/v1/me/photos/not-a-uuid"),
        ("post", "/api/v1/me/opt-outs/null,null/withdraw"),
        ("post", "/api/v2/query/urls"),
    ],
)
def test_unknown_api_path_is_404_json_with_debug_on_too(method: str, path: str) -> None:
    # With DEBUG on, Django answers an unresolved URL with its HTML debug page
    # before handler404 is asked; a POST would meet the HTML CSRF failure page.
    client = APIClient(enforce_csrf_checks=True)

    response = getattr(client, method)(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": "Not found."}


def test_unknown_page_path_is_not_json() -> None:
    response = APIClient().get("/no-such-page-anywhere/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("page_size=null", "page_size", "an integer from 1 to 1000"),
        ("page_size=", "page_size", "an integer from 1 to 1000"),
        ("page_size=0", "page_size", "an integer from 1 to 1000"),
        ("page_size=1001", "page_size", "an integer from 1 to 1000"),
        ("page_size=2&page_size=3", "page_size", "give this parameter once"),
        ("page=x", "page", "a page number: an integer from 1"),
        ("page=0", "page", "a page number: an integer from 1"),
        ("page=last", "page", "a page number: an integer from 1"),
    ],
)
def test_a_bad_page_or_page_size_is_400_naming_it(
    api: APIClient, query: str, field: str, message: str
) -> None:
    # DRF would ignore an unreadable page_size, cap a large one and take the last
    # of two: the client would get another page than it asked for, silently.
    response = api.get(f"/api/v1/me/claims?{query}")

    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": message, "fields": {field: [message]}}


# More digits than int() converts (sys.get_int_max_str_digits: 4300): a ValueError, a 500.
HUGE_NUMBER = "9" * 5000


@pytest.mark.parametrize(
    "path", ["/api/v1/me/claims", "/api/v1/me/photos", "/api/v1/me/consent-events"]
)
def test_a_page_or_page_size_too_long_for_int_is_answered_as_any_other(
    api: APIClient, path: str
) -> None:
    message = "an integer from 1 to 1000"

    huge_size = api.get(f"{path}?page_size={HUGE_NUMBER}")
    huge_page = api.get(f"{path}?page={HUGE_NUMBER}")
    zeros = api.get(f"{path}?page={'0' * 5000}1&page_size={'0' * 5000}7")

    assert huge_size.status_code == 400
    assert huge_size.json() == {
        "error": "invalid",
        "detail": message,
        "fields": {"page_size": [message]},
    }
    # Past the last page, however far: the 404 of ?page=9 with fewer pages.
    assert huge_page.status_code == 404
    assert huge_page.json() == {"error": "not_found", "detail": "Invalid page."}
    assert zeros.status_code == 200
    assert zeros.json()["results"] == []


def test_page_and_page_size_bounds_and_the_400_are_documented(api: APIClient) -> None:
    operation = api.get("/api/schema/?format=json").json()["paths"]["/api/v1/me/claims"]["get"]

    bounds = {p["name"]: p["schema"] for p in operation["parameters"]}

    assert bounds["page"] == {"type": "integer", "minimum": 1}
    assert bounds["page_size"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "400" in operation["responses"]


def test_method_not_allowed_is_405_json(api: APIClient) -> None:
    response = api.put("/api/v1/me/claims", {}, format="json")

    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed", "detail": 'Method "PUT" not allowed.'}


def test_unsupported_media_type_is_415_json(api: APIClient) -> None:
    response = api.post("/api/v1/me/opt-outs", "ai_training", content_type="text/plain")

    assert response.status_code == 415
    assert response.json() == {
        "error": "unsupported_media_type",
        "detail": 'Unsupported media type "text/plain" in request.',
    }


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_json_body_above_the_limit_is_413_json(api: APIClient) -> None:
    hashes = [{"sha256": f"{n:064x}"} for n in range(3)]

    response = api.post("/api/v1/me/photos", {"hashes": hashes}, format="json")

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "Request body is larger than the limit of 100 bytes.",
    }
    assert Photo.objects.count() == 0
    assert ConsentEvent.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_multipart_body_above_the_limit_is_413_json_not_400(api: APIClient) -> None:
    photo = SimpleUploadedFile("a.jpg", jpeg_bytes(4), content_type="image/jpeg")

    response = api.post("/api/v1/me/photos", {"files": [photo]}, format="multipart")

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert Photo.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_NUMBER_FILES=2)
def test_too_many_files_is_413_json(api: APIClient) -> None:
    files = [
        SimpleUploadedFile(f"{n}.jpg", jpeg_bytes(n), content_type="image/jpeg") for n in range(3)
    ]

    response = api.post("/api/v1/me/photos", {"files": files}, format="multipart")

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_many_files",
        "detail": "More than 2 files in one request.",
    }
    assert Photo.objects.count() == 0


def test_broken_multipart_body_is_400_json(api: APIClient) -> None:
    response = api.post(
        "/api/v1/me/photos",
        b"--xyz\r\nContent-Disposition: form-data; name=files\r\n\r\nabc",
        content_type="multipart/form-data",
    )

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert Photo.objects.count() == 0


# --- errors Django answers before or outside an API view -----------------------


def test_a_host_header_not_allowed_is_400_json_on_api_paths_only() -> None:
    # DisallowedHost is raised while Django builds the request, before any view:
    # handler400 answers it (DEBUG is off in tests, as in production).
    api_response = APIClient().get("/api/v1/me/photos", HTTP_HOST="evil.example")
    page_response = Client().get("/me/photos/", HTTP_HOST="evil.example")

    assert api_response.status_code == 400
    assert api_response["Content-Type"] == "application/json"
    assert api_response.json() == {"error": "bad_request", "detail": "Bad request."}
    assert page_response.status_code == 400
    assert not page_response["Content-Type"].startswith("application/json")


def test_an_unexpected_error_in_an_api_view_is_500_json_and_logged(
    api: APIClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: nothing in a healthy registry raises here.
    def broken(self: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(registry_api.PhotoListRegisterView, "get_queryset", broken)
    api.raise_request_exception = False

    with caplog.at_level(logging.ERROR):
        response = api.get("/api/v1/me/photos")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "server_error",
        "detail": "Internal error; it has been logged.",
    }
    assert "disk on fire" not in response.content.decode()
    assert any(
        record.exc_info and "disk on fire" in str(record.exc_info[1]) for record in caplog.records
    )


def test_an_unexpected_error_outside_the_api_views_is_500_json_on_api_paths_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A middleware failing (here the session middleware, by fault injection)
    # reaches Django's handler500, not DRF's exception handler.
    def broken(self: object, request: object) -> None:
        raise RuntimeError("session store on fire")

    monkeypatch.setattr(SessionMiddleware, "process_request", broken)

    api_response = Client(raise_request_exception=False).get("/api/v1/me/photos")
    page_response = Client(raise_request_exception=False).get("/me/photos/")

    assert api_response.status_code == 500
    assert api_response["Content-Type"] == "application/json"
    assert api_response.json() == {
        "error": "server_error",
        "detail": "Internal error; it has been logged.",
    }
    assert page_response.status_code == 500
    assert not page_response["Content-Type"].startswith("application/json")


def test_permission_denied_outside_the_api_views_is_403_json_on_api_paths_only() -> None:
    # No route raises it today (API views answer 403 themselves); the handler
    # is the net for middleware that would.
    api_response = urls.handler403(RequestFactory().get("/api/v1/me/photos"), PermissionDenied())
    page_response = urls.handler403(RequestFactory().get("/me/photos/"), PermissionDenied())

    assert api_response.status_code == 403
    assert api_response["Content-Type"] == "application/json"
    assert api_response.content == (
        b'{"error": "permission_denied", '
        b'"detail": "You do not have permission to perform this action."}'
    )
    assert page_response.status_code == 403
    assert not page_response["Content-Type"].startswith("application/json")
