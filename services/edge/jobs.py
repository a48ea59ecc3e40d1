"""The async media surface, in the shape of Kie's market API: createTask, recordInfo, a list
of one's own tasks, and the signed result URLs that serve finished files.

Every answer carries Kie's envelope (`code`, `msg`, `data`); errors keep their HTTP status
and carry OpenAI's `error` object too, so a Kie client and an OpenAI-style client both read
them. The order of createTask is fixed: schema validation (422) → callback URL check (422)
→ Idempotency-Key replay (same task, or 409) → reservation of the worst case (402) → the
task row (which stretches the reservation to the model's deadline) → `TaskRequested`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aig.events.v1 import events_pb2 as events
from aig_common import tracing
from aig_common.callback_urls import CallbackUrlRefused, check_callback_url
from aig_common.contracts import TASKS_TOPIC
from aig_common.errors import APIError
from aig_common.events import EventPublisher
from aig_common.ids import uuid7_text
from catalog.media import InputRejected, MediaCatalog
from controldb import AuthenticatedKey, KeyStore
from controldb.models import Task
from controldb.tasks import (
    MAX_LIST_LIMIT,
    STATES,
    WAITING,
    IdempotencyConflict,
    TaskStore,
    default_callback,
    new_task_id,
    now_ms,
    result_keys,
    task_record,
    utc_from_ms,
)
from controldb.webhooks import WebhookStore
from jobs.links import ResultLinks
from jobs.storage import ObjectNotFound, ResultUrlExpired, ResultUrlRejected

from .admission import Admissions, note_rate
from .http import kie_error_body, read_body, request_id, require_json
from .metrics import note_model
from .v1 import authenticate

JSON = "application/json"
# A reservation outlives the model's deadline by this much: the jobs service fails the task
# at its deadline and billing settles it within seconds, so the cap is never freed early.
RESERVATION_SLACK = timedelta(minutes=10)
MAX_IDEMPOTENCY_KEY = 255

Handler = Callable[[Request], Awaitable[Response]]
# Delivery state of a task's callback, filled in by the webhooks service's tables.
CallbackLookup = Callable[[Task], Awaitable[dict[str, Any] | None]]


def callback_state_from(webhooks: WebhookStore) -> CallbackLookup:
    """recordInfo's `callback`: the webhooks service's delivery of the task, once it has
    one; before that, `pending` (or null for a task without a callBackUrl)."""

    async def lookup(task: Task) -> dict[str, Any] | None:
        if not task.callback_url:
            return None
        deliveries = await webhooks.deliveries_of_task(task.id, task.account_id)
        if not deliveries:
            return default_callback(task)
        last = deliveries[-1]
        return {
            "state": last.state,
            "attempts": last.attempts,
            "lastStatus": last.last_status,
            "nextAttemptAt": (
                int(last.next_attempt_at.timestamp() * 1000) if last.next_attempt_at else None
            ),
        }

    return lookup


def kie_ok(data: Any) -> Response:
    return Response(orjson.dumps({"code": 200, "msg": "success", "data": data}), media_type=JSON)


def kie_error(exc: APIError) -> Response:
    """Both envelopes: Kie's `code`/`msg` and OpenAI's `error`, with the real HTTP status."""
    return Response(
        kie_error_body(exc), status_code=exc.status, headers=exc.headers, media_type=JSON
    )


def _kie_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as exc:
            return kie_error(exc)

    return wrapped


def _unprocessable(message: str, param: str, code: str = "invalid_input") -> APIError:
    return APIError(422, message, param=param, code=code)


class JobRoutes:
    def __init__(
        self,
        store: KeyStore,
        admissions: Admissions,
        catalog: MediaCatalog,
        tasks: TaskStore,
        publisher: EventPublisher,
        links: ResultLinks,
        max_body_bytes: int,
        callback_state: CallbackLookup | None = None,
    ) -> None:
        self._store = store
        self._admissions = admissions
        self._catalog = catalog
        self._tasks = tasks
        self._publisher = publisher
        self._links = links
        self._max_body_bytes = max_body_bytes
        self._callback_state = callback_state

    def routes(self) -> list[Route]:
        return [
            Route("/v1/jobs/createTask", _kie_errors(self.create_task), methods=["POST"]),
            Route("/v1/jobs/recordInfo", _kie_errors(self.record_info), methods=["GET"]),
            Route("/v1/jobs", _kie_errors(self.list_tasks), methods=["GET"]),
            Route(
                self._links.path_prefix + "{key:path}",
                _kie_errors(self.result_file),
                methods=["GET", "HEAD"],
            ),
        ]

    # -- createTask ------------------------------------------------------------------------

    async def create_task(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        require_json(request)
        raw = await read_body(request, self._max_body_bytes)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise APIError(400, "The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise _unprocessable("The request body must be a JSON object.", "body")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise _unprocessable("'model' is required and must be a string.", "model")
        model = self._catalog.model(model_id)
        if model is None:
            raise _unprocessable(
                f"The model `{model_id}` is not a media model aig serves (see GET /v1/models).",
                "model",
                code="model_not_found",
            )
        note_model(model_id)  # found in the media catalog, so a bounded label
        try:
            task_input = model.validate_input(body.get("input"))
        except InputRejected as rejected:
            raise _unprocessable(str(rejected), rejected.field) from None
        callback_url = body.get("callBackUrl")
        if callback_url is not None and callback_url != "":
            try:
                await check_callback_url(callback_url)
            except CallbackUrlRefused as refused:
                raise _unprocessable(
                    str(refused), "callBackUrl", code="callback_url_refused"
                ) from None
        else:
            callback_url = None

        param = orjson.dumps(
            {"model": model_id, "callBackUrl": callback_url, "input": task_input}
        ).decode()
        digest = hashlib.sha256(raw).hexdigest()
        idempotency_key = self._idempotency_key(request)
        if idempotency_key is not None:
            earlier = await self._tasks.by_idempotency_key(key.account_id, idempotency_key)
            if earlier is not None:
                return self._replay(earlier, digest)

        units = model.units_for(task_input)
        unit_price = model.unit_price_for(task_input)
        admission = await self._admissions.media(key, unit_price * units)
        note_rate(request, admission)
        created = now_ms()
        deadline = created + model.deadline_s * 1000
        route = model.routes[0]
        task = Task(
            id=new_task_id(),
            account_id=key.account_id,
            key_id=key.key_id,
            workspace_id=key.workspace_id,
            request_id=request_id(request),
            model=model_id,
            state=WAITING,
            param=param,
            callback_url=callback_url,
            provider=route.provider,
            upstream_model=route.upstream_id,
            provider_task_id="",
            units=units,
            unit_price_nano_usd=unit_price,
            markup_basis_points=admission.markup_basis_points,
            reservation_id=admission.reservation_id,
            reserved_nano_usd=admission.amount_nano_usd,
            billed_nano_usd=0,
            result_keys="[]",
            fail_code="",
            fail_msg="",
            idempotency_key=idempotency_key,
            body_sha256=digest,
            create_time_ms=created,
            update_time_ms=created,
            deadline_ms=deadline,
        )
        try:
            stored = await self._tasks.create(task, utc_from_ms(deadline) + RESERVATION_SLACK)
        except IdempotencyConflict:
            await self._admissions.release(admission)
            raise self._conflict() from None
        except BaseException:
            await self._admissions.release(admission)
            raise
        if stored.id != task.id:  # a concurrent request with the same key won
            await self._admissions.release(admission)
            return kie_ok({"taskId": stored.id})
        self._publish(stored, key, task_input)
        return kie_ok({"taskId": stored.id})

    def _idempotency_key(self, request: Request) -> str | None:
        value = request.headers.get("idempotency-key")
        if value is None:
            return None
        value = value.strip()
        if not value or len(value) > MAX_IDEMPOTENCY_KEY:
            raise APIError(
                400,
                f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        return value

    def _replay(self, earlier: Task, digest: str) -> Response:
        if earlier.body_sha256 != digest:
            raise self._conflict()
        return kie_ok({"taskId": earlier.id})

    @staticmethod
    def _conflict() -> APIError:
        return APIError(
            409,
            "This Idempotency-Key was already used with a different request body.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )

    def _publish(self, task: Task, key: AuthenticatedKey, task_input: dict[str, Any]) -> None:
        event = events.TaskRequested(
            event_id=uuid7_text(),
            occurred_at_ms=task.create_time_ms,
            task_id=task.id,
            account_id=task.account_id,
            key_id=task.key_id,
            model=task.model,
            input=task.param.encode(),
            callback_url=task.callback_url or "",
            reservation_id=task.reservation_id,
            workspace_id=key.workspace_id or "",
            request_id=task.request_id,
        )
        self._publisher.publish(
            TASKS_TOPIC, task.account_id, event.SerializeToString(), tracing.kafka_headers()
        )

    # -- reading ---------------------------------------------------------------------------

    async def _record(self, task: Task) -> dict[str, Any]:
        callback = await self._callback_state(task) if self._callback_state else None
        urls = self._links.sign_all(result_keys(task), time.time())
        return task_record(task, urls, callback)

    async def record_info(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        task_id = request.query_params.get("taskId", "").strip()
        if not task_id:
            raise _unprocessable("'taskId' is required.", "taskId")
        task = await self._tasks.get_owned(key.account_id, task_id)
        if task is None:
            raise APIError(
                404, f"No task {task_id!r} was found.", param="taskId", code="task_not_found"
            )
        return kie_ok(await self._record(task))

    async def list_tasks(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        query = request.query_params
        state = query.get("state") or None
        if state is not None and state not in STATES:
            raise _unprocessable(f"'state' must be one of {', '.join(STATES)}.", "state")
        raw_limit = query.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
            raise _unprocessable(f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}.", "limit")
        page = await self._tasks.list_owned(
            key.account_id,
            state=state,
            model=query.get("model") or None,
            limit=int(raw_limit),
            after=query.get("after") or None,
        )
        records = [await self._record(task) for task in page.tasks]
        return kie_ok(
            {
                "tasks": records,
                "hasMore": page.has_more,
                "nextAfter": page.tasks[-1].id if page.has_more and page.tasks else None,
            }
        )

    # -- results ---------------------------------------------------------------------------

    async def result_file(self, request: Request) -> Response:
        """A stored result, for whoever holds an unexpired signed URL (no API key: the URL
        is the credential, so a callback receiver or a browser can fetch it)."""
        try:
            stored = await self._links.fetch(
                request.path_params["key"],
                request.query_params.get("expires", ""),
                request.query_params.get("signature", ""),
                time.time(),
            )
        except ResultUrlExpired:
            raise APIError(
                403,
                "This result URL has expired; read the task again for a fresh one.",
                code="result_url_expired",
            ) from None
        except ResultUrlRejected:
            raise APIError(403, "This result URL is invalid.", code="result_url_invalid") from None
        except ObjectNotFound:
            raise APIError(404, "No such result.", code="result_not_found") from None
        headers = {"cache-control": "private, max-age=300"}
        if request.method == "HEAD":
            headers["content-length"] = str(len(stored.data))
            return Response(b"", media_type=stored.content_type, headers=headers)
        return Response(stored.data, media_type=stored.content_type, headers=headers)
