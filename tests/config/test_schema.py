"""The OpenAPI schema generates without warnings and documents the creator API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient


def test_schema_validates_without_warnings_and_documents_the_creator_api(
    tmp_path: Path,
) -> None:
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    schema = yaml.safe_load(target.read_text())
    paths = schema["paths"]
    assert {
        "/api/v1/me/photos": {"get", "post"},
        "/api/v1/me/photos/{id}": {"get"},
        "/api/v1/me/claims": {"get", "post"},
        "/api/v1/me/opt-outs": {"get", "post"},
        "/api/v1/me/opt-outs/{id}": {"get"},
        "/api/v1/me/opt-outs/{id}/withdraw": {"post"},
        "/api/v1/me/consent-events": {"get"},
    }.items() <= {
        path: set(operations) - {"parameters"} for path, operations in paths.items()
    }.items()
    photos_post = paths["/api/v1/me/photos"]["post"]
    assert set(photos_post["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert set(photos_post["responses"]) == {"200", "201", "400", "401", "403", "413", "415"}
    assert photos_post["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert set(paths["/api/v1/me/opt-outs/{id}/withdraw"]["post"]["responses"]) == {
        "200",
        "401",
        "403",
        "404",
    }
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {
        "error",
        "detail",
        "fields",
    }
    assert schema["components"]["securitySchemes"]["personalToken"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Token-based authentication with required prefix "Token"',
    }


def test_every_creator_api_operation_documents_auth_errors(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(target))

    schema = yaml.safe_load(target.read_text())

    creator_operations = [
        operation
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/me/")
        for method, operation in operations.items()
        if method != "parameters"
    ]
    assert len(creator_operations) == 11
    assert all({"401", "403"} <= set(op["responses"]) for op in creator_operations)
    change = schema["paths"]["/api/v1/me/opt-outs/{id}/change"]["post"]
    assert {"200", "201", "400", "404"} <= set(change["responses"])
    assert change["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OptOutFileRequest"
    }
    assert {"replaces", "replaced_by"} <= set(
        schema["components"]["schemas"]["OptOut"]["properties"]
    )


@pytest.mark.django_db
def test_schema_and_docs_are_served() -> None:
    client = APIClient()

    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/v1/me/opt-outs/{id}/withdraw" in schema.content
    assert docs.status_code == 200
    assert docs["Content-Type"].startswith("text/html")
    assert b"swagger-ui" in docs.content
    # Served from our own static files (drf-spectacular-sidecar), not a CDN.
    assert b"cdn.jsdelivr.net" not in docs.content
