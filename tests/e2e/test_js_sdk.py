"""The official OpenAI JavaScript SDK (npm `openai`, run with node) against the gateway."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAMILY_MODELS

SCRIPTS = Path(__file__).parent.parent / "js"
# /v1/responses serves every family the same way (translated onto chat): one of each.
RESPONSES_MODELS = [FAMILY_MODELS[family] for family in ("openai", "anthropic", "google")]


def _run_node(script: str, base_url: str, api_key: str, *args: str) -> Any:
    """Runs a script under tests/js and returns the JSON its last output line holds."""
    result = subprocess.run(
        ["node", str(SCRIPTS / script), *args],
        env={**os.environ, "AIG_BASE_URL": base_url, "AIG_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", list(FAMILY_MODELS.values()))
def test_js_sdk_plain_stream_tools(base_url: str, api_key: str, model: str) -> None:
    outcome = _run_node("conformance.mjs", base_url, api_key, model)
    assert outcome["model"] == model
    assert outcome["plain"] and outcome["streamed"]
    assert "18C and sunny" in outcome["tools"]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_js_sdk_responses_stream(base_url: str, api_key: str) -> None:
    """`responses.stream` (and a stored tool round trip) on one model of each family."""
    outcome = _run_node("responses.mjs", base_url, api_key, *RESPONSES_MODELS)
    assert sorted(outcome) == sorted(RESPONSES_MODELS)
    for model in RESPONSES_MODELS:
        assert outcome[model]["text"].startswith('Sandbox answer to "Stream to JavaScript"')
        assert outcome[model]["deltas"] > 1
        assert "18C and sunny" in outcome[model]["tool_answer"]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_vercel_ai_sdk_openai_provider(base_url: str, api_key: str) -> None:
    """The AI SDK's `openai(id)` provider (Responses API): generateText, streamText and a
    two-step tool loop, whose second step refers to stored output by `item_reference`."""
    outcome = _run_node("vercel_ai.mjs", base_url, api_key, *RESPONSES_MODELS)
    for model in RESPONSES_MODELS:
        assert outcome[model]["plain"].startswith('Sandbox answer to "Say hello to the AI SDK"')
        assert outcome[model]["streamed"].startswith('Sandbox answer to "Stream to the AI SDK"')
        assert "18C and sunny in" in outcome[model]["tool_answer"]
