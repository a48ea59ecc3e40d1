"""A client's own Messages request passed through to Anthropic (router.proto NativeBody):
what is sent, what comes back, and what it is billed for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from catalog.models import ChatModel, load_catalog
from router.adapters.base import TokenUsage, UpstreamError
from router.providers import ANTHROPIC_MESSAGES, OPENAI_RESPONSES, PROVIDER_TYPES, ChatCall
from router.providers.base import NativeCall, ProviderInstance
from router.requests import Target

CATALOG = load_catalog()


def _sonnet() -> ChatModel:
    model = CATALOG.chat("claude-sonnet-4-5")
    assert model is not None
    return model


SONNET = _sonnet()
TARGET = Target(route=SONNET.route, model=SONNET, public_id=SONNET.id)
INSTANCE = ProviderInstance(
    name="anthropic",
    type="anthropic",
    base_url="http://127.0.0.1:1",
    api_key="k",
    headers=(),
    timeout_s=None,
    api_version=None,
    responses_api=False,
    sandboxed=True,
)
CLIENT_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1_000_000,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}],
    "aig": {"fallbacks": False},
}


def _request(stream: bool, dialect: str = ANTHROPIC_MESSAGES, **headers: str) -> Any:
    native = NativeCall(dialect, dict(CLIENT_BODY), headers)
    call = ChatCall(TARGET, {}, stream, native=native)
    return PROVIDER_TYPES["anthropic"].native_request(INSTANCE, call)


def test_the_clients_body_goes_upstream_with_only_model_and_output_cap_changed() -> None:
    request = _request(stream=True)
    assert request.native and request.path == "/v1/messages"
    sent = orjson.loads(request.content)
    expected = {k: v for k, v in CLIENT_BODY.items() if k != "aig"}
    expected.update(model=SONNET.upstream_id, max_tokens=SONNET.max_output_tokens, stream=True)
    assert sent == expected


def test_the_clients_beta_features_go_along_and_nothing_else() -> None:
    assert _request(stream=False).headers is None
    passed = _request(stream=False, **{"anthropic-beta": "context-1m-2025-08-07"}).headers
    assert passed == {"anthropic-beta": "context-1m-2025-08-07"}


def test_another_dialect_is_translated_not_passed_through() -> None:
    assert _request(stream=False, dialect=OPENAI_RESPONSES) is None


def test_an_answer_comes_back_as_made_with_the_public_model_and_its_usage() -> None:
    request = _request(stream=False)
    answer = {
        "id": "msg_1",
        "type": "message",
        "model": SONNET.upstream_id,
        "content": [{"type": "thinking", "thinking": "t", "signature": "s"}],
        "usage": {
            "input_tokens": 5,
            "output_tokens": 9,
            "cache_creation_input_tokens": 40,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40},
            "cache_read_input_tokens": 0,
        },
    }
    passed, usage = request.parse_completion(answer)
    assert passed["content"] == answer["content"] and passed["model"] == SONNET.id
    assert usage == TokenUsage(
        prompt_tokens=45, completion_tokens=9, cache_write_1h_prompt_tokens=40
    )


def _event(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


def test_stream_events_pass_through_and_are_read_for_usage_and_output() -> None:
    request = _request(stream=True)
    start = {
        "id": "msg_1",
        "model": SONNET.upstream_id,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    [first] = request.translate_event("message_start", _event("message_start", message=start))
    assert first["message"]["model"] == SONNET.id
    delta = {"type": "thinking_delta", "thinking": "hmm"}
    [passed] = request.translate_event(None, _event("content_block_delta", index=0, delta=delta))
    assert passed == {"type": "content_block_delta", "index": 0, "delta": delta}
    assert request.output_pieces(passed) == [((0, 0), "hmm")]
    text = {"type": "text_delta", "text": "Hi"}
    assert request.output_pieces({"type": "content_block_delta", "index": 1, "delta": text}) == [
        ((0, 1), "Hi")
    ]
    assert not request.is_done()
    request.translate_event(
        "message_delta", _event("message_delta", delta={}, usage={"output_tokens": 30})
    )
    request.translate_event("message_stop", _event("message_stop"))
    assert request.is_done()
    assert request.usage() == TokenUsage(prompt_tokens=12, completion_tokens=30)


def test_an_error_event_fails_the_stream() -> None:
    request = _request(stream=True)
    overloaded = _event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    with pytest.raises(UpstreamError) as failed:
        request.translate_event("error", overloaded)
    assert failed.value.upstream_status == 529
