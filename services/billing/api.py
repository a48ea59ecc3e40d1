"""The billing service's HTTP port: operations endpoints and the internal API the edge
calls for usage analytics and tier recomputes. Not exposed to customers directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aig_common.errors import error_body
from aig_common.money import usd
from aig_common.ops import ReadinessCheck, ops_routes
from aig_common.service_auth import ServiceTokenMiddleware
from controldb.money import Money

from .ledger import Ledger
from .ledger.queries import CALL_FILTERS
from .tiers import recompute_tiers

GROUPINGS = ("model", "key", "day")
# The most calls one listing (a dashboard page, a CSV export) returns.
MAX_CALLS = 10_000
MONEY_FIELDS = ("billed_cost_nano_usd", "upstream_cost_nano_usd")


def _bad_request(message: str, param: str) -> Response:
    return JSONResponse(
        error_body(message, status=400, param=param, code="invalid_value"), status_code=400
    )


def _present(row: dict[str, Any]) -> dict[str, Any]:
    """Ledger money (nano-USD ints) becomes exact decimal USD strings at the HTTP surface."""
    shown = {key: value for key, value in row.items() if key not in MONEY_FIELDS}
    for field in MONEY_FIELDS:
        if field in row:
            shown[field.replace("_nano_usd", "_usd")] = usd(int(row[field]))
    return shown


def billing_app(
    ledger: Ledger, money: Money, readiness: ReadinessCheck, service_token: str
) -> Starlette:
    async def usage(request: Request) -> Response:
        params = request.query_params
        account_id = params.get("account_id", "")
        group_by = params.get("group_by", "model")
        if not account_id:
            return _bad_request("account_id is required.", "account_id")
        if group_by not in GROUPINGS:
            return _bad_request(f"group_by must be one of {', '.join(GROUPINGS)}.", "group_by")
        try:
            start = datetime.fromisoformat(params["start"])
            end = datetime.fromisoformat(params["end"])
        except (KeyError, ValueError):
            return _bad_request("start and end must be ISO 8601 times.", "start")
        rows = await ledger.usage_summary(account_id, start, end, group_by)
        return JSONResponse(
            {
                "object": "list",
                "account_id": account_id,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "group_by": group_by,
                "data": [_present(row) for row in rows],
            }
        )

    async def calls(request: Request) -> Response:
        params = request.query_params
        account_id = params.get("account_id", "")
        if not account_id:
            return _bad_request("account_id is required.", "account_id")
        try:
            start = datetime.fromisoformat(params["start"])
            end = datetime.fromisoformat(params["end"])
        except (KeyError, ValueError):
            return _bad_request("start and end must be ISO 8601 times.", "start")
        limit = params.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_CALLS:
            return _bad_request(f"limit must be between 1 and {MAX_CALLS}.", "limit")
        filters = {name: params[name] for name in CALL_FILTERS if params.get(name)}
        rows = await ledger.recent_calls(account_id, start, end, filters, int(limit))
        return JSONResponse(
            {"object": "list", "account_id": account_id, "data": [_present(r) for r in rows]}
        )

    async def recompute(_: Request) -> Response:
        return JSONResponse(await recompute_tiers(ledger, money))

    routes: list[Route] = [
        *ops_routes(readiness),
        Route("/internal/v1/usage", usage, methods=["GET"]),
        Route("/internal/v1/calls", calls, methods=["GET"]),
        Route("/internal/v1/tiers/recompute", recompute, methods=["POST"]),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(ServiceTokenMiddleware, token=service_token)]
    )


Handler = Callable[[Request], Awaitable[Response]]
