"""The OpenAPI description of `/v1/messages` and `/v1/messages/count_tokens`, merged into
the edge's `/openapi.json` (`edge/openapi.py`) and fuzzed from there like chat."""

from __future__ import annotations

from typing import Any

from ..openapi_errors import documented_errors

JSON = "application/json"

ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string", "minLength": 1},
                "code": {"type": ["string", "null"]},
                "metadata": {"type": "object"},
            },
        },
        "request_id": {"type": ["string", "null"]},
    },
}

_BLOCK: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string"},
        "text": {"type": "string"},
        "source": {"type": "object"},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
        "tool_use_id": {"type": "string"},
    },
}

_CONTENT: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "array", "items": _BLOCK}]}

_PROMPT: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "messages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            # `system` turns mid-conversation: Claude Code sends them to models it does not know.
            "properties": {
                "role": {"enum": ["user", "assistant", "system"]},
                "content": _CONTENT,
            },
        },
    },
    "system": _CONTENT,
    "tools": {"type": "array", "items": {"type": "object"}},
    "tool_choice": {"type": "object"},
    "thinking": {"type": "object"},
}

_MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        **_PROMPT,
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "output_config": {"type": "object"},
    },
}

_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": {"type": "string"},
        "content": {"type": "array", "items": _BLOCK},
        "stop_reason": {"type": "string"},
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0},
            },
        },
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return documented_errors("AnthropicError", "An error in Anthropic's shape", *statuses)


# What any authenticated route under /v1/messages may answer (as chat's `_COMMON`).
_COMMON = (400, 401, 404, 408, 413, 415, 429, 431, 503)
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"x-api-key": []}]


def messages_paths() -> dict[str, Any]:
    return {
        "/v1/messages": {
            "post": {
                "summary": (
                    "Create a message (Anthropic's Messages API), for any model: passed "
                    "through to Anthropic as sent for Claude, translated for the others"
                ),
                "operationId": "createMessage",
                "security": _SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _MESSAGES_REQUEST}},
                },
                "responses": {
                    "200": {
                        "description": "A message, or its event stream when `stream` is true",
                        "content": {
                            JSON: {"schema": _MESSAGE},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_COMMON, 402, 500, 502, 504, 529),
                },
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "Estimate a prompt's input tokens (the over-estimate admission uses)",
                "operationId": "countMessageTokens",
                "security": _SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["model", "messages"],
                                "properties": _PROMPT,
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The estimate",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["input_tokens"],
                                    "properties": {
                                        "input_tokens": {"type": "integer", "minimum": 1}
                                    },
                                }
                            }
                        },
                    },
                    **_errors(*_COMMON),
                },
            }
        },
    }


SECURITY_SCHEMES = {
    "x-api-key": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An `sk-aig-` API key, as Anthropic's clients send it",
    }
}
