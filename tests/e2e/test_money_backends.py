"""Money over HTTP at the edges of the range, on each control DB (the `stack` fixture runs
this module on SQLite and on PostgreSQL): every 402 code, /v1/me, the usage API and the
admin money routes with a zero, a one-nano-USD and a very large balance.

A PostgreSQL sum once came back as a Decimal and turned every `insufficient_credits` into a
500 there while SQLite stayed green; these walk each money path on both.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from aig_common.money import parse_usd, usd

from .conftest import Sandbox, wait_for_usage, wait_until_settled, worst_case_nano_usd

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is my balance?"}],
    "max_tokens": 50,
}
# None: an account created without credits. The large one is past 2**53 nano-USD, where a
# float (or a JSON number read as one) would lose the last digit, and below 2**63.
BALANCES: dict[str, str | None] = {
    "zero": None,
    "tiny": "0.000000001",
    "large": "9000000000.000000001",
}
CAP_CODES = [
    (scope, period) for scope in ("key", "workspace", "account") for period in ("daily", "monthly")
]


def _account_with_key(admin: httpx.Client, credits: str | None) -> tuple[str, str, str, str]:
    """An account (with `credits`), a workspace and a key in it: (account, ws, key id, key)."""
    body = {"name": "range"} | ({"credits_usd": credits} if credits else {})
    account = admin.post("/accounts", json=body)
    assert account.status_code == 201, account.text
    assert account.json()["balance_usd"] == usd(parse_usd(credits or "0"))
    account_id = account.json()["id"]
    workspace = admin.post("/workspaces", json={"account_id": account_id, "name": "w"}).json()
    key = admin.post(
        "/keys", json={"account_id": account_id, "name": "k", "workspace_id": workspace["id"]}
    )
    assert key.status_code == 201, key.text
    return account_id, workspace["id"], key.json()["id"], key.json()["key"]


def _me(base_url: str, api_key: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/me", headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _refused(base_url: str, api_key: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**BODY)
    assert caught.value.status_code == 402, caught.value.body
    assert isinstance(caught.value.body, dict)
    return caught.value.body


@pytest.mark.parametrize("balance", list(BALANCES))
def test_me_and_insufficient_credits(
    admin: httpx.Client, base_url: str, sandbox: Sandbox, balance: str
) -> None:
    credits = BALANCES[balance]
    _, _, _, api_key = _account_with_key(admin, credits)
    me = _me(base_url, api_key)
    assert me["account"]["balance_usd"] == usd(parse_usd(credits or "0"))
    for holder in (me["account"], me["key"], me["workspace"]):
        for period in ("daily", "monthly"):
            assert holder["caps"][period] | {"resets_at": None} == {
                "cap_usd": None,
                "spent_usd": "0.00",
                "reserved_usd": "0.00",
                "resets_at": None,
            }
    assert me["tier"]["rolling_30d_spend_usd"] == "0.00"
    if balance == "large":
        return  # the large balance pays: see test_a_large_balance_pays_exactly
    error = _refused(base_url, api_key)
    assert error["code"] == "insufficient_credits"
    metadata = error["metadata"]
    assert metadata["limit_usd"] == usd(parse_usd(credits or "0"))
    assert (metadata["spent_usd"], metadata["reserved_usd"]) == ("0.00", "0.00")
    assert metadata["requested_usd"] == usd(worst_case_nano_usd(BODY))
    assert metadata["resets_at"] is None
    assert sandbox.requests("openai") == []


@pytest.mark.parametrize("balance", list(BALANCES))
def test_every_cap_code_whatever_the_balance(
    admin: httpx.Client, base_url: str, sandbox: Sandbox, balance: str
) -> None:
    """Caps are checked before the balance: a cap too small for the call names itself even
    when the balance could not pay either."""
    for scope, period in CAP_CODES:
        account_id, workspace_id, key_id, api_key = _account_with_key(admin, BALANCES[balance])
        target = {
            "key": f"/keys/{key_id}",
            "workspace": f"/workspaces/{workspace_id}",
            "account": f"/accounts/{account_id}",
        }[scope]
        patched = admin.patch(target, json={f"{period}_cap_usd": "0.000000001"})
        assert patched.status_code == 200, patched.text
        error = _refused(base_url, api_key)
        assert error["code"] == f"{scope}_{period}_cap"
        assert error["metadata"]["limit_usd"] == "0.000000001"
        assert error["metadata"]["reserved_usd"] == "0.00"
        caps = _me(base_url, api_key)[scope]["caps"][period]
        assert (caps["cap_usd"], caps["spent_usd"]) == ("0.000000001", "0.00")
    assert sandbox.requests("openai") == []


def test_a_large_balance_pays_exactly(admin: httpx.Client, base_url: str) -> None:
    """Balance, spend, usage and the admin routes agree to the nano-USD near 2**63."""
    credits = BALANCES["large"]
    assert credits is not None
    account_id, _, _, api_key = _account_with_key(admin, credits)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    assert client.chat.completions.create(**BODY).choices
    me = wait_until_settled(base_url, api_key)
    rows = wait_for_usage(base_url, api_key, calls=1)
    billed = sum(parse_usd(row["billed_cost_usd"]) for row in rows)
    assert billed > 0
    assert me["account"]["balance_usd"] == usd(parse_usd(credits) - billed)
    for holder in (me["account"], me["key"], me["workspace"]):
        assert holder["caps"]["daily"]["spent_usd"] == usd(billed)
        assert holder["caps"]["monthly"]["spent_usd"] == usd(billed)
    as_operator = admin.get(f"/accounts/{account_id}/usage", params={"start": "2000-01-01"})
    assert as_operator.status_code == 200, as_operator.text
    assert as_operator.json()["data"] == rows
    # The operator's routes: a package purchase with its bonus, a grant and a refund, each
    # answered with the exact new balance.
    balance = parse_usd(credits) - billed
    for body, change in [
        ({"amount_usd": "200.00"}, 224 * 10**9),
        ({"amount_usd": "0.000000001", "kind": "grant"}, 1),
        ({"amount_usd": "200.00", "kind": "refund"}, -200 * 10**9),
    ]:
        answer = admin.post(f"/accounts/{account_id}/credits", json=body)
        assert answer.status_code == 200, answer.text
        balance += change
        assert answer.json()["balance_usd"] == usd(balance)
    assert admin.get(f"/accounts/{account_id}").json()["balance_usd"] == usd(balance)
    assert _me(base_url, api_key)["account"]["balance_usd"] == usd(balance)


def test_amounts_past_what_the_columns_hold_are_refused(admin: httpx.Client) -> None:
    """Balances and caps are BIGINT nano-USD: an amount or a balance past 2**63 - 1 gets a
    400 naming the limit (it was a 500 from the database driver), and changes nothing."""
    too_much = usd(2**63)
    refused = admin.post("/accounts", json={"name": "huge", "credits_usd": too_much})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "credits_usd"
    assert usd(2**63 - 1) in refused.json()["error"]["message"]
    account_id, _, key_id, _ = _account_with_key(admin, BALANCES["large"])
    cap = admin.patch(f"/keys/{key_id}", json={"daily_cap_usd": too_much})
    assert (cap.status_code, cap.json()["error"]["param"]) == (400, "daily_cap_usd")
    overflow = admin.post(f"/accounts/{account_id}/credits", json={"amount_usd": "300000000"})
    assert overflow.status_code == 400, overflow.text
    assert overflow.json()["error"]["param"] == "amount_usd"
    assert admin.get(f"/accounts/{account_id}").json()["balance_usd"] == BALANCES["large"]
