"""Replicate's predictions API (`https://api.replicate.com`), served under `/replicate`.

- `POST /replicate/v1/models/{owner}/{name}/predictions`, `POST /replicate/v1/predictions`
  (`version`: `owner/name:hash`, `owner/name` or a bare hash) and
  `POST /replicate/v1/deployments/{owner}/{name}/predictions` create a prediction: 201 with
  the prediction object; `Prefer: wait[=N]` holds the answer until it finishes or N seconds
  (1..60) pass, then returns it as it is;
- `GET /replicate/v1/predictions/{id}`, `POST /replicate/v1/predictions/{id}/cancel`;
- `GET /replicate/v1/webhooks/default/secret` → `{"key": "whsec_…"}`;
- `GET /replicate/delivery/{name}`: the output files (`replicate.delivery` at Replicate).

Errors are RFC 7807 problem details (`{title, detail, status}`), as Replicate's. The
`completed` webhook is POSTed to `webhook` with the prediction object, signed per Standard
Webhooks with the account secret; `start`, `output` and `logs` events are not simulated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import secrets
import time
from typing import Any

import orjson
from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.providers.common import (
    bearer_token,
    log_without_body,
    media_call_refused,
    read_and_log,
)
from sandbox.renders import (
    MediaKind,
    Phase,
    Render,
    RenderFailure,
    new_render,
    owner_of,
    post_webhook,
)
from sandbox.state import Fault, SandboxState
from sandbox.transport import InvalidBody, json_response

PROVIDER = "replicate"
PREFIX = "/replicate"
_MAX_WAIT_S = 60
_WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
_STATUS = {
    Phase.QUEUED: "starting",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "succeeded",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "canceled",
}


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    headers = {"retry-after": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    body = {"title": title, "detail": detail, "status": status, **extra}
    return json_response(body, status, headers)


def _new_id() -> str:
    # Replicate's ids: 26 lowercase base32 characters.
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def routes(state: SandboxState) -> list[Route]:
    async def guarded(request: Request) -> Response | None:
        return await media_call_refused(
            state,
            PROVIDER,
            has_key=bool(bearer_token(request)),
            unauthorised=lambda: _problem(
                401, "Unauthenticated", "You did not pass a valid authentication token"
            ),
            fault_response=_fault_response,
        )

    def api_base(request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}{PREFIX}"

    async def create(request: Request) -> Response:
        body = await read_and_log(request, state, PROVIDER)
        refused = await guarded(request)
        if refused is not None:
            return refused
        if isinstance(body, InvalidBody):
            return _problem(400, "Invalid request", str(body))
        params = request.path_params
        if "owner" in params:
            model, version = f"{params['owner']}/{params['name']}", None
        else:
            model, version = _model_of_version(body.get("version"))
            if version is None:
                return _problem(422, "Invalid version", "version is required")
        model_input = body.get("input")
        if not isinstance(model_input, dict):
            return _input_problem("input is required")
        prompt = model_input.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _input_problem("prompt is required")
        events = body.get("webhook_events_filter") or list(_WEBHOOK_EVENTS)
        if not isinstance(events, list) or not set(events) <= set(_WEBHOOK_EVENTS):
            return _problem(422, "Invalid webhook_events_filter", f"allowed: {_WEBHOOK_EVENTS}")
        webhook = body.get("webhook") or body.get("webhook_completed")
        prediction_id = _new_id()
        render_fault = state.faults.take(PROVIDER, streaming=False, render=True)
        failure = None
        if render_fault is not None:
            message = render_fault.message or "Prediction failed (sandbox render fault)"
            failure = RenderFailure(render_fault.status, message)
        render = new_render(
            prediction_id,
            PROVIDER,
            model,
            model_input,
            api_key=bearer_token(request),
            queue_ms=state.settings.media_queue_ms,
            render_ms=state.settings.media_render_ms,
            failure=failure,
            webhook=webhook if isinstance(webhook, str) and webhook else None,
            extra={
                "api_base": api_base(request),
                "version": version or hashlib.sha256(model.encode()).hexdigest(),
                "events": events,
                "webhook_id": f"msg_{_new_id()}",
            },
        )
        on_finish = _send_webhook if render.webhook and "completed" in events else None
        state.renders.add(render, on_finish)
        wait_s = _prefer_wait(request.headers.get("prefer", ""))
        if wait_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(render.finished.wait(), wait_s)
        return json_response(prediction_of(render), 201)

    def find(request: Request) -> Render | Response:
        render = state.renders.get(request.path_params["prediction_id"])
        if render is None or render.provider != PROVIDER:
            return _problem(404, "Not found", "Not found.")
        if render.owner != owner_of(bearer_token(request)):
            return _problem(404, "Not found", "Not found.")
        return render

    async def logged_and_found(request: Request) -> Render | Response:
        log_without_body(request, state, PROVIDER)
        refused = await guarded(request)
        return refused if refused is not None else find(request)

    async def get(request: Request) -> Response:
        render = await logged_and_found(request)
        if isinstance(render, Response):
            return render
        return json_response(prediction_of(render))

    async def cancel(request: Request) -> Response:
        render = await logged_and_found(request)
        if isinstance(render, Response):
            return render
        render.cancel(time.time())  # a finished prediction is returned as it is
        return json_response(prediction_of(render))

    async def webhook_secret(request: Request) -> Response:
        log_without_body(request, state, PROVIDER)
        refused = await guarded(request)
        if refused is not None:
            return refused
        return json_response({"key": state.replicate_webhook_secret})

    async def delivery(request: Request) -> Response:
        found = state.renders.file(request.path_params["name"])
        if found is None:
            return _problem(404, "Not found", "Not found.")
        data, content_type = found
        return Response(data, media_type=content_type)

    async def _send_webhook(render: Render) -> None:
        if render.webhook is None:
            return
        raw = orjson.dumps(prediction_of(render))
        message_id = render.extra["webhook_id"]  # the same on every attempt
        sent_at = datetime.datetime.now(datetime.UTC)
        signature = Webhook(state.replicate_webhook_secret).sign(message_id, sent_at, raw)
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        await post_webhook(
            state.http, render.webhook, raw, headers, state.settings.webhook_attempts
        )

    v1 = f"{PREFIX}/v1"
    return [
        Route(f"{v1}/models/{{owner}}/{{name}}/predictions", create, methods=["POST"]),
        Route(f"{v1}/deployments/{{owner}}/{{name}}/predictions", create, methods=["POST"]),
        Route(f"{v1}/predictions", create, methods=["POST"]),
        Route(f"{v1}/predictions/{{prediction_id}}", get, methods=["GET"]),
        Route(f"{v1}/predictions/{{prediction_id}}/cancel", cancel, methods=["POST"]),
        Route(f"{v1}/webhooks/default/secret", webhook_secret, methods=["GET"]),
        Route(f"{PREFIX}/delivery/{{name}}", delivery, methods=["GET"]),
    ]


def prediction_of(render: Render) -> dict[str, Any]:
    """The prediction object, as Replicate's API and webhooks send it."""
    phase = render.phase()
    base = render.extra["api_base"]
    done = phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)
    started = phase is not Phase.QUEUED and not (
        phase is Phase.CANCELLED
        and render.cancelled_at is not None
        and render.cancelled_at < render.started_at
    )
    completed_at = None
    if done:
        completed_at = render.cancelled_at if phase is Phase.CANCELLED else render.finished_natural
    output: Any = None
    if phase is Phase.SUCCEEDED:
        urls = [f"{base}/delivery/{output.name}" for output in render.outputs]
        output = urls if render.kind is MediaKind.IMAGE else urls[0]
    prediction: dict[str, Any] = {
        "id": render.id,
        "model": render.model,
        "version": render.extra["version"],
        "input": render.input,
        "logs": "Rendering (sandbox)\n" if started else "",
        "output": output,
        "data_removed": False,
        "error": render.failure.message if phase is Phase.FAILED and render.failure else None,
        "status": _STATUS[phase],
        "created_at": _iso(render.created_at),
        "started_at": _iso(render.started_at) if started else None,
        "completed_at": _iso(completed_at),
        "urls": {
            "get": f"{base}/v1/predictions/{render.id}",
            "cancel": f"{base}/v1/predictions/{render.id}/cancel",
        },
    }
    if render.webhook:
        prediction["webhook"] = render.webhook
        prediction["webhook_events_filter"] = render.extra["events"]
    if phase is Phase.SUCCEEDED:
        prediction["metrics"] = {
            "predict_time": round(render.render_s, 3),
            "total_time": round(render.queue_s + render.render_s, 3),
        }
    return prediction


def _model_of_version(version: Any) -> tuple[str, str | None]:
    if not isinstance(version, str) or not version:
        return "", None
    model, _sep, digest = version.partition(":")
    if "/" in model:
        return model, digest or hashlib.sha256(model.encode()).hexdigest()
    return "sandbox/version-" + version[:12], version


def _prefer_wait(header: str) -> float:
    for preference in header.split(","):
        name, _sep, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return _MAX_WAIT_S
        try:
            return float(min(max(int(value), 1), _MAX_WAIT_S))
        except ValueError:
            return 0
    return 0


def _input_problem(description: str) -> Response:
    return _problem(
        422,
        "Input validation failed",
        f"- input: {description}\n",
        invalid_fields=[{"type": "required", "field": "input", "description": description}],
    )


def _fault_response(fault: Fault) -> Response:
    if fault.status == 429:
        return _problem(
            429,
            "Request was throttled",
            fault.message or "Request was throttled (sandbox fault)",
            retry_after=fault.retry_after,
        )
    return _problem(fault.status, "Server error", fault.message or f"Sandbox fault {fault.status}")
