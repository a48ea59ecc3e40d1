"""The OpenAPI description of the media surface (`/v1/jobs/createTask`, `/v1/jobs/recordInfo`,
`/v1/jobs`), merged into the edge's `/openapi.json` (`edge/openapi.py`) and fuzzed from
there like chat (`tests/e2e/test_schema_fuzz.py`).

Every answer is in Kie's envelope (`code`, `msg`, `data`); an error keeps its HTTP status
and carries OpenAI's `error` object beside the envelope (`edge/jobs.py`).
"""

from __future__ import annotations

from typing import Any

from controldb.tasks import MAX_LIST_LIMIT, STATES

from .openapi_errors import COMMON_STATUSES, OPENAI_ERROR_OBJECT, documented_errors

JSON = "application/json"


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {"code": {"const": 200}, "msg": {"const": "success"}, "data": data},
    }


KIE_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "msg", "data", "error"],
    "properties": {
        "code": {"type": "integer", "minimum": 400, "maximum": 599},
        "msg": {"type": "string", "minLength": 1},
        "data": {"type": "null"},
        "error": OPENAI_ERROR_OBJECT,
    },
}

_RECORD: dict[str, Any] = {
    "type": "object",
    "required": [
        "taskId",
        "model",
        "state",
        "param",
        "resultJson",
        "failCode",
        "failMsg",
        "costTime",
        "createTime",
        "updateTime",
        "completeTime",
        "costUsd",
        "callback",
    ],
    "properties": {
        "taskId": {"type": "string", "minLength": 1},
        "model": {"type": "string"},
        "state": {"enum": list(STATES)},
        "param": {"type": "string"},
        "resultJson": {"type": "string"},
        "failCode": {"type": "string"},
        "failMsg": {"type": "string"},
        "costTime": {"type": "integer", "minimum": 0},
        "createTime": {"type": "integer"},
        "updateTime": {"type": "integer"},
        "completeTime": {"type": ["integer", "null"]},
        "costUsd": {"type": "string"},
        "callback": {"type": ["object", "null"]},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return documented_errors(
        "KieError", "An error in Kie's envelope, with OpenAI's `error` object", *statuses
    )


_COMMON = COMMON_STATUSES


def jobs_paths() -> dict[str, Any]:
    return {
        "/v1/jobs/createTask": {
            "post": {
                "summary": "Start an image, video or audio task (Kie's createTask)",
                "operationId": "createTask",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["model", "input"],
                                "properties": {
                                    "model": {"type": "string", "minLength": 1},
                                    "input": {"type": "object"},
                                    "callBackUrl": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The task's id",
                        "content": {
                            JSON: {
                                "schema": _envelope(
                                    {
                                        "type": "object",
                                        "required": ["taskId"],
                                        "properties": {"taskId": {"type": "string"}},
                                    }
                                )
                            }
                        },
                    },
                    **_errors(*_COMMON, 402, 409, 422),
                },
            }
        },
        "/v1/jobs/recordInfo": {
            "get": {
                "summary": "One of the account's tasks (Kie's recordInfo)",
                "operationId": "recordInfo",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "taskId",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The task's record",
                        "content": {JSON: {"schema": _envelope(_RECORD)}},
                    },
                    **_errors(*_COMMON, 404, 422),
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "summary": "The account's tasks, newest first",
                "operationId": "listTasks",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"enum": list(STATES)}},
                    {"name": "model", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "A page of task records",
                        "content": {
                            JSON: {
                                "schema": _envelope(
                                    {
                                        "type": "object",
                                        "required": ["tasks", "hasMore", "nextAfter"],
                                        "properties": {
                                            "tasks": {"type": "array", "items": _RECORD},
                                            "hasMore": {"type": "boolean"},
                                            "nextAfter": {"type": ["string", "null"]},
                                        },
                                    }
                                )
                            }
                        },
                    },
                    **_errors(*_COMMON, 422),
                },
            }
        },
    }
