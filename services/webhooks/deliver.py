"""The delivery loop: claims due deliveries from the control DB, POSTs them signed, and
records every attempt.

At-least-once: a delivery's result is written after the receiver answered. A crash between
the receiver's 2xx and that write leaves the row pending under a lease; when the lease runs
out (`AIG_WEBHOOKS_LEASE_S`) the same message is sent again with the same `webhook-id`, which
is what receivers deduplicate on. Nothing that was recorded as delivered is ever sent again
(unless an operator redelivers it), and nothing pending is lost: the row outlives any process.
An attempt that fails before it sends anything hands its lease back, so the row is not left
waiting out the whole lease for a send that never happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from prometheus_client import Counter, Histogram

from aig_common.callback_urls import (
    CallbackUrlRefused,
    allowed_hosts_from_env,
    check_callback_url,
    is_public_address,
)
from controldb.keystore import AccountNotFound
from controldb.webhooks import (
    DEAD,
    DISABLED,
    REFUSED,
    AttemptResult,
    ClaimedDelivery,
    SecretView,
    WebhookStore,
)

from .policy import decide, parse_retry_after
from .settings import WebhooksSettings
from .signing import signature_headers

log = logging.getLogger("webhooks")

ATTEMPTS = Counter("aig_webhook_attempts_total", "Webhook POST attempts by outcome", ["outcome"])
SENDS = Counter(
    "aig_webhook_sends_total",
    "Webhook POSTs by what the receiver did: 2xx, 3xx, 4xx, 5xx, timeout, unreachable "
    "(refused, reset, DNS), or url_refused (the SSRF guard did not send it)",
    ["result"],
)
DEAD_LETTERS = Counter(
    "aig_webhook_dead_letters_total", "Deliveries given up on (retries exhausted, account gone)"
)
_SEND_RESULTS = {
    name: SENDS.labels(name)
    for name in ("2xx", "3xx", "4xx", "5xx", "timeout", "unreachable", "url_refused")
}
ATTEMPT_SECONDS = Histogram(
    "aig_webhook_attempt_seconds",
    "Duration of webhook POST attempts",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
USER_AGENT = "aig-webhooks/1"
# Enough of the receiver's answer to keep the connection reusable; the rest is not read.
MAX_RESPONSE_BYTES = 64 * 1024
# How long an account's secrets are reused without reading them again. A rotation is safe
# within it (the previous secret keeps signing for 24 h); Kie's key turns on or off this late.
SECRETS_TTL_S = 10.0
# Attempts whose results are written in one transaction, at most.
MAX_RECORD_BATCH = 200
# An attempt that failed before sending anything (its secret could not be read, say) is
# tried again this much later; the same as the retry schedule's first delay.
UNSENT_RETRY_S = 5.0


class GuardedResolver(AbstractResolver):
    """Resolves for the HTTP client and drops every address the SSRF guard forbids.

    `check_callback_url` runs before each attempt, but DNS may answer differently a moment
    later (rebinding); resolving through this guard means the connection itself can only go
    to a public (or allow-listed) address.
    """

    def __init__(self, allow_hosts: frozenset[str]) -> None:
        self._allow = allow_hosts
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self._allow:
            return results
        allowed = [
            result
            for result in results
            if result["host"] in self._allow or is_public_address(result["host"])
        ]
        if not allowed:
            raise OSError(f"{host} resolves only to private or reserved addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    error: str | None
    retry_after: str | None


class Deliverer:
    def __init__(self, store: WebhookStore, settings: WebhooksSettings) -> None:
        self._store = store
        self._settings = settings
        self._allow_hosts = allowed_hosts_from_env()
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._http: aiohttp.ClientSession | None = None
        self._secrets: dict[str, tuple[float, SecretView]] = {}
        self._finished: asyncio.Queue[
            tuple[ClaimedDelivery, AttemptResult, asyncio.Future[bool]]
        ] = asyncio.Queue()

    def wake(self) -> None:
        """New deliveries were stored: look for due ones now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Claim nothing more; `run` returns once the attempts in flight are recorded (at
        most `drain_s`; any still running then are cancelled and their leases run out)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        settings = self._settings
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(self._allow_hosts), limit=settings.concurrency
            ),
            timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
            headers={"user-agent": USER_AGENT},
        )
        lease = timedelta(seconds=settings.lease_s)
        recorder = asyncio.create_task(self._record_results())
        try:
            while not self._stopping:
                free = settings.concurrency - len(self._in_flight)
                if self._in_flight and free < max(1, settings.concurrency // 2):
                    # Claim in large batches: a claim is a write transaction (an fsync), so
                    # claiming one row per finished attempt would cost one per delivery.
                    await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._wake.clear()
                try:
                    claimed = await self._store.claim_due(datetime.now(UTC), free, lease)
                except Exception:
                    log.exception("claiming due deliveries failed; retrying")
                    claimed = []
                for delivery in claimed:
                    task = asyncio.create_task(self._attempt(delivery))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                if len(claimed) < free and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), settings.poll_interval_s)
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=settings.drain_s)
        finally:
            for task in [*self._in_flight, recorder]:
                task.cancel()
            await self._http.close()

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        try:
            await self._run_attempt(delivery)
        except Exception:
            # The row keeps its lease and is attempted again when it runs out.
            log.exception("delivery %s: the attempt failed unexpectedly", delivery.id)

    async def _run_attempt(self, delivery: ClaimedDelivery) -> None:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        try:
            ready = await self._prepare(delivery, started)
        except Exception:
            log.exception(
                "delivery %s: preparing the attempt failed; nothing was sent, it is tried "
                "again in %g s",
                delivery.id,
                UNSENT_RETRY_S,
            )
            await self._hand_back(delivery)
            return
        if isinstance(ready, AttemptResult):
            result = ready
        else:
            result = await self._post(delivery, ready, started, clock)
        ATTEMPTS.labels(result.outcome).inc()
        if result.outcome == DEAD:
            DEAD_LETTERS.inc()
        recorded = asyncio.get_running_loop().create_future()
        self._finished.put_nowait((delivery, result, recorded))
        if not await recorded:
            log.warning("delivery %s: lease lost before its attempt was recorded", delivery.id)

    async def _prepare(
        self, delivery: ClaimedDelivery, started: datetime
    ) -> AttemptResult | dict[str, str]:
        """The signed headers to send with, or the final result of an attempt that is not
        to be sent at all (URL disabled or refused, account gone)."""
        if delivery.url_disabled:
            return self._final(delivery, started, DISABLED, "not sent: a 410 disabled this URL")
        try:
            await check_callback_url(delivery.callback_url, self._allow_hosts)
        except CallbackUrlRefused as refused:
            _SEND_RESULTS["url_refused"].inc()
            return self._final(delivery, started, REFUSED, f"not sent: {refused}")
        try:
            secrets = await self._secrets_of(delivery.account_id)
        except AccountNotFound:
            return self._final(delivery, started, DEAD, "not sent: the account no longer exists")
        return {
            "content-type": "application/json",
            **signature_headers(
                message_id=delivery.id,
                task_id=delivery.task_id,
                timestamp=int(time.time()),
                body=delivery.payload,
                secrets=secrets.signing_secrets(datetime.now(UTC)),
                kie_hmac_key=secrets.kie_hmac_key,
            ),
        }

    async def _hand_back(self, delivery: ClaimedDelivery) -> None:
        """Nothing reached the receiver, so there is nothing to deduplicate: the row is due
        again soon rather than when the whole lease (a minute by default) runs out."""
        due_at = datetime.now(UTC) + timedelta(seconds=UNSENT_RETRY_S)
        try:
            if not await self._store.hand_back(delivery, due_at):
                log.warning("delivery %s: lease lost before the row was handed back", delivery.id)
        except Exception:
            log.warning(
                "delivery %s: handing the row back failed; it is tried again when its lease "
                "runs out",
                delivery.id,
                exc_info=True,
            )

    async def _record_results(self) -> None:
        """Writes finished attempts in batches: one transaction for however many finished
        meanwhile, instead of one each (on SQLite every transaction takes the write lock).
        A failed write is retried for half a lease; after that the row's lease runs out
        and the attempt is made again (at least once, never lost)."""
        while True:
            batch = [await self._finished.get()]
            while len(batch) < MAX_RECORD_BATCH and not self._finished.empty():
                batch.append(self._finished.get_nowait())
            outcomes = await self._write(batch)
            for (_, _, recorded), outcome in zip(batch, outcomes, strict=True):
                if not recorded.done():
                    recorded.set_result(outcome)

    async def _write(
        self, batch: list[tuple[ClaimedDelivery, AttemptResult, asyncio.Future[bool]]]
    ) -> list[bool]:
        give_up_at = time.monotonic() + self._settings.lease_s / 2
        delay = 0.05
        while True:
            try:
                return await self._store.finish_attempts([(d, r) for d, r, _ in batch])
            except Exception:
                if time.monotonic() + delay > give_up_at:
                    log.exception("recording %d attempts failed; leases will expire", len(batch))
                    return [False] * len(batch)
                log.warning("recording %d attempts failed; retrying", len(batch), exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _secrets_of(self, account_id: str) -> SecretView:
        now = time.monotonic()
        cached = self._secrets.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        view = await self._store.secret(account_id)
        self._secrets[account_id] = (now + SECRETS_TTL_S, view)
        return view

    @staticmethod
    def _final(
        delivery: ClaimedDelivery, started: datetime, outcome: str, error: str
    ) -> AttemptResult:
        return AttemptResult(
            started_at=started, duration_ms=0, status=None, error=error[:500], outcome=outcome
        )

    async def _post(
        self,
        delivery: ClaimedDelivery,
        headers: dict[str, str],
        started: datetime,
        clock: float,
    ) -> AttemptResult:
        answer = await self._send(delivery.callback_url, delivery.payload, headers)
        elapsed = time.perf_counter() - clock
        ATTEMPT_SECONDS.observe(elapsed)
        now = datetime.now(UTC)
        settings = self._settings
        decision = decide(
            answer.status,
            retry_after_s=parse_retry_after(answer.retry_after, now),
            schedule_index=delivery.schedule_index,
            schedule=settings.retry_schedule_s,
            jitter=settings.jitter,
            max_retry_after_s=settings.max_retry_after_s,
            now=now,
            rng=self._rng,
        )
        return AttemptResult(
            started_at=started,
            duration_ms=int(elapsed * 1000),
            status=answer.status,
            error=answer.error,
            outcome=decision.outcome,
            next_attempt_at=decision.next_attempt_at,
        )

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert self._http is not None
        try:
            async with self._http.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(MAX_RESPONSE_BYTES)
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
                _SEND_RESULTS.get(f"{response.status // 100}xx", _SEND_RESULTS["5xx"]).inc()
                return Answer(response.status, error, response.headers.get("retry-after"))
        except TimeoutError:
            _SEND_RESULTS["timeout"].inc()
            return Answer(None, f"timed out after {self._settings.timeout_s:g} s", None)
        except aiohttp.ClientError as exc:
            _SEND_RESULTS["unreachable"].inc()
            return Answer(None, f"{type(exc).__name__}: {exc}"[:500], None)
        except OSError as exc:
            _SEND_RESULTS["unreachable"].inc()
            return Answer(None, f"{type(exc).__name__}: {exc}"[:500], None)
