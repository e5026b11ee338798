"""OpenAPI post-processing for the pipeline API (drf-spectacular hook).

Membership privacy: a pipeline response carries exactly the fields its schema
names and nothing else. Every object schema reachable from a response of a
pipeline operation (every path outside the creator API under /api/v1/me/) is
closed with ``additionalProperties: false``, so a client, Schemathesis'
response check and tests/optout/test_pipeline_api.py all refuse a response
that grew a field (a creator id, an email) the schema does not list.
"""

from __future__ import annotations

from typing import Any

CREATOR_API_PREFIX = "/api/v1/me/"
_COMPONENT_REF = "#/components/schemas/"


def pipeline_response_schemas_close(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    components: dict[str, Any] = result.get("components", {}).get("schemas", {})
    seen: set[str] = set()

    def close(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                close(item)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMPONENT_REF):
            name = ref.removeprefix(_COMPONENT_REF)
            if name not in seen and name in components:
                seen.add(name)
                close(components[name])
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            close(value)

    for path, operations in result.get("paths", {}).items():
        if path.startswith(CREATOR_API_PREFIX):
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                for response in operation.get("responses", {}).values():
                    close(response.get("content", {}))
    return result
