"""Bad input gets a clear OpenAI-shaped 4xx, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Sandbox

HELLO = [{"role": "user", "content": "hello"}]


def _post(edge: httpx.Client, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    if isinstance(body, bytes):
        return edge.post(path, content=body, headers={"content-type": "application/json"})
    return edge.post(path, json=body)


def _assert_error(
    response: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    return dict(error)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[1, 2]", b'"just a string"', b'{"model": "gpt-4o-mini", "messages": [}'],
)
def test_malformed_json(edge: httpx.Client, raw: bytes) -> None:
    error = _assert_error(_post(edge, raw), 400)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": 42, "messages": HELLO}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": {"role": "user"}}, "messages"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        ({"model": "gpt-4o-mini", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": -5}, "max_tokens"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"model": "gpt-4o-mini", "messages": HELLO, "tools": [{"type": "function"}]},
            "tools[0].function",
        ),
        ({"model": "gpt-4o-mini", "messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"model": "gpt-4o-mini", "messages": HELLO, "response_format": {"type": "yaml"}},
            "response_format.type",
        ),
        (
            {"model": "gpt-4o-mini", "messages": HELLO, "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ],
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_wrong_types_and_values(edge: httpx.Client, body: dict[str, Any], param: str) -> None:
    _assert_error(_post(edge, body), 400, param)


def test_empty_messages(edge: httpx.Client) -> None:
    error = _assert_error(_post(edge, {"model": "gpt-4o-mini", "messages": []}), 400, "messages")
    assert error["code"] == "empty_array"


def test_oversized_body_is_413(edge: httpx.Client) -> None:
    huge = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * (17 * 1024 * 1024)
        + b'"}]}'
    )
    response = _post(edge, huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_fields_are_passed_through(edge: httpx.Client, sandbox: Sandbox) -> None:
    response = _post(
        edge,
        {"model": "gpt-4o-mini", "messages": HELLO, "vendor_extension": {"x": 1}, "seed": 7},
    )
    assert response.status_code == 200, response.text
    upstream = sandbox.last_request("openai")["body"]
    assert upstream["vendor_extension"] == {"x": 1}
    assert upstream["seed"] == 7


def test_embeddings_bad_input(edge: httpx.Client) -> None:
    _assert_error(_post(edge, {"model": "text-embedding-3-small"}, "/v1/embeddings"), 400, "input")
    _assert_error(
        _post(edge, {"model": "text-embedding-3-small", "input": 5}, "/v1/embeddings"), 400, "input"
    )
    _assert_error(
        _post(
            edge,
            {"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"},
            "/v1/embeddings",
        ),
        400,
        "encoding_format",
    )


def test_unknown_route_and_method(edge: httpx.Client) -> None:
    response = edge.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["message"]
    response = edge.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("role", [[], {}, [None], {"nested": {"x": 1}}, 5, None])
def test_a_role_of_any_json_type_is_a_400_never_a_500(edge: httpx.Client, role: Any) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": role, "content": "x"}]}
    error = _assert_error(_post(edge, body), 400, "messages[0].role")
    assert error["code"] in ("invalid_type", "missing_required_parameter")


@pytest.mark.parametrize("name", [5, [], {"a": 1}, True])
def test_a_message_name_must_be_a_string(edge: httpx.Client, name: Any) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x", "name": name}]}
    error = _assert_error(_post(edge, body), 400, "messages[0].name")
    assert error["code"] == "invalid_type"


def test_tool_call_id_belongs_only_to_tool_messages(edge: httpx.Client) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x", "tool_call_id": "call_1"}],
    }
    error = _assert_error(_post(edge, body), 400, "messages[0].tool_call_id")
    assert error["code"] == "unknown_parameter"


def test_an_empty_model_id_says_it_is_empty(edge: httpx.Client) -> None:
    error = _assert_error(_post(edge, {"model": "", "messages": HELLO}), 400, "model")
    assert "empty" in error["message"]
    assert "but got a string" not in error["message"]
    error = _assert_error(_post(edge, {"model": 7, "messages": HELLO}), 400, "model")
    assert error["code"] == "invalid_type"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_declared_json_is_415(edge: httpx.Client, content_type: str) -> None:
    raw = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    response = edge.post(
        "/v1/chat/completions", content=raw, headers={"content-type": content_type}
    )
    error = _assert_error(response, 415)
    assert error["code"] == "unsupported_media_type"
    # JSON with parameters and the +json suffix are JSON.
    for declared in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = edge.post(
            "/v1/chat/completions", content=raw, headers={"content-type": declared}
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("/v1/jobs?after=task_%00&state=queuing", "kie"),
        ("/v1/jobs/recordInfo?taskId=%00", "kie"),
        ("/v1/responses/resp_%00abc", "openai"),
        ("/v1/models/gpt-4o%00", "openai"),
    ],
)
def test_a_nul_in_the_url_is_a_400_in_the_routes_dialect(
    edge: httpx.Client, url: str, dialect: str
) -> None:
    """PostgreSQL's text cannot hold a NUL: a lookup by such an id was a 500 there (the schema
    fuzz found it on GET /v1/jobs?after=…)."""
    response = edge.get(url)
    error = _assert_error(response, 400)
    assert error["code"] == "invalid_url"
    if dialect == "kie":
        assert (response.json()["code"], response.json()["data"]) == (400, None)


def test_a_previous_response_id_with_a_nul_is_not_found(edge: httpx.Client) -> None:
    response = _post(
        edge,
        {"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_\u0000x"},
        "/v1/responses",
    )
    _assert_error(response, 404, "previous_response_id")


def test_a_nul_in_an_operators_text_is_a_400_naming_the_field(admin: httpx.Client) -> None:
    """Names and notes go into text columns; PostgreSQL refused a NUL with a 500, SQLite
    stored it. Both backends now refuse it up front, naming the field."""
    account = admin.post("/accounts", json={"name": "nul-owner", "credits_usd": "0"})
    assert account.status_code == 201, account.text
    account_id = account.json()["id"]
    attempts = {
        "name": admin.post("/accounts", json={"name": "a\u0000b"}),
        "note": admin.post(
            f"/accounts/{account_id}/credits",
            json={"amount_usd": "1.00", "kind": "grant", "note": "x\u0000y"},
        ),
        "workspace name": admin.post(
            "/workspaces", json={"account_id": account_id, "name": "w\u0000"}
        ),
    }
    for field, response in attempts.items():
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["param"] == field.split()[-1]
    balance = admin.get(f"/accounts/{account_id}").json()["balance_usd"]
    assert balance == "0.00"  # the refused grant added nothing
