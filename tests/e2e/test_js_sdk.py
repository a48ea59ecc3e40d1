"""The official OpenAI JavaScript SDK (npm `openai`, run with node) against the gateway."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import FAMILY_MODELS

SCRIPT = Path(__file__).parent.parent / "js" / "conformance.mjs"


@pytest.mark.parametrize("model", list(FAMILY_MODELS.values()))
def test_js_sdk_plain_stream_tools(base_url: str, api_key: str, model: str) -> None:
    result = subprocess.run(
        ["node", str(SCRIPT), model],
        env={**os.environ, "AIG_BASE_URL": base_url, "AIG_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["model"] == model
    assert outcome["plain"] and outcome["streamed"]
    assert "18C and sunny" in outcome["tools"]
