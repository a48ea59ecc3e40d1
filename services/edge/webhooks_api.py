"""Webhooks on the HTTP surface: a task's deliveries for its owner; signing secrets, Kie's
HMAC key and redelivery for operators.

Customer answers carry both envelopes, like the rest of `/v1/jobs`: Kie's `code`/`msg`
next to `data`, and on errors OpenAI's `error` object as well.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from aig_common.errors import APIError, error_body
from controldb import AccountNotFound, KeyStore
from controldb.tasks import TaskStore
from controldb.webhooks import DeliveryView, SecretView, WebhookStore

from .admin import require_admin_token
from .v1 import authenticate


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def delivery_object(delivery: DeliveryView) -> dict[str, Any]:
    """A delivery as customers and operators see it; `id` is its `webhook-id` header."""
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "taskId": delivery.task_id,
        "callbackUrl": delivery.callback_url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "lastStatus": delivery.last_status,
        "lastError": delivery.last_error,
        "nextAttemptAt": _ms(delivery.next_attempt_at),
        "createTime": _ms(delivery.created_at),
        "completeTime": _ms(delivery.completed_at),
        "attemptLog": [
            {
                "number": attempt.number,
                "time": _ms(attempt.started_at),
                "durationMs": attempt.duration_ms,
                "status": attempt.status,
                "error": attempt.error,
                "outcome": attempt.outcome,
            }
            for attempt in delivery.attempt_log
        ],
    }


def secret_object(view: SecretView) -> dict[str, Any]:
    return {
        "object": "webhook_secret",
        "account_id": view.account_id,
        "secret": view.secret,
        "previous_secret": view.previous_secret,
        "previous_valid_until": _ms(view.previous_valid_until),
        "rotated_at": _ms(view.rotated_at),
        "kie_hmac": {"enabled": view.kie_hmac_key is not None, "key": view.kie_hmac_key},
    }


def _jobs_error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"code": status, "msg": message, **error_body(message, status=status, code=code)},
        status_code=status,
    )


def _account_not_found(account_id: str) -> APIError:
    return APIError(404, f"No account with id '{account_id}'.", code="account_not_found")


def webhooks_customer_router(
    store: KeyStore, webhooks: WebhookStore, tasks: TaskStore
) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/jobs/{task_id}/deliveries")
    async def task_deliveries(task_id: str, request: Request) -> JSONResponse:
        caller = await authenticate(request, store)
        deliveries = await webhooks.deliveries_of_task(task_id, account_id=caller.account_id)
        # The caller's task without a delivery yet is an empty list; a delivery row alone
        # (its account comes from the task event) also proves ownership.
        if not deliveries and await tasks.get_owned(caller.account_id, task_id) is None:
            # Another account's task and an unknown one look the same: never say which.
            return _jobs_error(404, f"No task with id '{task_id}'.", "task_not_found")
        return JSONResponse(
            {
                "code": 200,
                "msg": "success",
                "object": "list",
                "data": [delivery_object(delivery) for delivery in deliveries],
            }
        )

    return router


def webhooks_admin_router(admin_token: str, webhooks: WebhookStore) -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_admin_token(admin_token))], tags=["admin"])

    @router.get("/accounts/{account_id}/webhook-secret")
    async def show_secret(account_id: str) -> JSONResponse:
        try:
            return JSONResponse(secret_object(await webhooks.secret(account_id)))
        except AccountNotFound:
            raise _account_not_found(account_id) from None

    @router.post("/accounts/{account_id}/webhook-secret")
    async def rotate_secret(account_id: str) -> JSONResponse:
        try:
            return JSONResponse(secret_object(await webhooks.rotate_secret(account_id)))
        except AccountNotFound:
            raise _account_not_found(account_id) from None

    @router.post("/accounts/{account_id}/webhook-hmac-key")
    async def kie_hmac_key(account_id: str, request: Request) -> JSONResponse:
        enabled = await _enabled_flag(request)
        try:
            view = await webhooks.set_kie_hmac(account_id, enabled)
        except AccountNotFound:
            raise _account_not_found(account_id) from None
        return JSONResponse(secret_object(view))

    @router.get("/webhook-deliveries/{delivery_id}")
    async def show_delivery(delivery_id: str) -> JSONResponse:
        delivery = await webhooks.delivery(delivery_id)
        if delivery is None:
            raise _delivery_not_found(delivery_id)
        return JSONResponse({**delivery_object(delivery), "account_id": delivery.account_id})

    @router.post("/webhook-deliveries/{delivery_id}/redeliver", status_code=202)
    async def redeliver(delivery_id: str) -> JSONResponse:
        delivery = await webhooks.redeliver(delivery_id)
        if delivery is None:
            raise _delivery_not_found(delivery_id)
        return JSONResponse(
            {**delivery_object(delivery), "account_id": delivery.account_id}, status_code=202
        )

    return router


async def _enabled_flag(request: Request) -> bool:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise APIError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        raise APIError(
            400,
            'Send {"enabled": true} to turn Kie\'s X-Webhook-Signature on, false to turn it off.',
            code="invalid_value",
            param="enabled",
        )
    return bool(body["enabled"])


def _delivery_not_found(delivery_id: str) -> APIError:
    return APIError(
        404, f"No webhook delivery with id '{delivery_id}'.", code="webhook_delivery_not_found"
    )
