"""The billing service's internal API: it owns the usage ledger and the tier job."""

from __future__ import annotations

from typing import Any

import httpx

from aig_common.errors import APIError
from aig_common.service_auth import service_headers


class BillingClient:
    def __init__(self, base_url: str, service_token: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(30.0, connect=3.0),
            headers=service_headers(service_token),
        )

    async def usage(self, params: dict[str, str]) -> dict[str, Any]:
        return await self._call("GET", "/internal/v1/usage", params=params)

    async def calls(self, params: dict[str, str]) -> dict[str, Any]:
        """One account's recent calls (account_id, start, end, limit, model, key_id, outcome)."""
        return await self._call("GET", "/internal/v1/calls", params=params)

    async def recompute_tiers(self) -> dict[str, Any]:
        return await self._call("POST", "/internal/v1/tiers/recompute")

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError(
                503,
                f"The billing service is unavailable ({type(exc).__name__}); please retry.",
                code="billing_unavailable",
            ) from exc
        body: dict[str, Any] = response.json()
        if response.status_code != 200:
            error = body.get("error", {})
            raise APIError(
                response.status_code,
                str(error.get("message", "billing error")),
                code=error.get("code"),
                param=error.get("param"),
            )
        return body

    async def aclose(self) -> None:
        await self._http.aclose()
