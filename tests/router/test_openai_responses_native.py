"""A /v1/responses call passed through to OpenAI's Responses API (the `openai` type's
native request): what is sent, the usage read back, stream events, errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from catalog.models import Catalog, load_catalog
from router.adapters.base import UpstreamError
from router.providers import OPENAI_RESPONSES, ProviderRegistry
from router.providers.base import ANTHROPIC_MESSAGES, ChatCall, NativeCall
from router.requests import Target

SANDBOX = "http://127.0.0.1:9999"
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
}
NATIVE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "input": [{"type": "message", "role": "user", "content": "hi"}],
    "instructions": "Be brief.",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "text": {"format": {"type": "json_object"}},
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "max_output_tokens": 10_000_000,
    "aig": {"fallbacks": ["x"]},
}
USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 64},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 32},
    "total_tokens": 170,
}


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog()


def _call(catalog: Catalog, provider: str, body: dict[str, Any], *, stream: bool) -> Any:
    registry = ProviderRegistry.from_catalog(catalog, {}, SANDBOX)
    model = catalog.chat("gpt-4o-mini")
    assert model is not None
    route = dataclasses.replace(model.route, provider=provider, upstream_id="gpt-4o-mini-2024")
    call = ChatCall(
        Target(route, model, model.id),
        CHAT_BODY,
        stream,
        native=NativeCall(OPENAI_RESPONSES, body),
    )
    chosen = registry.get(provider)
    return chosen.type.native_request(chosen.instance, call), model


def test_the_client_body_goes_to_responses_with_the_route_model_and_capped_output(
    shipped: Catalog,
) -> None:
    request, model = _call(shipped, "openai", NATIVE, stream=False)
    assert request is not None and request.native
    assert request.path == "/responses"
    sent = orjson.loads(request.content)
    assert sent["model"] == "gpt-4o-mini-2024"
    assert sent["max_output_tokens"] == model.max_output_tokens
    assert "aig" not in sent and "stream" not in sent
    for kept in ("input", "instructions", "tools", "text", "include", "store"):
        assert sent[kept] == NATIVE[kept]

    smaller = {**NATIVE, "max_output_tokens": 100}
    request, _ = _call(shipped, "openai", smaller, stream=True)
    sent = orjson.loads(request.content)
    assert sent["max_output_tokens"] == 100 and sent["stream"] is True
    unset = {key: value for key, value in NATIVE.items() if key != "max_output_tokens"}
    request, model = _call(shipped, "openai", unset, stream=False)
    assert orjson.loads(request.content)["max_output_tokens"] == model.max_output_tokens


def test_other_types_and_dialects_are_translated(shipped: Catalog) -> None:
    assert _call(shipped, "openrouter", NATIVE, stream=False)[0] is None
    registry = ProviderRegistry.from_catalog(shipped, {}, SANDBOX)
    model = shipped.chat("gpt-4o-mini")
    assert model is not None
    openai = registry.get("openai")
    call = ChatCall(
        Target(model.route, model, model.id),
        CHAT_BODY,
        False,
        native=NativeCall(ANTHROPIC_MESSAGES, {"model": "x", "messages": []}),
    )
    assert openai.type.native_request(openai.instance, call) is None
    plain = ChatCall(Target(model.route, model, model.id), CHAT_BODY, False)
    assert openai.type.native_request(openai.instance, plain) is None


def test_usage_is_read_from_the_response(shipped: Catalog) -> None:
    request, _ = _call(shipped, "openai", NATIVE, stream=False)
    answer = {"id": "resp_1", "object": "response", "output": [], "usage": USAGE}
    completion, usage = request.parse_completion(answer)
    assert completion == answer
    assert (usage.prompt_tokens, usage.cached_prompt_tokens) == (120, 64)
    assert (usage.completion_tokens, usage.reasoning_tokens) == (50, 32)


def _event(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


def test_stream_events_pass_as_they_are_and_the_end_carries_usage(shipped: Catalog) -> None:
    request, _ = _call(shipped, "openai", NATIVE, stream=True)
    created = _event("response.created", response={"id": "resp_1", "usage": None})
    assert request.translate_event("response.created", created) == [orjson.loads(created)]
    assert request.usage() is None and not request.is_done()
    text = _event("response.output_text.delta", item_id="msg_1", output_index=1, delta="Hi")
    [chunk] = request.translate_event(None, text)
    assert request.output_pieces(chunk) == [((1, -1), "Hi")]
    args = _event("response.function_call_arguments.delta", output_index=2, delta='{"a"')
    [chunk] = request.translate_event(None, args)
    assert request.output_pieces(chunk) == [((2, 0), '{"a"')]
    assert request.output_pieces(orjson.loads(created)) == []
    done = _event("response.completed", response={"id": "resp_1", "usage": USAGE})
    assert request.translate_event("response.completed", done)[0]["type"] == "response.completed"
    assert request.is_done()
    usage = request.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (120, 50)


def test_incomplete_ends_the_stream_too(shipped: Catalog) -> None:
    request, _ = _call(shipped, "openai", NATIVE, stream=True)
    ended = _event("response.incomplete", response={"usage": USAGE, "status": "incomplete"})
    request.translate_event(None, ended)
    assert request.is_done() and request.usage() is not None


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (
            _event("error", code="rate_limit_exceeded", message="slow down"),
            429,
            "rate_limit_exceeded",
        ),
        (_event("error", code="server_error", message="oops"), 500, "server_error"),
        (
            _event(
                "response.failed",
                response={"usage": USAGE, "error": {"code": "bad_thing", "message": "failed"}},
            ),
            502,
            "bad_thing",
        ),
    ],
)
def test_stream_failures_become_upstream_errors(
    shipped: Catalog, event: str, status: int, code: str
) -> None:
    request, _ = _call(shipped, "openai", NATIVE, stream=True)
    with pytest.raises(UpstreamError) as raised:
        request.translate_event(None, event)
    assert raised.value.status == status
    assert raised.value.body["error"]["code"] == code
    assert not request.is_done()


def test_errors_before_the_stream_keep_openais_shape(shipped: Catalog) -> None:
    request, _ = _call(shipped, "openai", NATIVE, stream=False)
    body = orjson.dumps({"error": {"message": "no", "type": "invalid_request_error", "code": "x"}})
    error = request.error_from_response(400, body, {})
    assert error.status == 400 and error.body["error"]["message"] == "no"


def test_only_a_row_that_says_so_is_sent_responses(shipped: Catalog) -> None:
    """Most OpenAI-compatible servers (vLLM, Groq, Ollama...) have chat only: a row of type
    `openai` passes /v1/responses through only with `responses_api: true`."""
    rows = tuple(
        dataclasses.replace(row, responses_api=False) if row.name == "openai" else row
        for row in shipped.providers
    )
    chat_only = dataclasses.replace(shipped, providers=rows)
    assert _call(chat_only, "openai", NATIVE, stream=False)[0] is None
    assert _call(shipped, "openai", NATIVE, stream=False)[0] is not None
