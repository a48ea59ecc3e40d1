"""The operator's money routes over HTTP: credits, refunds, caps, workspaces."""

from __future__ import annotations

import httpx

from .conftest import create_key


def test_purchase_bonus_and_refund_rules(admin: httpx.Client) -> None:
    account = admin.post("/accounts", json={"name": "buyer"}).json()
    assert account["balance_usd"] == "0.00"
    bought = admin.post(f"/accounts/{account['id']}/credits", json={"amount_usd": "50.00"})
    assert bought.status_code == 200, bought.text
    assert [e["kind"] for e in bought.json()["entries"]] == ["purchase", "bonus"]
    assert bought.json()["balance_usd"] == "54.00"
    granted = admin.post(
        f"/accounts/{account['id']}/credits", json={"amount_usd": "10", "kind": "grant"}
    )
    assert granted.json()["balance_usd"] == "64.00"
    too_much = admin.post(
        f"/accounts/{account['id']}/credits", json={"amount_usd": "50.01", "kind": "refund"}
    )
    assert too_much.status_code == 400
    assert too_much.json()["error"]["code"] == "refund_not_allowed"
    refund = admin.post(
        f"/accounts/{account['id']}/credits", json={"amount_usd": "20.00", "kind": "refund"}
    )
    assert refund.json()["balance_usd"] == "44.00"
    assert admin.get(f"/accounts/{account['id']}").json()["balance_usd"] == "44.00"


def test_money_inputs_are_validated(admin: httpx.Client) -> None:
    account = admin.post("/accounts", json={"name": "strict"}).json()
    route = f"/accounts/{account['id']}/credits"
    for body, param in [
        ({"amount_usd": 5.5}, "amount_usd"),
        ({"amount_usd": "1.0000000001"}, "amount_usd"),
        ({"amount_usd": "-3"}, "amount_usd"),
        ({"amount_usd": "5", "kind": "gift"}, "kind"),
        ({}, "amount_usd"),
    ]:
        response = admin.post(route, json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
    assert admin.post("/accounts/acct_nope/credits", json={"amount_usd": "1"}).status_code == 404
    assert admin.patch("/keys/key_nope", json={"daily_cap_usd": "1"}).status_code == 404


def test_caps_and_workspaces_round_trip(admin: httpx.Client) -> None:
    key = create_key(admin, "caps")
    workspace = admin.post(
        "/workspaces",
        json={"account_id": key["account_id"], "name": "team", "monthly_cap_usd": "12.5"},
    )
    assert workspace.status_code == 201
    assert workspace.json()["monthly_cap_usd"] == "12.50"
    patched = admin.patch(f"/workspaces/{workspace.json()['id']}", json={"daily_cap_usd": "2"})
    assert (patched.json()["daily_cap_usd"], patched.json()["monthly_cap_usd"]) == ("2.00", "12.50")
    removed = admin.patch(f"/workspaces/{workspace.json()['id']}", json={"monthly_cap_usd": None})
    assert removed.json()["monthly_cap_usd"] is None
    other = admin.post("/accounts", json={"name": "other"}).json()
    wrong = admin.post(
        "/keys",
        json={"account_id": other["id"], "name": "x", "workspace_id": workspace.json()["id"]},
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["param"] == "workspace_id"
