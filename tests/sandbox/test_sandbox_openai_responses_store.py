# mypy: disable-error-code="list-item,index"
"""The Responses simulator keeps nothing, as OpenAI with `store: false`: reasoning must
come back with its `encrypted_content`, or the call is OpenAI's 404. Driven by the SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest


@pytest.fixture
def client(sandbox_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="sk-test-secret", base_url=sandbox_url + "/openai/v1", max_retries=0
    ) as sdk:
        yield sdk


def test_reasoning_continues_only_from_its_encrypted_content(client: openai.OpenAI) -> None:
    plain = client.responses.create(
        model="o4-mini", input="think", reasoning={"effort": "low"}, store=False
    )
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.create(
            model="o4-mini",
            input=[
                *(item.model_dump() for item in plain.output),
                {"role": "user", "content": "Go"},
            ],
            store=False,
        )
    assert refused.value.body["param"] == "input"
    assert "not persisted when `store` is set to false" in refused.value.message

    encrypted = client.responses.create(
        model="o4-mini",
        input="think",
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
        store=False,
    )
    reasoning = encrypted.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    follow = client.responses.create(
        model="o4-mini",
        input=[
            *(item.model_dump(exclude_none=True) for item in encrypted.output),
            {"role": "user", "content": "Go on"},
        ],
        store=False,
    )
    assert follow.output_text.startswith('Sandbox answer to "Go on"')
    # With `store` on, OpenAI would find the item: the simulator does not refuse it.
    kept = client.responses.create(
        model="o4-mini",
        input=[*(item.model_dump() for item in plain.output), {"role": "user", "content": "Go"}],
    )
    assert kept.status == "completed"
