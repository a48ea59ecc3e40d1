"""fal.ai's queue API (`https://queue.fal.run`), served under `/fal`.

- `POST /fal/{model_id}[?fal_webhook=url]` submits (any `owner/alias[/path]` model id);
- `GET /fal/{owner}/{alias}/requests/{id}/status[?logs=1]`: 202 IN_QUEUE / IN_PROGRESS,
  200 COMPLETED (the subpath of the model id is dropped here, as fal does);
- `GET /fal/{owner}/{alias}/requests/{id}`: the model's output, 400 while unfinished;
- `PUT /fal/{owner}/{alias}/requests/{id}/cancel`: 202 CANCELLATION_REQUESTED or 400
  ALREADY_COMPLETED;
- `GET /fal/files/{name}`: the rendered files (fal's CDN, `v3.fal.media`);
- `GET /fal/.well-known/jwks.json`: the Ed25519 key that signs webhooks
  (`rest.alpha.fal.ai/.well-known/jwks.json` at fal).

Webhooks are POSTed to `fal_webhook` when a render finishes: `{request_id,
gateway_request_id, status: OK|ERROR, payload, error?}`, signed with Ed25519 over
`request_id \\n user_id \\n timestamp \\n sha256hex(body)`, in the `X-Fal-Webhook-*` headers.
A model input without `prompt` completes with the model's 422, as fal's models answer.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.providers.common import log_without_body, media_call_refused, read_and_log
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

PROVIDER = "fal"
PREFIX = "/fal"
KEY_ID = "sandbox-fal-1"


def _detail(message: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"detail": message}, status, headers)


def _key(request: Request) -> str:
    scheme, _sep, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "key" else ""


def _public_key_x(state: SandboxState) -> str:
    raw = state.fal_signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def user_id_for(owner: str) -> str:
    """fal's webhook `user_id`: who owns the key that submitted the request."""
    return f"sandbox-user-{owner[:8]}"


def routes(state: SandboxState) -> list[Route]:
    async def guarded(request: Request) -> Response | None:
        return await media_call_refused(
            state,
            PROVIDER,
            has_key=bool(_key(request)),
            unauthorised=lambda: _detail(
                "Authentication is required to access this resource.", 401
            ),
            fault_response=_fault_response,
        )

    def urls(request: Request, model_id: str, request_id: str) -> dict[str, str]:
        owner_alias = "/".join(model_id.split("/")[:2])
        base = f"{str(request.base_url).rstrip('/')}{PREFIX}/{owner_alias}/requests/{request_id}"
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def find(request: Request) -> Render | Response:
        render = state.renders.get(request.path_params["request_id"])
        owner_alias = f"{request.path_params['owner']}/{request.path_params['alias']}"
        if (
            render is None
            or render.provider != PROVIDER
            or render.owner != owner_of(_key(request))
            or "/".join(render.model.split("/")[:2]) != owner_alias
        ):
            return _detail("Request not found", 404)
        return render

    async def logged_and_found(request: Request) -> Render | Response:
        """The steps of every call about one request: log it, check it, find it."""
        log_without_body(request, state, PROVIDER)
        refused = await guarded(request)
        return refused if refused is not None else find(request)

    async def submit(request: Request) -> Response:
        body = await read_and_log(request, state, PROVIDER)
        refused = await guarded(request)
        if refused is not None:
            return refused
        if isinstance(body, InvalidBody):
            return _detail(str(body), 422)
        model_id = request.path_params["model_id"].strip("/")
        if len(model_id.split("/")) < 2:
            return _detail(f"Application '{model_id}' not found", 404)
        request_id = str(uuid.uuid4())
        render_fault = state.faults.take(PROVIDER, streaming=False, render=True)
        render = new_render(
            request_id,
            PROVIDER,
            model_id,
            body,
            api_key=_key(request),
            queue_ms=state.settings.media_queue_ms,
            render_ms=state.settings.media_render_ms,
            failure=_failure(body, render_fault),
            webhook=request.query_params.get("fal_webhook") or None,
            extra={"files_base": f"{str(request.base_url).rstrip('/')}{PREFIX}/files"},
        )
        state.renders.add(render, _send_webhook if render.webhook else None)
        return json_response(
            {
                "status": "IN_QUEUE",
                "request_id": request_id,
                **urls(request, model_id, request_id),
                "queue_position": 0,
            }
        )

    async def status(request: Request) -> Response:
        render = await logged_and_found(request)
        if isinstance(render, Response):
            return render
        with_logs = request.query_params.get("logs", "").lower() in ("1", "true")
        phase = render.phase()
        body: dict[str, Any] = {
            "request_id": render.id,
            **urls(request, render.model, render.id),
            "logs": _logs(render, phase) if with_logs else None,
            "metrics": {},
        }
        if phase is Phase.QUEUED:
            return json_response({"status": "IN_QUEUE", "queue_position": 0, **body}, 202)
        if phase is Phase.RUNNING:
            return json_response({"status": "IN_PROGRESS", **body}, 202)
        body["status"] = "COMPLETED"
        body["metrics"] = {"inference_time": round(render.render_s, 3)}
        error = _error_of(render, phase)
        if error is not None:
            body["error"], body["error_type"] = error
        return json_response(body, 200)

    async def result(request: Request) -> Response:
        render = await logged_and_found(request)
        if isinstance(render, Response):
            return render
        phase = render.phase()
        if phase in (Phase.QUEUED, Phase.RUNNING):
            return _detail("Request is still in progress", 400)
        if phase is Phase.CANCELLED:
            return _detail("Request was cancelled", 400, {"x-fal-error-type": "request_cancelled"})
        if render.failure is not None:
            return json_response(
                {"detail": render.failure.detail},
                render.failure.status,
                {"x-fal-error-type": _error_type(render.failure)},
            )
        return json_response(output_of(render))

    async def cancel(request: Request) -> Response:
        render = await logged_and_found(request)
        if isinstance(render, Response):
            return render
        if render.cancel(time.time()):
            return json_response({"status": "CANCELLATION_REQUESTED"}, 202)
        return json_response({"status": "ALREADY_COMPLETED"}, 400)

    async def files(request: Request) -> Response:
        found = state.renders.file(request.path_params["name"])
        if found is None:
            return _detail("File not found", 404)
        data, content_type = found
        return Response(data, media_type=content_type)

    async def jwks(request: Request) -> Response:
        key = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _public_key_x(state),
            "kid": KEY_ID,
            "use": "sig",
            "alg": "EdDSA",
        }
        return json_response({"keys": [key]})

    async def _send_webhook(render: Render) -> None:
        phase = render.phase()
        if phase is Phase.CANCELLED or render.webhook is None:
            return  # fal sends no completion webhook for a cancelled request
        body: dict[str, Any] = {"request_id": render.id, "gateway_request_id": render.id}
        if render.failure is None:
            body |= {"status": "OK", "payload": output_of(render)}
        else:
            body |= {
                "status": "ERROR",
                "error": f"Invalid status code: {render.failure.status}",
                "payload": {"detail": render.failure.detail},
            }
        raw = orjson.dumps(body)
        headers = sign_webhook(state, render.id, user_id_for(render.owner), raw, int(time.time()))
        await post_webhook(
            state.http, render.webhook, raw, headers, state.settings.webhook_attempts
        )

    return [
        Route(f"{PREFIX}/.well-known/jwks.json", jwks, methods=["GET"]),
        Route(f"{PREFIX}/files/{{name}}", files, methods=["GET"]),
        Route(
            f"{PREFIX}/{{owner}}/{{alias}}/requests/{{request_id}}/status", status, methods=["GET"]
        ),
        Route(
            f"{PREFIX}/{{owner}}/{{alias}}/requests/{{request_id}}/cancel", cancel, methods=["PUT"]
        ),
        Route(f"{PREFIX}/{{owner}}/{{alias}}/requests/{{request_id}}", result, methods=["GET"]),
        Route(f"{PREFIX}/{{model_id:path}}", submit, methods=["POST"]),
    ]


def sign_webhook(
    state: SandboxState, request_id: str, user_id: str, body: bytes, timestamp: int
) -> dict[str, str]:
    message = "\n".join(
        (request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest())
    ).encode()
    return {
        "x-fal-webhook-request-id": request_id,
        "x-fal-webhook-user-id": user_id,
        "x-fal-webhook-timestamp": str(timestamp),
        "x-fal-webhook-signature": state.fal_signing_key.sign(message).hex(),
    }


def output_of(render: Render) -> dict[str, Any]:
    """The model's output JSON, in the shape fal's image, video and audio models use."""
    base = render.extra["files_base"]
    files = [
        {
            "url": f"{base}/{output.name}",
            "content_type": output.content_type,
            "file_name": output.name,
        }
        for output in render.outputs
    ]
    seed = render.outputs[0].seed
    if render.kind is MediaKind.IMAGE:
        images = [file | {"width": 64, "height": 64} for file in files]
        return {
            "images": images,
            "seed": seed,
            "has_nsfw_concepts": [False] * len(images),
            "prompt": render.input.get("prompt", ""),
            "timings": {"inference": round(render.render_s, 3)},
        }
    if render.kind is MediaKind.VIDEO:
        return {"video": files[0], "seed": seed}
    return {"audio": files[0]}


def _failure(body: dict[str, Any], fault: Fault | None) -> RenderFailure | None:
    if fault is not None:
        message = fault.message or "Internal server error (sandbox render fault)"
        return RenderFailure(fault.status, message, message)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        missing = [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
        return RenderFailure(422, "field required: prompt", missing)
    return None


def _error_type(failure: RenderFailure) -> str:
    return "validation_error" if failure.status == 422 else "runner_server_error"


def _error_of(render: Render, phase: Phase) -> tuple[str, str] | None:
    if phase is Phase.CANCELLED:
        return "Request was cancelled", "request_cancelled"
    if render.failure is not None:
        return f"Invalid status code: {render.failure.status}", _error_type(render.failure)
    return None


def _logs(render: Render, phase: Phase) -> list[dict[str, Any]]:
    if phase is Phase.QUEUED:
        return []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(render.started_at))
    return [
        {"message": "Rendering (sandbox)", "level": "INFO", "source": "user", "timestamp": stamp}
    ]


def _fault_response(fault: Fault) -> Response:
    headers = {"retry-after": str(fault.retry_after)} if fault.status == 429 else None
    message = fault.message or f"Sandbox fault {fault.status}"
    return _detail(message, fault.status, headers)
