"""Money on the HTTP surface: credits, caps and workspaces for operators; /v1/me and
/v1/usage for customers. Amounts are exact decimal USD strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from aig_common.errors import APIError, parse_json_object
from aig_common.money import MAX_NANO_USD, percent, usd
from controldb import KeyStore
from controldb.limits import Limits, NotFound
from controldb.models import Account, ApiKey, Workspace
from controldb.money import (
    CREDIT_KINDS,
    BalanceTooLarge,
    Money,
    PeriodSpend,
    RefundNotAllowed,
    UnknownAccount,
)

from .admin import (
    account_object,
    key_object,
    optional_usd,
    parse_amount,
    parse_cap,
    parse_rpm_limit,
    require_admin_token,
)
from .billing_client import BillingClient
from .v1 import authenticate

CAP_PARAMS = {"daily_cap_usd": "daily_cap_nano_usd", "monthly_cap_usd": "monthly_cap_nano_usd"}
GROUPINGS = ("model", "key", "day")


async def _json_object(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


def _cap_changes(body: dict[str, Any]) -> dict[str, int | None]:
    """Caps present in the body: a value sets the cap, null removes it, absence keeps it."""
    return {
        column: parse_cap(body[param], param)
        for param, column in CAP_PARAMS.items()
        if param in body
    }


def _not_found(exc: NotFound) -> APIError:
    return APIError(
        404,
        f"No {exc.kind.replace('key', 'API key')} with id '{exc.object_id}'.",
        code=f"{'api_key' if exc.kind == 'key' else exc.kind}_not_found",
    )


def workspace_object(workspace: Workspace) -> dict[str, Any]:
    return {
        "id": workspace.id,
        "object": "workspace",
        "account_id": workspace.account_id,
        "name": workspace.name,
        "created_at": int(workspace.created_at.timestamp()),
        "daily_cap_usd": optional_usd(workspace.daily_cap_nano_usd),
        "monthly_cap_usd": optional_usd(workspace.monthly_cap_nano_usd),
    }


def _usage_params(request: Request, account_id: str) -> dict[str, str]:
    group_by = request.query_params.get("group_by", "model")
    if group_by not in GROUPINGS:
        raise APIError(
            400,
            f"Invalid value for 'group_by': expected one of {', '.join(GROUPINGS)}.",
            param="group_by",
            code="invalid_value",
        )
    now = datetime.now(UTC)
    start = _timestamp(request.query_params.get("start"), "start", now - timedelta(days=30))
    end = _timestamp(request.query_params.get("end"), "end", now)
    if end <= start:
        raise APIError(400, "'end' must be after 'start'.", param="end", code="invalid_value")
    return {
        "account_id": account_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "group_by": group_by,
    }


def _text(value: object, param: str) -> str:
    """A free-text field as stored: no NUL, which PostgreSQL's text cannot hold (and SQLite
    should not hold what production cannot)."""
    text = str(value)
    if "\x00" in text:
        raise APIError(
            400,
            f"Invalid value for '{param}': it holds a NUL character (\\u0000).",
            param=param,
            code="invalid_value",
        )
    return text


def _timestamp(value: str | None, param: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise APIError(
            400,
            f"Invalid value for '{param}': expected an RFC 3339 time or a date (2026-11-01).",
            param=param,
            code="invalid_value",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def money_admin_router(
    admin_token: str, money: Money, limits: Limits, billing: BillingClient
) -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_admin_token(admin_token))], tags=["admin"])

    @router.post("/accounts/{account_id}/credits")
    async def add_credits(account_id: str, request: Request) -> JSONResponse:
        body = await _json_object(request)
        kind = body.get("kind", "purchase")
        if kind not in CREDIT_KINDS:
            raise APIError(
                400,
                f"Invalid value for 'kind': expected one of {', '.join(CREDIT_KINDS)}.",
                param="kind",
                code="invalid_value",
            )
        if "amount_usd" not in body:
            raise APIError(
                400,
                "Missing required parameter: 'amount_usd'.",
                param="amount_usd",
                code="missing_required_parameter",
            )
        amount = parse_amount(body["amount_usd"], "amount_usd")
        try:
            result = await money.add_credits(
                account_id, kind, amount, note=_text(body.get("note", ""), "note")
            )
        except RefundNotAllowed as exc:
            raise APIError(
                400,
                "Only unspent credits purchased in the last 30 days can be refunded: "
                f"at most ${usd(exc.refundable)} now.",
                param="amount_usd",
                code="refund_not_allowed",
            ) from None
        except BalanceTooLarge:
            raise APIError(
                400,
                f"The balance would exceed ${usd(MAX_NANO_USD)}, the most an account can hold.",
                param="amount_usd",
                code="invalid_value",
            ) from None
        except UnknownAccount:
            raise _not_found(NotFound("account", account_id)) from None
        return JSONResponse(
            {
                "object": "credit_result",
                "account_id": account_id,
                "balance_usd": usd(result.balance_nano_usd),
                "entries": [
                    {"id": e.id, "kind": e.kind, "amount_usd": usd(e.amount_nano_usd)}
                    for e in result.entries
                ],
            }
        )

    async def _patch(kind: str, object_id: str, request: Request) -> Account | ApiKey | Workspace:
        body = await _json_object(request)
        changes = _cap_changes(body)
        if kind == "key" and "rpm_limit" in body:
            changes["rpm_limit"] = parse_rpm_limit(body["rpm_limit"])
        try:
            return await limits.set_caps(kind, object_id, changes)
        except NotFound as exc:
            raise _not_found(exc) from None

    @router.patch("/accounts/{account_id}")
    async def patch_account(account_id: str, request: Request) -> JSONResponse:
        account = await _patch("account", account_id, request)
        assert isinstance(account, Account)
        return JSONResponse(account_object(account))

    @router.patch("/keys/{key_id}")
    async def patch_key(key_id: str, request: Request) -> JSONResponse:
        key = await _patch("key", key_id, request)
        assert isinstance(key, ApiKey)
        return JSONResponse(key_object(key))

    @router.post("/workspaces", status_code=201)
    async def create_workspace(request: Request) -> JSONResponse:
        body = await _json_object(request)
        for param in ("account_id", "name"):
            if not isinstance(body.get(param), str) or not body[param].strip():
                raise APIError(
                    400,
                    f"Missing required parameter: '{param}'.",
                    param=param,
                    code="missing_required_parameter",
                )
            _text(body[param], param)
        try:
            workspace = await limits.create_workspace(
                body["account_id"], body["name"].strip()[:200], _cap_changes(body)
            )
        except NotFound as exc:
            raise _not_found(exc) from None
        return JSONResponse(workspace_object(workspace), status_code=201)

    @router.get("/workspaces/{workspace_id}")
    async def get_workspace(workspace_id: str) -> JSONResponse:
        try:
            workspace = await limits.get("workspace", workspace_id)
        except NotFound as exc:
            raise _not_found(exc) from None
        assert isinstance(workspace, Workspace)
        return JSONResponse(workspace_object(workspace))

    @router.patch("/workspaces/{workspace_id}")
    async def patch_workspace(workspace_id: str, request: Request) -> JSONResponse:
        workspace = await _patch("workspace", workspace_id, request)
        assert isinstance(workspace, Workspace)
        return JSONResponse(workspace_object(workspace))

    @router.post("/tiers/recompute")
    async def recompute_tiers() -> JSONResponse:
        return JSONResponse(await billing.recompute_tiers())

    @router.get("/accounts/{account_id}/usage")
    async def account_usage(account_id: str, request: Request) -> JSONResponse:
        try:
            await limits.get("account", account_id)
        except NotFound as exc:
            raise _not_found(exc) from None
        return JSONResponse(await billing.usage(_usage_params(request, account_id)))

    return router


def _period(spend: PeriodSpend) -> dict[str, Any]:
    return {
        "cap_usd": optional_usd(spend.cap_nano_usd),
        "spent_usd": usd(spend.spent_nano_usd),
        "reserved_usd": usd(spend.reserved_nano_usd),
        "resets_at": spend.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def cap_figures(
    money: Money, kind: str, holder: Account | ApiKey | Workspace
) -> dict[str, Any]:
    """Each cap of a key, workspace or account with its spend, in-flight amount and reset:
    what /v1/me and the dashboard show."""
    spend = await money.scope_spend(
        kind, holder.id, (holder.daily_cap_nano_usd, holder.monthly_cap_nano_usd)
    )
    return {"daily": _period(spend.daily), "monthly": _period(spend.monthly)}


def customer_router(
    store: KeyStore,
    money: Money,
    limits: Limits,
    billing: BillingClient,
    tier_interval: timedelta,
) -> APIRouter:
    router = APIRouter()

    async def caps(kind: str, holder: Account | ApiKey | Workspace) -> dict[str, Any]:
        return await cap_figures(money, kind, holder)

    @router.get("/v1/me")
    async def me(request: Request) -> JSONResponse:
        caller = await authenticate(request, store)
        account = await limits.get("account", caller.account_id)
        key = await limits.get("key", caller.key_id)
        assert isinstance(account, Account) and isinstance(key, ApiKey)
        workspace = None
        if key.workspace_id:
            found = await limits.get("workspace", key.workspace_id)
            assert isinstance(found, Workspace)
            workspace = {"id": found.id, "name": found.name, "caps": await caps("workspace", found)}
        computed = account.tier_computed_at
        return JSONResponse(
            {
                "object": "me",
                "account": {
                    "id": account.id,
                    "name": account.name,
                    "balance_usd": usd(account.balance_nano_usd),
                    "caps": await caps("account", account),
                },
                "tier": {
                    "name": account.tier,
                    "markup_percent": percent(account.markup_basis_points),
                    "rolling_30d_spend_usd": usd(account.rolling_30d_spend_nano_usd),
                    "computed_at": _rfc3339(computed),
                    "next_recompute_at": _rfc3339(computed + tier_interval if computed else None),
                },
                "key": {
                    "id": key.id,
                    "name": key.name,
                    "caps": await caps("key", key),
                    "rpm_limit": key.rpm_limit,
                },
                "workspace": workspace,
            }
        )

    @router.get("/v1/usage")
    async def usage(request: Request) -> JSONResponse:
        caller = await authenticate(request, store)
        return JSONResponse(await billing.usage(_usage_params(request, caller.account_id)))

    return router


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
