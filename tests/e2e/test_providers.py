"""Providers and models as data: instances added by a catalog row, aliases, hot reload."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from openai.types.chat import ChatCompletionMessageParam

from devstack.stack import Stack

from .conftest import (
    AZURE_API_VERSION,
    AZURE_DEPLOYMENT,
    AZURE_MODEL,
    AZURE_PROVIDER,
    LOCAL_MODEL,
    LOCAL_PROVIDER,
    LOCAL_UPSTREAM_ID,
    Sandbox,
    create_key,
    wait_for_usage,
)

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def _chat(client: openai.OpenAI, model: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=HELLO, **extra)


def test_an_openai_type_row_under_a_new_name_serves_its_model(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    raw = _chat(client, LOCAL_MODEL)
    assert raw.headers["x-aig-provider"] == LOCAL_PROVIDER
    completion = raw.parse()
    assert completion.model == LOCAL_MODEL and completion.choices[0].message.content
    upstream = sandbox.last_request("openai")
    assert upstream["path"] == "/openai/v1/chat/completions"
    assert upstream["body"]["model"] == LOCAL_UPSTREAM_ID

    with client.chat.completions.with_streaming_response.create(
        model=LOCAL_MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["x-aig-provider"] == LOCAL_PROVIDER
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].model == LOCAL_MODEL
    assert sandbox.last_request("openai")["body"]["stream"] is True


def test_azure_row_calls_the_deployment_url_with_api_key_and_version(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    raw = _chat(client, AZURE_MODEL)
    assert raw.headers["x-aig-provider"] == AZURE_PROVIDER
    assert raw.parse().model == AZURE_MODEL
    upstream = sandbox.last_request("azure")
    assert upstream["path"] == f"/azure/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    assert upstream["query"] == f"api-version={AZURE_API_VERSION}"
    assert upstream["headers"]["api-key"] == "[redacted]"
    assert "authorization" not in upstream["headers"]
    stream = client.chat.completions.create(model=AZURE_MODEL, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_aliases_answer_bill_and_report_as_the_canonical_model(
    admin: httpx.Client, base_url: str
) -> None:
    key = create_key(admin, "aliases")["key"]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    for alias, canonical, provider in (
        ("gemini-3-pro", "gemini-3-pro-preview", "google"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "anthropic"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5", "anthropic"),
    ):
        raw = _chat(client, alias)
        assert raw.headers["x-aig-model"] == canonical
        assert raw.headers["x-aig-provider"] == provider
        assert raw.parse().model == canonical
    listed = {model.id: model for model in client.models.list()}
    assert {"gemini-3-pro", "claude-sonnet-4-5-20250929", "deepseek-v3"} <= set(listed)
    details = listed["gemini-3-pro"].model_extra["aig"]  # type: ignore[index]
    assert details["canonical_id"] == "gemini-3-pro-preview"
    assert details["pricing"]["input_usd_per_million_tokens"] == "2"
    rows = wait_for_usage(base_url, key, calls=3)
    assert {row["model"] for row in rows} == {"gemini-3-pro-preview", "claude-sonnet-4-5"}


def _wait_for_model(client: openai.OpenAI, model_id: str, present: bool) -> None:
    deadline = time.monotonic() + 20
    while (model_id in {m.id for m in client.models.list()}) != present:
        assert time.monotonic() < deadline, f"{model_id} present={not present} after 20 s"
        time.sleep(0.2)


def test_catalog_edits_take_effect_and_a_bad_file_is_refused(
    stack: Stack, client: openai.OpenAI
) -> None:
    path = Path(stack.env["AIG_CATALOG_PATH"])
    original = path.read_text()
    document = yaml.safe_load(original)
    mini = next(e for e in document["chat_models"] if e["id"] == "gpt-4o-mini")
    mini["aliases"] = ["reloaded-mini"]
    try:
        path.write_text(yaml.safe_dump(document))
        _wait_for_model(client, "reloaded-mini", present=True)
        # The edge (admission) took it too, or this call would be a 404 there.
        assert _chat(client, "reloaded-mini").parse().model == "gpt-4o-mini"

        mini["output_nano_usd_per_token"] = -1
        log = stack.var_dir / "logs" / "router.log"
        # Only what the router logs from now on: a poll that caught an earlier write half
        # done may have logged a refusal of its own.
        seen = len(log.read_text())
        path.write_text(yaml.safe_dump(document))
        deadline = time.monotonic() + 20
        reason = "'output_nano_usd_per_token' must be an integer >= 0"
        while reason not in log.read_text()[seen:]:
            assert time.monotonic() < deadline, "the router never reported the bad catalog"
            time.sleep(0.2)
        assert "catalog reload refused" in log.read_text()[seen:]
        # The previous catalog keeps serving.
        assert _chat(client, "reloaded-mini").parse().model == "gpt-4o-mini"
    finally:
        path.write_text(original)
    _wait_for_model(client, "reloaded-mini", present=False)
