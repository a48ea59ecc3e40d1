"""The edge's Prometheus metrics and the middleware that records them.

One `CallFacts` per request lives in a context variable: handlers (admission, the router
call) note what only they know — the catalog model, the router's upstream time — and the
middleware labels the response with it when the response starts. Labelled children are
cached in plain dicts (`labels()` takes a lock and builds a tuple each call); every label
value comes from a bounded set: route templates of the code, catalog ids, provider names
from the catalog, HTTP statuses, limit codes.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .route_template import route_template

HTTP_RESPONSES = Counter(
    "aig_edge_http_responses_total",
    "Responses of the edge by route template, catalog model, provider and status",
    ["route", "model", "provider", "status"],
)
ADMISSIONS = Counter(
    "aig_edge_admissions_total",
    "Admission decisions: admitted, clamped (admitted for less output), refused (402)",
    ["outcome"],
)
RESERVED_AHEAD = Counter(
    "aig_edge_reserved_ahead_total",
    "Reservations admitted ahead of a busy key's calls: taken by a call, or given back unused",
    ["outcome"],
)
ASKED_AGAIN = Counter(
    "aig_edge_asked_again_total",
    "Calls refused for money and asked again once what was held ahead of calls was given "
    "back (this edge's shelves at once, another edge's by their rows' shelved_until): "
    "admitted then, or refused again",
    ["outcome"],
)
ASKED_AGAIN_WAIT = Histogram(
    "aig_edge_asked_again_wait_seconds",
    "How long a call refused for money waited before it was asked again: this edge's "
    "shelves given back, and another edge's waited out by their rows' shelved_until",
    buckets=(0.01, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5),
)
# What a process's shelves hold right now: money near a cap shows up here before it is refused.
HELD_AHEAD = Gauge(
    "aig_edge_reservations_held_ahead",
    "Reservations this edge process holds admitted ahead of busy keys' calls, not yet taken",
)
HELD_AHEAD_NANO_USD = Gauge(
    "aig_edge_reservations_held_ahead_nano_usd",
    "What the reservations this edge process holds ahead reserve, nano-USD",
)
PAYMENT_REQUIRED = Counter(
    "aig_edge_payment_required_total", "402 answers by the limit that refused the call", ["code"]
)
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
OVERHEAD = Histogram(
    "aig_edge_overhead_seconds",
    "aig's own time in a chat call: the edge's time to the answer (a stream: its first "
    "bytes) minus the router's upstream time",
    ["mode"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "aig_edge_time_to_first_token_seconds",
    "Time from a streamed call's arrival to its first body bytes, as the edge sent them",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

LIMIT_CODES = (
    "key_daily_cap",
    "key_monthly_cap",
    "workspace_daily_cap",
    "workspace_monthly_cap",
    "account_daily_cap",
    "account_monthly_cap",
    "insufficient_credits",
)
ADMITTED = ADMISSIONS.labels("admitted")
CLAMPED = ADMISSIONS.labels("clamped")
REFUSED = ADMISSIONS.labels("refused")
TAKEN_AHEAD = RESERVED_AHEAD.labels("taken")
GIVEN_BACK_AHEAD = RESERVED_AHEAD.labels("given_back")
ADMITTED_WHEN_ASKED_AGAIN = ASKED_AGAIN.labels("admitted")
REFUSED_WHEN_ASKED_AGAIN = ASKED_AGAIN.labels("refused")
_REFUSED_BY_CODE = {code: PAYMENT_REQUIRED.labels(code) for code in LIMIT_CODES}
_OVERHEAD_UNARY = OVERHEAD.labels("unary")
_OVERHEAD_STREAM = OVERHEAD.labels("stream")

OTHER = "other"
NONE = "none"


class CallFacts:
    """What the handler learnt about the call, for the middleware's labels."""

    __slots__ = ("model", "upstream_s")

    def __init__(self) -> None:
        self.model = OTHER
        # The router's upstream time; negative until (unless) a router reply reports it.
        self.upstream_s = -1.0


_current: ContextVar[CallFacts | None] = ContextVar("aig_edge_call_facts", default=None)


def note_model(model_id: str) -> None:
    """The catalog id of the model a call was admitted for (never a client's string)."""
    facts = _current.get()
    if facts is not None:
        facts.model = model_id


def note_upstream(upstream_us: int) -> None:
    facts = _current.get()
    if facts is not None and upstream_us > 0:
        facts.upstream_s = upstream_us / 1_000_000


def count_refusal(code: str) -> None:
    REFUSED.inc()
    child = _REFUSED_BY_CODE.get(code)
    if child is None:  # a limit kind added later: still bounded by the code
        child = _REFUSED_BY_CODE[code] = PAYMENT_REQUIRED.labels(code)
    child.inc()


_responses: dict[tuple[str, str, str, int], Any] = {}


def _route_of(scope: Scope) -> str:
    """The route template as a label: every /v1 template is a bounded value; anything else
    (no route, admin, dashboard) is `other`."""
    template = route_template(scope)
    return template if template is not None and template.startswith("/v1") else OTHER


class ResponseMeter:
    """One request's metrics: its `CallFacts` (in the context while the request runs, so
    handlers can note what they learn) and what its response's messages show."""

    __slots__ = ("_scope", "_started", "_streaming", "_token", "facts")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._started = time.perf_counter()
        self._streaming = False
        self.facts = CallFacts()
        self._token = _current.set(self.facts)

    def end(self) -> None:
        _current.reset(self._token)

    def observe(self, message: Message) -> None:
        """Called with each message the response sends, before it is sent."""
        kind = message["type"]
        facts = self.facts
        if kind == "http.response.start":
            status: int = message["status"]
            provider, model, event_stream = NONE, facts.model, False
            for name, value in message.get("headers", ()):
                if name == b"x-aig-provider":
                    provider = value.decode("latin-1")
                elif name == b"x-aig-model":
                    model = value.decode("latin-1")
                elif name == b"content-type":
                    event_stream = value.startswith(b"text/event-stream")
            key = (_route_of(self._scope), model, provider, status)
            child = _responses.get(key)
            if child is None:
                child = _responses[key] = HTTP_RESPONSES.labels(*key[:3], str(status))
            child.inc()
            if event_stream and status == 200:
                self._streaming = True
            elif facts.upstream_s >= 0:
                _OVERHEAD_UNARY.observe(
                    max(0.0, time.perf_counter() - self._started - facts.upstream_s)
                )
        elif self._streaming and kind == "http.response.body" and message.get("body"):
            self._streaming = False
            first = time.perf_counter() - self._started
            TTFT.observe(first)
            if facts.upstream_s >= 0:
                _OVERHEAD_STREAM.observe(max(0.0, first - facts.upstream_s))


class MetricsMiddleware:
    """A `ResponseMeter` for every route but the direct ones (edge/direct_routes.py), which
    meter themselves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        meter = ResponseMeter(scope)

        async def counting_send(message: Message) -> None:
            meter.observe(message)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            meter.end()
