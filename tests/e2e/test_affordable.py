"""A small cap does not refuse every call without max_tokens: the call is admitted with the
largest output the remaining cap affords, and the provider is told that limit."""

from __future__ import annotations

from decimal import Decimal

import httpx

from aig_common.money import apply_markup, parse_usd
from catalog.estimate import estimate_prompt_tokens
from catalog.models import load_catalog

from .conftest import Sandbox, create_key, usage_rows, wait_until_settled

MODEL = "gpt-4o"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a long story."}],
    "aig": {"fallbacks": False},
}
STARTER_MARKUP_BP = 4000


def _billed_worst_case(output_tokens: int) -> int:
    model = load_catalog().chat(MODEL)
    assert model is not None
    prompt = estimate_prompt_tokens(BODY, tokens_per_image=model.image_input_tokens)
    return apply_markup(model.worst_case_cost_nano_usd(prompt, output_tokens), STARTER_MARKUP_BP)


def test_a_call_without_max_tokens_is_clamped_to_what_the_cap_affords(
    admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    key = create_key(admin, "small-cap")
    cap = "0.05"
    model = load_catalog().chat(MODEL)
    assert model is not None
    assert _billed_worst_case(model.max_output_tokens) > parse_usd(cap)  # would be a 402
    admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": cap}).raise_for_status()
    headers = {"authorization": f"Bearer {key['key']}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        response = http.post("/chat/completions", json=BODY)
        assert response.status_code == 200, response.text
        clamped = int(response.headers["x-aig-max-tokens-clamped"])
        # The most the cap affords, give or take the markup's rounding: one token more
        # would not fit.
        assert _billed_worst_case(clamped) <= parse_usd(cap)
        assert _billed_worst_case(clamped + 2) > parse_usd(cap)
        assert sandbox.last_request("openai")["body"]["max_completion_tokens"] == clamped
        wait_until_settled(base_url, key["key"])
        billed = sum(Decimal(row["billed_cost_usd"]) for row in usage_rows(base_url, key["key"]))
        assert 0 < billed <= Decimal(cap)

        # An explicit max_tokens is the client's choice: too large stays a 402.
        explicit = http.post("/chat/completions", json={**BODY, "max_tokens": 16000})
        assert explicit.status_code == 402
        assert explicit.json()["error"]["code"] == "key_daily_cap"


def test_below_the_floor_the_402_says_what_is_affordable(
    admin: httpx.Client, base_url: str
) -> None:
    key = create_key(admin, "tiny-cap")
    admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": "0.0003"}).raise_for_status()
    response = httpx.post(
        f"{base_url}/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {key['key']}"},
        timeout=30,
    )
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "key_daily_cap"
    assert "can only afford" in error["message"]
