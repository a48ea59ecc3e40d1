"""Service-to-service authentication for internal HTTP APIs (billing's `/internal/v1/*`).

In Kubernetes an internal port is a network service that any pod may reach, so listening on
127.0.0.1 is no protection there. Every internal route requires `Authorization: Bearer
<AIG_SERVICE_TOKEN>`, a secret shared by the services and nothing else. A service started
without the token refuses its internal API altogether (503) rather than serving it open.
"""

from __future__ import annotations

import hmac
import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from aig_common.errors import error_body

SERVICE_TOKEN_ENV = "AIG_SERVICE_TOKEN"
INTERNAL_PREFIX = "/internal/"

log = logging.getLogger("aig.service_auth")


def service_headers(token: str) -> dict[str, str]:
    """What a caller of an internal API sends."""
    return {"authorization": f"Bearer {token}"} if token else {}


class ServiceTokenMiddleware:
    """Guards every path under `/internal/`; operations endpoints stay open for probes."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else b""
        if not token:
            log.warning("%s is not set: the internal API refuses every call", SERVICE_TOKEN_ENV)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(INTERNAL_PREFIX):
            await self.app(scope, receive, send)
            return
        if not self._expected:
            await _refuse(503, "internal API disabled: the service token is not configured")(
                scope, receive, send
            )
            return
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                presented = value
                break
        if not hmac.compare_digest(presented, self._expected):
            await _refuse(401, "a valid service token is required")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _refuse(status: int, message: str) -> JSONResponse:
    code = "service_token_required" if status == 401 else "service_token_unset"
    return JSONResponse(error_body(message, status=status, code=code), status_code=status)
