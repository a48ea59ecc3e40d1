"""The OpenAPI description of `/v1/responses` and its stored-response routes, merged into
the edge's `/openapi.json` (`edge/openapi.py`) and fuzzed from there like chat."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
_ERROR = {
    "description": "An error in OpenAI's shape",
    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
}
# Errors every authenticated /v1 route may answer (as edge/openapi.py's _COMMON).
_COMMON = (400, 401, 408, 413, 415, 429, 431, 503)

_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {
            "type": "string",
            "enum": ["message", "function_call", "function_call_output", "item_reference"],
        },
        "role": {"type": "string", "enum": ["user", "system", "developer", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "call_id": {"type": "string"},
        "name": {"type": "string"},
        "arguments": {"type": "string"},
        "output": {"type": "string"},
        "id": {"type": "string"},
    },
}

_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": _ITEM}]},
        "instructions": {"type": "string"},
        "previous_response_id": {"type": "string"},
        "store": {"type": "boolean"},
        "stream": {"type": "boolean"},
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "name"],
                "properties": {
                    "type": {"const": "function"},
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object"},
                    "strict": {"type": "boolean"},
                },
            },
        },
        "tool_choice": {
            "oneOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {"type": "object"}]
        },
        "parallel_tool_calls": {"type": "boolean"},
        "text": {"type": "object", "properties": {"format": {"type": "object"}}},
        "reasoning": {"type": "object", "properties": {"effort": {"type": "string"}}},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "status", "output", "model"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "status": {"type": "string"},
        "output": {"type": "array"},
        "model": {"type": "string"},
    },
}

_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def responses_paths() -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/v1/responses": {
            "post": {
                "summary": "Create a model response (OpenAI's Responses API: passed through for "
                "OpenAI's models, on the chat path for the others)",
                "operationId": "createResponse",
                "security": security,
                "requestBody": {"required": True, "content": {JSON: {"schema": _REQUEST}}},
                "responses": {
                    "200": {
                        "description": "The response, or its event stream when `stream` is true",
                        "content": {
                            JSON: {"schema": _RESPONSE},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_COMMON, 402, 404, 502, 504),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "A stored response of the key's account",
                "operationId": "retrieveResponse",
                "security": security,
                "parameters": [_RESPONSE_ID],
                "responses": {"200": _ok("The response", _RESPONSE), **_errors(*_COMMON, 404)},
            },
            "delete": {
                "summary": "Delete a stored response of the key's account",
                "operationId": "deleteResponse",
                "security": security,
                "parameters": [_RESPONSE_ID],
                "responses": {
                    "200": _ok(
                        "Deleted",
                        {
                            "type": "object",
                            "required": ["id", "object", "deleted"],
                            "properties": {
                                "id": {"type": "string"},
                                "object": {"const": "response.deleted"},
                                "deleted": {"const": True},
                            },
                        },
                    ),
                    **_errors(*_COMMON, 404),
                },
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "The input items of a stored response",
                "operationId": "listResponseInputItems",
                "security": security,
                "parameters": [
                    _RESPONSE_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _ok(
                        "A page of items",
                        {
                            "type": "object",
                            "required": ["object", "data", "has_more"],
                            "properties": {
                                "object": {"const": "list"},
                                "data": {"type": "array"},
                                "has_more": {"type": "boolean"},
                            },
                        },
                    ),
                    **_errors(*_COMMON, 404),
                },
            }
        },
    }
