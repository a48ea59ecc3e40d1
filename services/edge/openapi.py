"""The OpenAPI document of the `/v1` routes that are plain Starlette routes.

FastAPI describes the admin and customer routes it serves itself; the hot-path `/v1` routes
bypass it (see `v1.py`), so their contract is written here and merged into
`/openapi.json`. `tests/e2e/test_schema_fuzz.py` runs schemathesis against the running stack
with this document: a route that answers 5xx, an undocumented status or a body that does
not match is a failing test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from . import jobs_openapi
from .anthropic_ingress import openapi as anthropic_openapi
from .openapi_errors import COMMON_STATUSES, OPENAI_ERROR_OBJECT, documented_errors
from .responses_ingress import openapi as responses_openapi

JSON = "application/json"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": OPENAI_ERROR_OBJECT},
}

_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {
            "type": "string",
            "enum": ["system", "developer", "user", "assistant", "tool", "function"],
        },
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "null"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {"type": "string"},
                            "text": {"type": "string"},
                            "image_url": {
                                "type": "object",
                                "properties": {"url": {"type": "string"}},
                            },
                        },
                    },
                },
            ]
        },
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
}

_CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
        "tools": {"type": "array", "items": {"type": "object"}},
        "response_format": {"type": "object"},
        "aig": {
            "type": "object",
            "description": "aig's own options: `fallbacks` false, true or a list of model ids.",
        },
    },
}

_CHAT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "choices", "model"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "usage": {"type": "object"},
    },
}

_EMBEDDINGS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1},
            ]
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
    },
}

_MODEL: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    return documented_errors("Error", "An error in OpenAI's shape", *statuses)


_COMMON = COMMON_STATUSES


def v1_paths() -> dict[str, Any]:
    chat_ok = {
        "description": "A completion, or its stream when `stream` is true",
        "content": {
            JSON: {"schema": _CHAT_COMPLETION},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "Create a chat completion (OpenAI's Chat Completions API)",
                "operationId": "createChatCompletion",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _CHAT_REQUEST}},
                },
                "responses": {"200": chat_ok, **_errors(*_COMMON, 402, 404, 502, 504)},
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "Create embeddings",
                "operationId": "createEmbeddings",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _EMBEDDINGS_REQUEST}},
                },
                "responses": {
                    "200": {
                        "description": "The embeddings",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["object", "data"],
                                    "properties": {
                                        "object": {"const": "list"},
                                        "data": {"type": "array"},
                                    },
                                }
                            }
                        },
                    },
                    **_errors(*_COMMON, 402, 404, 502, 504),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "List every model id clients may pass",
                "operationId": "listModels",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "The catalog",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["object", "data"],
                                    "properties": {
                                        "object": {"const": "list"},
                                        "data": {"type": "array", "items": _MODEL},
                                    },
                                }
                            }
                        },
                    },
                    **_errors(*_COMMON),
                },
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One model",
                "operationId": "retrieveModel",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "The model", "content": {JSON: {"schema": _MODEL}}},
                    **_errors(*_COMMON, 404),
                },
            }
        },
    }


def install_openapi(app: FastAPI) -> None:
    """`/openapi.json` = FastAPI's own routes + the hand-written `/v1` hot path."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        document.setdefault("paths", {}).update(v1_paths())
        document["paths"].update(anthropic_openapi.messages_paths())
        document["paths"].update(responses_openapi.responses_paths())
        document["paths"].update(jobs_openapi.jobs_paths())
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        components["schemas"]["AnthropicError"] = anthropic_openapi.ANTHROPIC_ERROR_SCHEMA
        components["schemas"]["KieError"] = jobs_openapi.KIE_ERROR_SCHEMA
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An `sk-aig-` API key",
        }
        components["securitySchemes"].update(anthropic_openapi.SECURITY_SCHEMES)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
