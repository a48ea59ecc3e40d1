"""Following each media task from submission to a terminal state.

The control DB is the source of truth; a `TaskRequested` only says "look at this task".
For each task in flight one asyncio task (a *follower*) runs here:

1. claim the submission (one conditional UPDATE: only one claimant ever submits — the DB
   guard, since none of fal, Replicate or OpenAI deduplicates submissions), submit through
   the route's adapter, falling over to the model's next route when a provider refuses;
2. poll with backoff (and take provider callbacks when they come) and map the provider's
   state onto Kie's: queued → queuing, running → generating;
3. at success copy every result into aig's storage, then bill; at failure, or past the
   model's deadline (cancelled upstream, best effort), release the reservation at no cost.

Every change is published *before* it is recorded, and flushed (to Kafka or the disk
spool) first: a crash in between only repeats the publication with the same event ids
(`uuid5` of task and state), which billing and webhooks deduplicate, instead of losing it.
The record is then moved with a conditional update, so two followers of one task (after a
restart, or on two replicas) never record, bill or announce one change twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from aig.events.v1 import events_pb2 as events
from aig_common import tracing
from aig_common.contracts import TASK_EVENTS_TOPIC, USAGE_TOPIC
from aig_common.events import EventPublisher
from aig_common.money import apply_markup
from catalog.media import MediaCatalog
from controldb.models import Task
from controldb.tasks import (
    FAIL,
    GENERATING,
    IN_FLIGHT,
    QUEUING,
    SUCCESS,
    TERMINAL,
    WAITING,
    TaskStore,
    now_ms,
    task_record,
)

from .links import ResultLinks
from .providers.base import (
    MediaProvider,
    MediaSubmission,
    ProviderError,
    ProviderState,
    ProviderStatus,
)

log = logging.getLogger("jobs")

_EVENT_NAMESPACE = uuid.UUID("2f6b9c1e-7a43-4f0e-9d1c-5b8e3a6f0c21")
SUBMIT_RETRIES = 3

TASK_TRANSITIONS = Counter(
    "aig_jobs_transitions_total", "Task state changes by state and provider", ["state", "provider"]
)
TASKS_FOLLOWED = Gauge("aig_jobs_tasks_followed", "Tasks this process is following")
PROVIDER_CALLS = Counter(
    "aig_jobs_provider_calls_total", "Calls to media providers", ["provider", "call", "outcome"]
)

_STATE_ENUM = {
    WAITING: events.TASK_STATE_WAITING,
    QUEUING: events.TASK_STATE_QUEUING,
    GENERATING: events.TASK_STATE_GENERATING,
    SUCCESS: events.TASK_STATE_SUCCESS,
    FAIL: events.TASK_STATE_FAIL,
}
_FORWARD = {QUEUING: (WAITING,), GENERATING: (WAITING, QUEUING)}


def event_id(task_id: str, what: str) -> str:
    """The same id every time this task reaches this point, so a repeat is a duplicate."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{task_id}:{what}"))


@dataclass(frozen=True, slots=True)
class Lease:
    """Which replica this is (`AIG_INSTANCE_ID`, stable across its restarts: a pod's name)
    and how long its claim on a task lasts unrenewed (`AIG_JOBS_LEASE_S`). Leases are
    renewed every third of that, so a replica that went away for good has its tasks
    adopted by another within about one lease."""

    owner: str
    duration_s: float = 30.0

    @property
    def renew_every_s(self) -> float:
        return self.duration_s / 3

    def until_ms(self) -> int:
        return now_ms() + int(self.duration_s * 1000)


@dataclass(frozen=True, slots=True)
class Polling:
    initial_s: float
    max_s: float
    submission_grace_s: float
    factor: float = 1.5


class TaskRunner:
    def __init__(
        self,
        tasks: TaskStore,
        catalog: MediaCatalog,
        providers: Mapping[str, MediaProvider],
        links: ResultLinks,
        publisher: EventPublisher,
        polling: Polling,
        callback_base: str = "",
        lease: Lease | None = None,
    ) -> None:
        self._tasks = tasks
        self._lease = lease or Lease(owner="jobs")
        self._catalog = catalog
        self._providers = providers
        self._links = links
        self._publisher = publisher
        self._polling = polling
        self._callback_base = callback_base.rstrip("/")
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # Verified provider callbacks waiting for their task's follower.
        self._callbacks: dict[str, ProviderStatus] = {}
        # Submissions between their claim and the provider's answer being recorded: a
        # shutdown lets them finish, since one cut off here can never be sent again (the
        # task would fail as submission_interrupted). Set while there are none.
        self._submitting = 0
        self._no_submissions = asyncio.Event()
        self._no_submissions.set()
        self._stopping = False

    # -- entry points ----------------------------------------------------------------------

    async def on_requested(self, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        """`headers`: the record's Kafka headers, whose trace context (the edge's createTask)
        the task's follower continues."""
        request = events.TaskRequested.FromString(payload)
        if request.task_id:
            parent = None
            if headers and tracing.enabled():
                parent = tracing.context_from_headers(headers.items())
            self.follow(request.task_id, parent)

    async def resume(self) -> int:
        """At start: follows every task in flight that no other live replica follows (this
        replica's own from before a restart, those whose lease ran out, those never
        leased). Returns how many."""
        adopted = await self._tasks.adopt(self._lease.owner, self._lease.until_ms(), at_start=True)
        for task_id in adopted:
            self.follow(task_id)
        return len(adopted)

    async def keep_leases(self) -> None:
        """Runs until cancelled: renews the leases of the tasks followed here and adopts
        the tasks of replicas that went away (a scale-down, a node lost), whose leases ran
        out or were released at their graceful stop."""
        while True:
            await asyncio.sleep(self._lease.renew_every_s)
            if self._stopping:
                return
            try:
                until = self._lease.until_ms()
                await self._tasks.renew_leases(self._lease.owner, list(self._followers), until)
                adopted = await self._tasks.adopt(self._lease.owner, until)
                for task_id in adopted:
                    self.follow(task_id)
                if adopted:
                    log.info("adopted %d tasks no other replica follows", len(adopted))
            except Exception:
                log.warning("renewing task leases failed; retrying", exc_info=True)

    def follow(self, task_id: str, parent: tracing.Context | None = None) -> None:
        if task_id in self._followers:
            return
        follower = asyncio.create_task(
            self._follow_traced(task_id, parent), name=f"follow-{task_id}"
        )
        self._followers[task_id] = follower
        self._wakeups[task_id] = asyncio.Event()
        TASKS_FOLLOWED.set(len(self._followers))

        def forget(_: asyncio.Task[None]) -> None:
            self._followers.pop(task_id, None)
            self._wakeups.pop(task_id, None)
            self._callbacks.pop(task_id, None)
            TASKS_FOLLOWED.set(len(self._followers))

        follower.add_done_callback(forget)

    async def on_provider_callback(
        self, provider_name: str, task_id: str, headers: dict[str, str], body: bytes
    ) -> bool:
        """A provider's own callback, verified by its adapter, then handed to the task's
        follower (so one task's changes are always applied one at a time). False when it
        is not for a task this provider is running."""
        provider = self._providers.get(provider_name)
        task = await self._tasks.get(task_id)
        if provider is None or task is None or task.provider != provider_name:
            return False
        status = await provider.parse_callback(headers, body)
        if status.provider_task_id and status.provider_task_id != task.provider_task_id:
            return False
        if task.state not in TERMINAL:
            self._callbacks[task_id] = status
            self.follow(task_id)
            self._wakeups[task_id].set()
        return True

    async def stop(self, drain_s: float = 0.0) -> None:
        """Claims no new submission, lets those in flight finish (at most `drain_s`), then
        stops following: another replica, or this one restarted, resumes every task in
        flight from the control DB."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_submissions.wait(), drain_s)
        followed = list(self._followers)
        followers = list(self._followers.values())
        for follower in followers:
            follower.cancel()
        for follower in followers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
        try:
            # Another replica adopts them at its next renewal instead of after the lease.
            await self._tasks.release_leases(self._lease.owner, followed)
        except Exception:
            log.warning("releasing task leases failed; they run out instead", exc_info=True)
        await self._publisher.flush()

    # -- one task --------------------------------------------------------------------------

    async def _follow_traced(self, task_id: str, parent: tracing.Context | None) -> None:
        """One span over following the task, in the createTask call's trace when the request
        carried it (a task resumed after a restart starts a trace of its own); the events
        the follower publishes carry it on to webhooks and billing."""
        with tracing.span("jobs task", parent=parent, kind=tracing.SpanKind.CONSUMER) as span:
            tracing.set_attributes(span, {"aig.task_id": task_id})
            await self._follow(task_id)

    async def _follow(self, task_id: str) -> None:
        delay = self._polling.initial_s
        deadline_ms = now_ms() + int(self._polling.max_s * 1000)
        # The lease at once, so no other replica's renewal round adopts the task meanwhile.
        with contextlib.suppress(Exception):  # a DB hiccup: keep_leases renews it shortly
            await self._tasks.renew_leases(self._lease.owner, [task_id], self._lease.until_ms())
        while True:
            try:
                task = await self._tasks.get(task_id)
                if task is None or task.state in TERMINAL:
                    return
                deadline_ms = task.deadline_ms
                if now_ms() >= task.deadline_ms:
                    await self._expire(task)
                    return
                if not task.provider_task_id:
                    if not await self._submit_or_wait(task):
                        return
                    task = await self._tasks.get(task_id)
                    if task is None or task.state in TERMINAL:
                        return
                called_back = self._callbacks.pop(task_id, None)
                if called_back is not None:
                    await self._apply(task, called_back)
                elif task.provider_task_id:
                    await self._poll(task)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database or storage hiccup: keep following; the next round retries.
                log.exception("following task %s failed; retrying", task_id)
            # Sleep until the next poll, the deadline, or a provider callback's wake-up.
            wake = self._wakeups[task_id]
            remaining_s = max(0.0, (deadline_ms - now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(delay, remaining_s + 0.05))
            wake.clear()
            delay = min(delay * self._polling.factor, self._polling.max_s)

    async def _submit_or_wait(self, task: Task) -> bool:
        """Submits the task if nobody has; False when it can never be submitted now."""
        if task.submit_claimed_at_ms is not None:
            waited_s = (now_ms() - task.submit_claimed_at_ms) / 1000
            if waited_s > self._polling.submission_grace_s:
                # Claimed, never recorded: the submitter died mid-call. Sending it again
                # could render (and cost) twice, so the task fails at no charge instead.
                await self._fail(
                    task, "submission_interrupted", "aig lost track of the submission; retry."
                )
                return False
            return True  # someone else is submitting: poll once they record it
        if self._stopping:
            return True  # draining: the next replica (or this one restarted) submits it
        if not await self._tasks.claim_submission(task.id):
            return True
        self._submitting += 1
        self._no_submissions.clear()
        try:
            await self._submit(task)
        finally:
            self._submitting -= 1
            if not self._submitting:
                self._no_submissions.set()
        return True

    async def _submit(self, task: Task) -> None:
        model = self._catalog.model(task.model)
        if model is None:
            await self._fail(task, "model_unavailable", f"model {task.model} is not served")
            return
        task_input = orjson.loads(task.param).get("input") or {}
        last_error = "no provider route is configured"
        for route in model.routes:
            provider = self._providers.get(route.provider)
            if provider is None:
                last_error = f"provider {route.provider} is not available"
                continue
            submission = MediaSubmission(
                task_id=task.id,
                upstream_model=route.upstream_id,
                input=task_input,
                callback_url=(
                    f"{self._callback_base}/{route.provider}/{task.id}"
                    if self._callback_base
                    else None
                ),
            )
            try:
                status = await self._submit_with_retries(provider, route.provider, submission)
            except ProviderError as error:
                last_error = f"{route.provider}: {error}"
                if not error.retryable and 400 <= error.status < 500 and error.status != 429:
                    break  # the input itself was refused; another route would refuse it too
                continue
            moved = await self._tasks.move(
                task.id,
                (WAITING,),
                provider=route.provider,
                upstream_model=route.upstream_id,
                provider_task_id=status.provider_task_id or task.id,
            )
            if moved is not None:
                await self._apply(moved, status)
            return
        await self._fail(task, "submission_failed", last_error)

    async def _submit_with_retries(
        self, provider: MediaProvider, name: str, submission: MediaSubmission
    ) -> ProviderStatus:
        delay = 0.5
        for attempt in range(SUBMIT_RETRIES):
            try:
                status = await provider.submit(submission)
                PROVIDER_CALLS.labels(name, "submit", "ok").inc()
                return status
            except ProviderError as error:
                PROVIDER_CALLS.labels(name, "submit", "error").inc()
                # Only a refusal the provider *answered* (429/5xx) is safe to retry: after
                # a timeout the render may have started, and a resubmission would double it.
                if not (error.retryable and error.status) or attempt == SUBMIT_RETRIES - 1:
                    raise
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def _poll(self, task: Task) -> None:
        provider = self._providers.get(task.provider)
        if provider is None:
            return  # configured away since submission: the deadline will fail it
        try:
            status = await provider.poll(task.provider_task_id, task.upstream_model)
            PROVIDER_CALLS.labels(task.provider, "poll", "ok").inc()
        except ProviderError as error:
            PROVIDER_CALLS.labels(task.provider, "poll", "error").inc()
            if not error.retryable:
                await self._fail(task, "provider_error", str(error))
            return
        await self._apply(task, status)

    async def _apply(self, task: Task, status: ProviderStatus) -> None:
        if status.state is ProviderState.SUCCEEDED:
            await self._succeed(task, status)
        elif status.state is ProviderState.FAILED:
            await self._fail(
                task, status.fail_code or "generation_failed", status.fail_message or "failed"
            )
        elif status.state is ProviderState.RUNNING:
            await self._advance(task, GENERATING)
        elif status.state is ProviderState.QUEUED:
            await self._advance(task, QUEUING)

    async def _advance(self, task: Task, state: str) -> None:
        if task.state in _FORWARD[state]:
            await self._change(task, _FORWARD[state], state=state)

    async def _succeed(self, task: Task, status: ProviderStatus) -> None:
        provider = self._providers[task.provider]
        keys: list[str] = []
        for index, url in enumerate(status.result_urls):
            result = await provider.fetch_result(url)
            key = f"{task.id}/{index}{_extension(result.content_type)}"
            # Stored under a fixed key: a second copy after a crash replaces the first.
            await self._links.store.put(key, result.data, result.content_type)
            keys.append(key)
        if not keys:
            await self._fail(task, "no_output", "the provider finished without a result")
            return
        units = task.units
        if status.units is not None and 0 < status.units < units:
            units = status.units  # the provider made less than asked for: bill what it made
        upstream = task.unit_price_nano_usd * units
        billed = min(apply_markup(upstream, task.markup_basis_points), task.reserved_nano_usd)
        await self._change(
            task,
            IN_FLIGHT,
            usage=(units, upstream),
            state=SUCCESS,
            result_keys=orjson.dumps(keys).decode(),
            billed_nano_usd=billed,
            complete_time_ms=now_ms(),
        )

    async def _fail(self, task: Task, code: str, message: str) -> None:
        # A failed usage event releases the reservation at settlement and costs nothing.
        await self._change(
            task,
            IN_FLIGHT,
            usage=(0, 0),
            state=FAIL,
            fail_code=code[:64],
            fail_msg=message[:2000],
            billed_nano_usd=0,
            complete_time_ms=now_ms(),
        )

    async def _change(
        self,
        task: Task,
        expected: tuple[str, ...],
        *,
        usage: tuple[int, int] | None = None,
        **values: Any,
    ) -> None:
        """Publishes the change (and, at the end, the usage (units, upstream cost) that
        settles the reservation), waits until that is durable, then records it."""
        values.setdefault("update_time_ms", values.get("complete_time_ms") or now_ms())
        changed = _with(task, **values)
        if usage is not None:
            self._publish_usage(changed, *usage)
        await self._announce(changed)
        await self._tasks.move(task.id, expected, **values)

    async def _expire(self, task: Task) -> None:
        provider = self._providers.get(task.provider)
        if provider is not None and task.provider_task_id:
            with contextlib.suppress(Exception):
                await provider.cancel(task.provider_task_id, task.upstream_model)
        await self._fail(task, "timeout", "the task passed its model's deadline; not charged")

    # -- events ----------------------------------------------------------------------------

    async def _announce(self, task: Task) -> None:
        """Publishes the state change and waits until it is in Kafka or the disk spool."""
        urls = self._links.sign_all(
            orjson.loads(task.result_keys or "[]") if task.state == SUCCESS else [], time.time()
        )
        record = task_record(task, urls)
        event = events.TaskEvent(
            event_id=event_id(task.id, task.state),
            occurred_at_ms=task.update_time_ms,
            task_id=task.id,
            account_id=task.account_id,
            state=_STATE_ENUM[task.state],
            result=orjson.dumps({"resultUrls": urls}) if task.state == SUCCESS else b"",
            error_message=task.fail_msg if task.state == FAIL else "",
            callback_url=task.callback_url or "",
            fail_code=task.fail_code if task.state == FAIL else "",
            record=orjson.dumps(record),
        )
        self._publisher.publish(
            TASK_EVENTS_TOPIC, task.id, event.SerializeToString(), tracing.kafka_headers()
        )
        await self._publisher.flush()
        TASK_TRANSITIONS.labels(task.state, task.provider).inc()

    def _publish_usage(self, task: Task, units: int, upstream: int) -> None:
        model = self._catalog.model(task.model)
        succeeded = task.state == SUCCESS
        billed = task.billed_nano_usd if succeeded else 0
        done = task.complete_time_ms or now_ms()
        latency = max(0, done - task.create_time_ms)
        event = events.UsageEvent(
            event_id=event_id(task.id, "usage"),
            occurred_at_ms=done,
            request_id=task.request_id,
            account_id=task.account_id,
            key_id=task.key_id,
            workspace_id=task.workspace_id or "",
            endpoint="jobs",
            model=task.model,
            provider=task.provider,
            outcome=events.CALL_OUTCOME_SUCCEEDED if succeeded else events.CALL_OUTCOME_FAILED,
            http_status=200 if succeeded else 502,
            error_code="" if succeeded else task.fail_code,
            upstream_cost_nano_usd=upstream,
            markup_basis_points=task.markup_basis_points,
            billed_cost_nano_usd=billed,
            latency_ms=min(latency, 2**31 - 1),
            attempts=[
                events.Attempt(
                    provider=task.provider,
                    upstream_model=task.upstream_model,
                    status=200 if succeeded else 502,
                    latency_ms=min(latency, 2**31 - 1),
                )
            ],
            reservation_id=task.reservation_id,
            unit=model.unit if model is not None else "",
            units=units,
            unit_price_nano_usd=task.unit_price_nano_usd,
        )
        self._publisher.publish(
            USAGE_TOPIC, task.account_id, event.SerializeToString(), tracing.kafka_headers()
        )


def _with(task: Task, **values: Any) -> Task:
    """A detached copy of the row with `values` applied: the record as it is about to be."""
    columns = {column.key: getattr(task, column.key) for column in Task.__table__.columns}
    return Task(**{**columns, **values})


def _extension(content_type: str) -> str:
    base = content_type.split(";")[0].strip().lower()
    known = {"image/jpeg": ".jpg", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3"}
    return known.get(base) or mimetypes.guess_extension(base) or ".bin"
