from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aig_common.errors import APIError
from controldb import KeyStore, create_engine_from_url, migrate
from edge.admin import admin_router

ADMIN_TOKEN = "admin-test-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def app_with_admin(store: KeyStore) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(APIError)
    async def render_api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    app.include_router(admin_router(store, ADMIN_TOKEN), prefix="/admin/v1")
    return app


@pytest.fixture
async def admin_store(tmp_path: Any, pepper: bytes) -> AsyncIterator[KeyStore]:
    url = f"sqlite+aiosqlite:///{tmp_path}/admin.db"
    await migrate(url)
    engine = create_engine_from_url(url)
    yield KeyStore(engine, pepper)
    await engine.dispose()


@pytest.fixture
async def client(admin_store: KeyStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_with_admin(admin_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        yield http


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def create_account(client: httpx.AsyncClient, name: str = "Acme") -> dict[str, Any]:
    response = await client.post("/admin/v1/accounts", json={"name": name}, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": "Bearer "},
    ],
)
async def test_every_route_requires_the_admin_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    requests = [
        client.post("/admin/v1/accounts", json={"name": "x"}, headers=headers),
        client.get("/admin/v1/accounts/acct_x", headers=headers),
        client.post("/admin/v1/keys", json={"account_id": "a", "name": "x"}, headers=headers),
        client.get("/admin/v1/keys", headers=headers),
        client.delete("/admin/v1/keys/key_x", headers=headers),
    ]
    for request in requests:
        response = await request
        assert_openai_error(response, 401, "authentication_error")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_an_account_lifecycle(client: httpx.AsyncClient) -> None:
    created = await create_account(client, "Acme Corp")

    assert created["object"] == "account"
    assert created["id"].startswith("acct_")
    assert created["name"] == "Acme Corp"
    assert isinstance(created["created_at"], int)
    fetched = await client.get(f"/admin/v1/accounts/{created['id']}", headers=AUTH)
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_an_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/v1/accounts/acct_nope", headers=AUTH)
    error = assert_openai_error(response, 404, "invalid_request_error")
    assert error["code"] == "account_not_found"


async def test_create_list_and_revoke_a_key(
    client: httpx.AsyncClient, admin_store: KeyStore
) -> None:
    account = await create_account(client)

    response = await client.post(
        "/admin/v1/keys", json={"account_id": account["id"], "name": "production"}, headers=AUTH
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "id",
        "object",
        "key",
        "name",
        "account_id",
        "key_prefix",
        "created_at",
        "workspace_id",
        "daily_cap_usd",
        "monthly_cap_usd",
        "rpm_limit",
    }
    assert (created["workspace_id"], created["daily_cap_usd"]) == (None, None)
    assert created["rpm_limit"] is None
    assert created["object"] == "api_key"
    assert created["key"].startswith("sk-aig-")
    assert created["key"].startswith(created["key_prefix"])
    assert (created["name"], created["account_id"]) == ("production", account["id"])
    caller = await admin_store.authenticate(created["key"])
    assert caller is not None and caller.key_id == created["id"]

    listing = await client.get("/admin/v1/keys", params={"account_id": account["id"]}, headers=AUTH)
    assert listing.status_code == 200
    assert created["key"] not in listing.text
    listed = listing.json()
    assert listed["object"] == "list"
    assert [item["id"] for item in listed["data"]] == [created["id"]]
    assert "key" not in listed["data"][0]
    assert listed["data"][0]["revoked"] is False
    assert listed["data"][0]["rpm_limit"] is None

    revoked = await client.delete(f"/admin/v1/keys/{created['id']}", headers=AUTH)
    assert revoked.status_code == 200
    assert revoked.json() == {"id": created["id"], "object": "api_key", "revoked": True}
    assert await admin_store.authenticate(created["key"]) is None
    after = await client.get("/admin/v1/keys", params={"account_id": account["id"]}, headers=AUTH)
    assert after.json()["data"][0]["revoked"] is True
    assert isinstance(after.json()["data"][0]["revoked_at"], int)


async def test_listing_without_an_account_lists_every_key(client: httpx.AsyncClient) -> None:
    for name in ("First", "Second"):
        account = await create_account(client, name)
        await client.post(
            "/admin/v1/keys", json={"account_id": account["id"], "name": "k"}, headers=AUTH
        )

    listing = await client.get("/admin/v1/keys", headers=AUTH)

    assert len(listing.json()["data"]) == 2


async def test_key_routes_404_on_unknown_ids(client: httpx.AsyncClient) -> None:
    create = await client.post(
        "/admin/v1/keys", json={"account_id": "acct_nope", "name": "k"}, headers=AUTH
    )
    error = assert_openai_error(create, 404, "invalid_request_error")
    assert (error["code"], error["param"]) == ("account_not_found", "account_id")

    listing = await client.get("/admin/v1/keys", params={"account_id": "acct_nope"}, headers=AUTH)
    assert_openai_error(listing, 404, "invalid_request_error")

    revoke = await client.delete("/admin/v1/keys/key_nope", headers=AUTH)
    assert assert_openai_error(revoke, 404, "invalid_request_error")["code"] == "api_key_not_found"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/v1/accounts", {}, "name"),
        ("/admin/v1/accounts", {"name": 42}, "name"),
        ("/admin/v1/accounts", {"name": ""}, "name"),
        ("/admin/v1/accounts", {"name": "   "}, "name"),
        ("/admin/v1/accounts", {"name": None}, "name"),
        ("/admin/v1/keys", {"name": "k"}, "account_id"),
        ("/admin/v1/keys", {"account_id": ["acct_x"], "name": "k"}, "account_id"),
        ("/admin/v1/accounts", {"name": "a", "credits_usd": ""}, "credits_usd"),
        ("/admin/v1/accounts", {"name": "a", "credits_usd": "-1"}, "credits_usd"),
    ],
)
async def test_invalid_bodies_are_400_in_openai_shape(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post(path, json=body, headers=AUTH)

    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == param


async def test_an_account_may_open_with_zero_credits(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/v1/accounts", json={"name": "empty", "credits_usd": "0"}, headers=AUTH
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'"name"'])
async def test_bodies_that_are_not_json_objects_are_400(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post(
        "/admin/v1/accounts",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
    )

    assert_openai_error(response, 400, "invalid_request_error")


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/v1/accounts", json={"name": "Acme", "plan": "gold"}, headers=AUTH
    )

    assert response.status_code == 201
    assert "plan" not in response.json()


def test_an_empty_admin_token_is_refused(admin_store: KeyStore) -> None:
    with pytest.raises(ValueError):
        admin_router(admin_store, "")
