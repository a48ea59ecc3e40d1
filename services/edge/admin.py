"""Operator API under `/admin/v1`: accounts and API keys, behind `AIG_ADMIN_TOKEN`.

Errors are raised as `aig_common.errors.APIError` (OpenAI's error shape) and rendered by
the app's exception handler. Request bodies are validated here rather than by FastAPI,
so a bad body is a 400 in OpenAI's shape, never FastAPI's default 422.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from aig_common.errors import APIError, parse_json_object
from aig_common.money import MAX_NANO_USD, parse_usd, percent, usd
from controldb import Account, AccountNotFound, ApiKey, KeyStore
from controldb.limits import Limits, NotFound
from controldb.models import STARTER_MARKUP_BASIS_POINTS, Workspace
from controldb.money import Money
from controldb.ratelimit import MAX_RPM_LIMIT

from .throttle import auth_subjects, record_failure, refuse_if_throttled

# No NUL: PostgreSQL's text cannot hold one, and SQLite should not hold what it cannot.
NO_NUL = r"^[^\x00]*$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]


class _Body(BaseModel):
    # Unknown fields are ignored so older operator scripts keep working as fields are added.
    model_config = ConfigDict(extra="ignore", strict=True)


class CreateAccountBody(_Body):
    name: Name
    # An opening grant, as a decimal USD string ("25.00").
    credits_usd: str | None = None


class CreateKeyBody(_Body):
    account_id: Identifier
    name: Name
    workspace_id: Identifier | None = None
    daily_cap_usd: str | None = None
    monthly_cap_usd: str | None = None
    # Requests per minute; absent or null: unlimited. Checked by parse_rpm_limit.
    rpm_limit: Any = None


BodyT = TypeVar("BodyT", bound=_Body)


def require_admin_token(admin_token: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that admits only `Authorization: Bearer <admin_token>`."""
    if not admin_token:
        raise ValueError("admin_token must not be empty")
    expected = f"Bearer {admin_token}".encode()

    async def require_admin(request: Request) -> None:
        subjects = auth_subjects(request, realm="admin")
        refuse_if_throttled(request, subjects)
        presented = request.headers.get("authorization", "")
        if not presented:
            record_failure(request, subjects)
            raise _unauthorized(
                "Missing admin token. Send 'Authorization: Bearer <AIG_ADMIN_TOKEN>'."
            )
        if not hmac.compare_digest(presented.encode(), expected):
            record_failure(request, subjects)
            raise _unauthorized("Invalid admin token.")

    return require_admin


def admin_router(
    store: KeyStore,
    admin_token: str,
    money: Money | None = None,
    limits: Limits | None = None,
) -> APIRouter:
    """Routes for the lead's app to mount at prefix `/admin/v1`."""
    router = APIRouter(dependencies=[Depends(require_admin_token(admin_token))], tags=["admin"])

    @router.post("/accounts", status_code=201)
    async def create_account(request: Request) -> JSONResponse:
        body = await _parse_body(request, CreateAccountBody)
        # Absent or "0" opens an empty account; anything else must be a valid amount ("" is not).
        opening = (
            0
            if body.credits_usd is None
            else _usd_param(body.credits_usd, "credits_usd", minimum=0, rule="must not be negative")
        )
        account = await store.create_account(body.name)
        if opening and money is not None:
            result = await money.add_credits(account.id, "grant", opening, note="opening grant")
            account.balance_nano_usd = result.balance_nano_usd
        return JSONResponse(account_object(account), status_code=201)

    @router.get("/accounts/{account_id}")
    async def get_account(account_id: str) -> JSONResponse:
        account = await store.get_account(account_id)
        if account is None:
            raise _account_not_found(account_id)
        return JSONResponse(account_object(account))

    @router.post("/keys", status_code=201)
    async def create_key(request: Request) -> JSONResponse:
        body = await _parse_body(request, CreateKeyBody)
        caps = {
            "daily_cap_nano_usd": parse_cap(body.daily_cap_usd, "daily_cap_usd"),
            "monthly_cap_nano_usd": parse_cap(body.monthly_cap_usd, "monthly_cap_usd"),
        }
        rpm_limit = parse_rpm_limit(body.rpm_limit)
        if limits is not None and body.workspace_id is not None:
            workspace = await _workspace_of(limits, body.workspace_id)
            if workspace.account_id != body.account_id:
                raise APIError(
                    400,
                    f"Workspace '{body.workspace_id}' belongs to another account.",
                    code="invalid_value",
                    param="workspace_id",
                )
        try:
            record, plain_key = await store.create_key(body.account_id, body.name)
        except AccountNotFound as exc:
            raise _account_not_found(exc.account_id, param="account_id") from None
        settings = {**caps, "rpm_limit": rpm_limit}
        configured = any(value is not None for value in settings.values())
        if limits is not None and (body.workspace_id or configured):
            await limits.attach_key(record.id, body.workspace_id)
            await limits.set_caps("key", record.id, settings)
            record.workspace_id = body.workspace_id
            for name, value in settings.items():
                setattr(record, name, value)
        return JSONResponse(created_key_object(record, plain_key), status_code=201)

    @router.get("/keys")
    async def list_keys(account_id: str | None = None) -> JSONResponse:
        if account_id is not None and await store.get_account(account_id) is None:
            raise _account_not_found(account_id, param="account_id")
        records = await store.list_keys(account_id)
        return JSONResponse({"object": "list", "data": [key_object(r) for r in records]})

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> JSONResponse:
        if not await store.revoke_key(key_id):
            raise APIError(404, f"No API key with id '{key_id}'.", code="api_key_not_found")
        return JSONResponse({"id": key_id, "object": "api_key", "revoked": True})

    return router


def account_object(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "object": "account",
        "name": account.name,
        "created_at": _unix(account.created_at),
        "balance_usd": usd(account.balance_nano_usd or 0),
        "tier": account.tier or "starter",
        "markup_percent": percent(
            account.markup_basis_points
            if account.markup_basis_points is not None
            else STARTER_MARKUP_BASIS_POINTS
        ),
        "daily_cap_usd": optional_usd(account.daily_cap_nano_usd),
        "monthly_cap_usd": optional_usd(account.monthly_cap_nano_usd),
    }


def optional_usd(nano_usd: int | None) -> str | None:
    return None if nano_usd is None else usd(nano_usd)


def _usd_param(value: object, param: str, *, minimum: int, rule: str) -> int:
    try:
        amount = parse_usd(value)
    except ValueError as exc:
        message = f"Invalid value for '{param}': {exc}."
        raise APIError(400, message, code="invalid_value", param=param) from None
    if amount < minimum:
        message = f"Invalid value for '{param}': {rule}."
        raise APIError(400, message, code="invalid_value", param=param)
    if amount > MAX_NANO_USD:
        message = f"Invalid value for '{param}': must be at most {usd(MAX_NANO_USD)}."
        raise APIError(400, message, code="invalid_value", param=param)
    return amount


def parse_cap(value: object, param: str) -> int | None:
    """A cap in USD; null means no cap. Zero is a valid cap: the scope may spend nothing."""
    if value is None:
        return None
    return _usd_param(value, param, minimum=0, rule="must not be negative")


def parse_rpm_limit(value: object, param: str = "rpm_limit") -> int | None:
    """A key's requests per minute: a whole number from 1 to MAX_RPM_LIMIT; null: unlimited."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RPM_LIMIT:
        raise APIError(
            400,
            f"Invalid value for '{param}': expected a whole number of requests per minute "
            f"from 1 to {MAX_RPM_LIMIT}, or null for no limit.",
            code="invalid_value",
            param=param,
        )
    return value


def parse_amount(value: object, param: str) -> int:
    return _usd_param(value, param, minimum=1, rule="must be positive")


async def _workspace_of(limits: Limits, workspace_id: str) -> Workspace:
    try:
        found = await limits.get("workspace", workspace_id)
    except NotFound:
        raise APIError(
            404,
            f"No workspace with id '{workspace_id}'.",
            code="workspace_not_found",
            param="workspace_id",
        ) from None
    assert isinstance(found, Workspace)
    return found


def key_object(record: ApiKey) -> dict[str, Any]:
    """A key as listed: never the plain key, which the server does not have."""
    return {
        "id": record.id,
        "object": "api_key",
        "name": record.name,
        "account_id": record.account_id,
        "key_prefix": record.key_prefix,
        "created_at": _unix(record.created_at),
        "workspace_id": record.workspace_id,
        "daily_cap_usd": optional_usd(record.daily_cap_nano_usd),
        "monthly_cap_usd": optional_usd(record.monthly_cap_nano_usd),
        "rpm_limit": record.rpm_limit,
        "revoked": record.revoked_at is not None,
        "revoked_at": _unix(record.revoked_at) if record.revoked_at else None,
    }


def created_key_object(record: ApiKey, plain_key: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "api_key",
        "key": plain_key,
        "name": record.name,
        "account_id": record.account_id,
        "key_prefix": record.key_prefix,
        "created_at": _unix(record.created_at),
        "workspace_id": record.workspace_id,
        "daily_cap_usd": optional_usd(record.daily_cap_nano_usd),
        "monthly_cap_usd": optional_usd(record.monthly_cap_nano_usd),
        "rpm_limit": record.rpm_limit,
    }


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _unauthorized(message: str) -> APIError:
    return APIError(
        401, message, code="invalid_admin_token", headers={"WWW-Authenticate": "Bearer"}
    )


def _account_not_found(account_id: str, *, param: str | None = None) -> APIError:
    return APIError(
        404, f"No account with id '{account_id}'.", code="account_not_found", param=param
    )


async def _parse_body(request: Request, model: type[BodyT]) -> BodyT:
    data = parse_json_object(await request.body())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "missing":
        return APIError(
            400,
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    return APIError(
        400, f"Invalid value for '{param}': {first['msg']}.", code="invalid_value", param=param
    )
