"""What every part of the edge's OpenAPI document says about errors: OpenAI's error object
(also inside Kie's envelope under /v1/jobs) and the documented error statuses of a route."""

from __future__ import annotations

from typing import Any

JSON = "application/json"

# Errors every authenticated /v1 route may answer.
COMMON_STATUSES = (400, 401, 408, 413, 415, 429, 431, 503)

OPENAI_ERROR_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["message", "type", "param", "code"],
    "properties": {
        "message": {"type": "string", "minLength": 1},
        "type": {"type": "string"},
        "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]},
    },
}


def documented_errors(schema: str, description: str, *statuses: int) -> dict[str, Any]:
    """`responses` entries for `statuses`, each a JSON body of components.schemas[schema]."""
    reference = {"$ref": f"#/components/schemas/{schema}"}
    return {
        str(status): {"description": description, "content": {JSON: {"schema": reference}}}
        for status in statuses
    }
