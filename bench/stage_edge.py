"""`python -m bench.stage_edge`: the edge with the router in its process (the service
`python -m edge` with `AIG_EDGE_IN_PROCESS_ROUTER=1`), timing every chat call stage by stage.

For `bench/stages.py`, not for deployments. The clocks wrap the functions a call crosses
(edge/v1.py, edge/admission.py, edge/router_calls.py, router/server.py, router/chat.py,
router/http1.py, router/metering.py) before the edge starts; nothing in the services changes.
Each call's stages are kept in a dict in the request's context, which the router's task
shares (it is created inside the edge's request, so it inherits the context), so every
figure is per call and the upstream's time is taken out of the very call it was part of.

On SIGUSR1 the process writes the median of each stage over the calls since the last
SIGUSR1 to `AIG_BENCH_STAGES_OUT` (JSON, µs) and starts counting afresh.

What no clock here sees: uvicorn's parsing of the request before the app is called, its
writing of the response after, and the kernel. `bench/stages.py` reports oha's p50
overhead over direct beside the stages for that.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import signal
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

STAGES_OUT_ENV = "AIG_BENCH_STAGES_OUT"

# The stages reported, in a call's order, and what each is made of (the clocks' names).
STAGES: dict[str, str] = {
    "authentication": "the Bearer token, the failed-auth throttle, the key cache",
    "request": "the body read, parsed and validated",
    "admission": "the worst case priced and a reservation taken (from the shelf, or admitted)",
    "hand-off": "the call handed to the router's task and its reply back (both ways)",
    "router": "planning, the upstream request built and written, its answer parsed",
    "metering": "the call priced, its usage event built and journaled",
    "router reply": "the router's parse of the body and the reply built",
    "response and the rest": "call context, the response built and sent, metrics",
    "own": "the edge's process from the app's entry to its exit, the upstream taken out",
}


class StageClock:
    """Per-call stage times. `serve` wraps the outermost function of a call; every other
    clock adds its elapsed time to the call in the context, if any."""

    def __init__(self) -> None:
        self._call: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
            "stage_call", default=None
        )
        self.samples: defaultdict[str, list[int]] = defaultdict(list)

    def clock(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        """`fn` (a coroutine function or a plain one) with its time added to `name`."""
        call_var = self._call

        def add(started: int) -> None:
            call = call_var.get()
            if call is not None:
                call[name] = call.get(name, 0) + time.perf_counter_ns() - started

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter_ns()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    add(started)

            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                add(started)

        return timed

    def serve(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The outermost clock: one call's dict, its stages derived when it ends."""
        call_var = self._call

        @functools.wraps(fn)
        async def served(*args: Any, **kwargs: Any) -> Any:
            call: dict[str, int] = {}
            token = call_var.set(call)
            started = time.perf_counter_ns()
            try:
                return await fn(*args, **kwargs)
            finally:
                call["serve"] = time.perf_counter_ns() - started
                call_var.reset(token)
                samples = self.samples  # replaced by each `medians_us`
                for stage, value in derive(call).items():
                    samples[stage].append(value)

        return served

    def medians_us(self) -> dict[str, Any]:
        """The median of each stage in µs over the calls since the last call of this, and
        how many calls that is; the counting starts afresh."""
        taken, self.samples = self.samples, defaultdict(list)
        medians = {
            stage: round(statistics.median(taken[stage]) / 1000, 1)
            for stage in STAGES
            if taken[stage]
        }
        return {"calls": len(taken["own"]), "stages_us": medians}


def derive(call: dict[str, int]) -> dict[str, int]:
    """A finished call's stages from its clocks (ns). A call that never reached the upstream
    (refused, failed) is left out: its stages do not compare."""
    if "upstream" not in call or "router_call" not in call:
        return {}
    get = call.get
    router_service = get("router_service", 0)
    edge_before = get("authentication", 0) + get("request", 0) + get("admission", 0)
    return {
        "authentication": get("authentication", 0),
        "request": get("request", 0),
        "admission": get("admission", 0),
        "hand-off": get("complete", 0) - call["router_call"],
        "router": router_service - call["upstream"],
        "metering": get("metering", 0),
        "router reply": call["router_call"] - router_service - get("metering", 0),
        "response and the rest": call["serve"] - get("complete", 0) - edge_before,
        "own": call["serve"] - call["upstream"],
    }


def install(clock: StageClock) -> None:
    """Wraps the functions a chat call crosses. Module globals are replaced where the
    caller looks them up (edge.v1's own names), methods on their classes."""
    import edge.admission
    import edge.direct_routes
    import edge.router_calls
    import edge.v1
    import router.chat
    import router.http1
    import router.metering
    import router.server

    def wrap(owner: Any, attribute: str, name: str) -> None:
        setattr(owner, attribute, clock.clock(getattr(owner, attribute), name))

    routes = edge.direct_routes.DirectRoutes
    routes._serve = clock.serve(routes._serve)  # type: ignore[method-assign]
    wrap(edge.v1, "authenticate", "authentication")
    for function in ("read_body", "parse_json_object", "validate_chat_request"):
        wrap(edge.v1, function, "request")
    wrap(edge.admission.Admissions, "chat", "admission")
    wrap(edge.router_calls.RouterCalls, "complete", "complete")
    wrap(router.server.RouterServicer, "_chat_completion", "router_call")
    wrap(router.chat.ChatService, "complete", "router_service")
    wrap(router.http1.Http1Client, "post", "upstream")
    wrap(router.http1.Response, "read", "upstream")
    wrap(router.metering.Meter, "record", "metering")


def dump_on_signal(clock: StageClock, out: Path) -> None:
    def dump(_signum: int, _frame: FrameType | None) -> None:
        out.write_text(json.dumps(clock.medians_us()))

    signal.signal(signal.SIGUSR1, dump)


def main() -> None:
    os.environ["AIG_EDGE_IN_PROCESS_ROUTER"] = "1"
    clock = StageClock()
    install(clock)
    dump_on_signal(clock, Path(os.environ[STAGES_OUT_ENV]))
    from edge.__main__ import main as edge_main

    edge_main()


if __name__ == "__main__":
    main()
