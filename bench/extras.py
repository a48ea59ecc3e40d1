"""The benchmarks of the money and failover paths (issues 3, 4, 5), in one run, written to
bench/EXTRAS.md. python -m bench.extras (part of `make bench`)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    billing_scaleout,
    billing_throughput,
    grpc_hop,
    http_clients,
    jobs_throughput,
    outage,
    reservations,
    tokenizer,
    tracing_overhead,
    upstream_timer,
    wakeups,
    webhook_throughput,
)
from .report import machine

HERE = Path(__file__).parent


def main() -> None:
    from tests.pg import PostgresServer

    with tempfile.TemporaryDirectory() as directory:
        sqlite = asyncio.run(reservations.measure(f"sqlite+aiosqlite:///{directory}/r.db"))
        lock_wait = asyncio.run(
            reservations.measure_lock_wait(f"sqlite+aiosqlite:///{directory}/lock.db")
        )
        ahead = asyncio.run(reservations.measure_ahead(f"sqlite+aiosqlite:///{directory}/ahead.db"))
    postgres_server = PostgresServer.start()
    try:
        postgres = asyncio.run(reservations.measure(postgres_server.url()))
    finally:
        postgres_server.stop()
    # Both from the same backlog: enough events that billing's fixed waits (its first fetch,
    # its last batch's wait for more) are a small part of the time measured.
    billing = billing_throughput.measure(billing_throughput.BACKLOG)
    scaleout = billing_scaleout.measure(billing_throughput.BACKLOG)
    webhooks = webhook_throughput.measure(3_000)
    jobs = jobs_throughput.measure(500, render_ms=1000)
    failover = {
        "on": outage._run(breaker_failures=5, calls=outage.CALLS),
        "off": outage._run(breaker_failures=1_000_000_000, calls=outage.CALLS // 4),
    }
    clients = http_clients.measure()
    hop = grpc_hop.measure()
    traced = tracing_overhead.measure()
    tokens = tokenizer.measure()
    woken = wakeups.measure()
    timer = upstream_timer.measure()
    results = {
        "reservations": {
            "sqlite": sqlite,
            "postgresql": postgres,
            "sqlite_lock_wait": lock_wait,
            "sqlite_ahead": ahead,
        },
        "billing": billing,
        "billing_scaleout": scaleout,
        "webhooks": webhooks,
        "jobs": jobs,
        "outage": failover,
        "http_clients": clients,
        "grpc_hop": hop,
        "tracing": traced,
        "tokenizer": tokens,
        "wakeups": woken,
        "upstream_timer": timer,
    }
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "extras.json").write_text(json.dumps(results, indent=2))

    def row(name: str, figures: dict[str, object]) -> str:
        base, admit = figures["baseline_select_1"], figures["admission"]
        crowded = figures[f"admission_{reservations.IN_FLIGHT}_in_flight"]
        assert isinstance(base, dict) and isinstance(admit, dict) and isinstance(crowded, dict)
        return (
            f"| {name} | {base['p50_us']} / {base['p99_us']} | {admit['p50_us']} / "
            f"{admit['p99_us']} | {figures['admission_over_baseline_p50']}x / "
            f"{figures['admission_over_baseline_p99']}x | {crowded['p50_us']} / "
            f"{crowded['p99_us']} | {figures['in_flight_over_admission_p50']}x |"
        )

    host = machine()
    where = f"{host['cpu']}, {host['cores']} cores, commit {host['aig_commit']}"
    lines = [
        "# Money and failover benchmarks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {where}. Ratios are against a",
        "baseline measured in the same run; absolute figures move with the machine's load.",
        "",
        "## Admission (spend reservation) per call — `bench/reservations.py`",
        "",
        "| database | `SELECT 1` transaction p50 / p99 (µs) | admission p50 / p99 (µs) | ratio "
        f"| admission with {reservations.IN_FLIGHT} of the account's calls in flight p50 / p99 "
        "(µs) | ratio to admission p50 |",
        "|---|---|---|---|---|---|",
        row("SQLite", sqlite),
        row("PostgreSQL", postgres),
        "",
        "SQLite, while another connection holds the write lock "
        f"{lock_wait['hold_ms'][0]:g} to {lock_wait['hold_ms'][1]:g} ms out of every "
        f"{lock_wait['free_ms']:g} ms more (as billing's settlements do): admission "
        f"p50 / p99 **{lock_wait['polling']['p50_us']} / {lock_wait['polling']['p99_us']} µs** "
        "with the writer thread polling for the lock, against "
        f"{lock_wait['busy_handler']['p50_us']} / {lock_wait['busy_handler']['p99_us']} µs "
        "with SQLite's own busy handler in the same run "
        f"({lock_wait['polling_over_busy_handler_p50']}x / "
        f"{lock_wait['polling_over_busy_handler_p99']}x).",
        "",
        f"A busy key's admission as the edge runs it (worst-case estimate included), one call "
        f"every {ahead['pause_ms']:g} ms as at 50 calls/s, SQLite, alternating rounds: "
        f"p50 / p99 **{ahead['ahead']['p50_us']} / {ahead['ahead']['p99_us']} µs** when calls "
        "take the reservation admitted ahead of them (`edge/reservation_pool.py`; "
        f"{ahead['ahead_taken_share']:.1%} did), against {ahead['own']['p50_us']} / "
        f"{ahead['own']['p99_us']} µs admitting on their own "
        f"({ahead['ahead_over_own_p50']}x at the p50).",
        "",
        "## Billing throughput — `bench/billing_throughput.py`",
        "",
        f"{billing['events']} usage events from the topic through billing (ledger rows +",
        "control-DB settlement, offsets committed): "
        f"**{billing['billing_events_per_s']} events/s**, against "
        f"{billing['bare_consumer_events_per_s']} events/s for a consumer that only reads "
        f"({billing['billing_over_bare']}x).",
        "",
        "## Billing with one and two consumers — `bench/billing_scaleout.py`",
        "",
        f"{scaleout['events']} events, PostgreSQL control DB, a 6-partition topic; the",
        "consumers, each with its own chDB ledger, join the group on an empty topic, and the",
        "events are produced once all of them are in it: "
        f"1 consumer **{scaleout['one_consumer']['events_per_s']} events/s** (machine "
        f"{scaleout['one_consumer']['machine_cpu_busy']:.0%} busy), 2 consumers "
        f"**{scaleout['two_consumers']['events_per_s']} events/s** (machine "
        f"{scaleout['two_consumers']['machine_cpu_busy']:.0%} busy; each settled "
        f"{' / '.join(str(n) for n in scaleout['two_consumers']['settled_by_each_consumer'])}"
        f"): **{scaleout['two_over_one']}x**. The broker, PostgreSQL and the producer share "
        "the same cores.",
        "",
        "## Webhook deliveries — `bench/webhook_throughput.py`",
        "",
        f"{webhooks['deliveries']} terminal task events from the topic to signed POSTs at a",
        "local receiver answering 200 (intake into the control DB on SQLite, claim, sign, POST,",
        f"attempt recorded): **{webhooks['deliveries_per_s']} deliveries/s**, "
        f"{webhooks['cpu_ms_per_delivery']} ms of the webhooks process's CPU per delivery "
        f"(load average {webhooks['load_average'][0]:.1f} at the end).",
        "",
        "## Media tasks — `bench/jobs_throughput.py`",
        "",
        f"{jobs['tasks']} `{jobs_throughput.MODEL}` tasks through the whole local stack (edge,",
        f"Kafka, jobs, the fal simulator rendering for {jobs['render_ms']} ms, storage, billing;",
        f"SQLite control DB). createTask with {jobs_throughput.CREATORS} callers: "
        f"**{jobs['create_tasks_per_s']} tasks/s** admitted, p50 {jobs['create']['p50_ms']} ms, "
        f"p99 {jobs['create']['p99_ms']} ms. recordInfo with {jobs_throughput.READERS} callers "
        f"while they render: p50 {jobs['record_info']['p50_ms']} ms, p99 "
        f"{jobs['record_info']['p99_ms']} ms. Completion lag (completeTime - createTime - "
        f"render time, polling the provider with the default backoff): "
        f"{jobs['completion_lag']}. CPU per task: {jobs['cpu_ms_per_task']} ms "
        f"({jobs['succeeded']} of {jobs['tasks']} succeeded; load average "
        f"{jobs['load_average'][0]:.1f} at the end).",
        "",
        "## Calls during a provider outage — `bench/outage.py`",
        "",
        f"OpenAI fails every call with 503 after {outage.DEAD_UPSTREAM_MS} ms; gpt-4o-mini falls",
        "back to OpenRouter.",
        "",
        "| breakers | healthy p50 (ms) | outage p50 (ms) | outage / healthy |",
        "|---|---|---|---|",
    ]
    for name, figures in failover.items():
        lines.append(
            f"| {name} | {figures['healthy_p50_ms']} | {figures['outage_p50_ms']} | "
            f"{figures['outage_over_healthy_p50']}x |"
        )
    cpu = clients["cpu_us_per_call"]
    assert isinstance(cpu, dict)
    lines += [
        "",
        "## The router's upstream HTTP client — `bench/http_clients.py`",
        "",
        f"{clients['calls']} POSTs to the sandbox, {clients['concurrency']} at a time, one "
        f"process, alternating: httpx {cpu['httpx']} µs of CPU per call, aiohttp "
        f"{cpu['aiohttp']} µs, aig's own HTTP/1.1 client (`router/http1.py`) {cpu['http1']} µs: "
        f"httpx costs {clients['httpx_over_aiohttp']}x aiohttp, aiohttp "
        f"{clients['aiohttp_over_http1']}x http1. The router calls upstreams with http1 "
        "(aiohttp only downloads images).",
    ]
    lines += ["", *hop_section(hop)]
    lines += ["", *tracing_section(traced)]
    lines += ["", *tokenizer.section(tokens)]
    lines += [
        "",
        "## What an idle core costs a call at 50 calls/s — `bench/wakeups.py`",
        "",
        *wakeups.markdown(woken),
        "",
        "The gateway's core is kept awake by a busy loop at SCHED_IDLE priority, which runs",
        "only when nothing else wants the core. On this KVM guest an idle vCPU halts, and a",
        "call through aig wakes a core four times (oha, edge, sandbox, edge, oha on",
        "alternating cores) where direct (oha and the sandbox on one core) wakes none.",
        "",
        "## How exactly the sandbox keeps its latency — `bench/upstream_timer.py`",
        "",
        *upstream_timer.markdown(timer),
        "",
        "The sandbox sleeps with `precise_sleep` (a timerfd, `services/sandbox/timer.py`). Every",
        "overhead in RESULTS.md is a difference from the sandbox's latency, so a latency that",
        "lasts longer or shorter depending on who calls moves every overhead by as much.",
    ]
    (HERE / "EXTRAS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def hop_section(hop: dict[str, Any]) -> list[str]:
    trips, unix, ratio = hop["round_trip"], hop["round_trip_unix"], hop["unix_over_tcp_p50"]
    watched, bidi_p50 = hop["watched_over_plain_p50"], hop["bidi_message_over_unary_p50"]
    mux_p50 = hop["multiplexed_over_watched_p50"]
    sock_p50 = hop["call_socket_over_multiplexed_p50"]
    assert isinstance(trips, dict) and isinstance(unix, dict) and isinstance(ratio, dict)
    assert isinstance(watched, dict) and isinstance(bidi_p50, dict) and isinstance(mux_p50, dict)
    return [
        "## One edge → router gRPC hop — `bench/grpc_hop.py`",
        "",
        f"A grpc.aio unary call to a servicer that answers at once ({hop['calls']} calls): "
        f"p50 {trips['back_to_back']['p50_ms']} ms back to back, "
        f"{trips['every_20_ms']['p50_ms']} ms with 20 ms between calls (p90 "
        f"{trips['back_to_back']['p90_ms']} / {trips['every_20_ms']['p90_ms']} ms). On an "
        "idle machine every hop pays for waking gRPC's threads and the other process; that "
        "floor sits under aig's latency overhead at low rates. Over a Unix domain socket "
        "(`unix:` address, edge and router on one host): p50 "
        f"{unix['back_to_back']['p50_ms']} / {unix['every_20_ms']['p50_ms']} ms "
        f"({ratio['back_to_back']}x / {ratio['every_20_ms']}x of TCP). As the edge makes "
        "it, racing the client's hang-up (one more task per call, so a client that leaves "
        "cancels the call upstream): p50 "
        f"{trips['watched_back_to_back']['p50_ms']} / {trips['watched_every_20_ms']['p50_ms']}"
        f" ms, {watched['back_to_back']}x / {watched['every_20_ms']}x of the bare call.",
        "",
        "The same answer in other shapes, over TCP (CPU measured 20 ms apart, one shape at a "
        "time, in the calling process + the answering one; the calling process's figure is "
        "net of waking from its own 20 ms timer, which with no call at all costs "
        f"{trips['cpu_gap_alone_every_20_ms']['client_cpu_ms']} CPU-ms a gap):",
        "",
        "| shape | p50 / p99 back to back | p50 / p99 20 ms apart "
        "| CPU ms per call, client + server |",
        "|---|---|---|---|",
        *(
            f"| {label} | {trips[f'{shape}back_to_back']['p50_ms']} / "
            f"{trips[f'{shape}back_to_back']['p99_ms']} ms | "
            f"{trips[f'{shape}every_20_ms']['p50_ms']} / "
            f"{trips[f'{shape}every_20_ms']['p99_ms']} ms | "
            f"{trips[f'cpu_{cpu}_every_20_ms']['client_cpu_ms']} + "
            f"{trips[f'cpu_{cpu}_every_20_ms']['server_cpu_ms']} |"
            for label, shape, cpu in (
                ("bare unary call", "", "unary"),
                (
                    "unary call racing the hang-up (`AIG_ROUTER_CALL_STREAMS=0`)",
                    "watched_",
                    "watched",
                ),
                ("server stream of one event (a streamed chat)", "server_stream_", "server_stream"),
                (
                    "one bare message each way on a long-lived bidi stream",
                    "bidi_message_",
                    "bidi_message",
                ),
                (
                    "the edge's chat call multiplexed on Router.Calls gRPC streams "
                    "(`AIG_ROUTER_CALLS_ADDRESS` empty)",
                    "multiplexed_",
                    "multiplexed",
                ),
                (
                    "**the edge's chat call on the router's call socket** (default: the same "
                    "frames on plain TCP)",
                    "call_socket_",
                    "call_socket",
                ),
            )
        ),
        "",
        f"A bare message on a long-lived stream takes {bidi_p50['every_20_ms']}x a unary "
        f"call's p50 20 ms apart and {hop['bidi_message_over_unary_cpu']}x its CPU. The "
        "edge's chat call, multiplexed (call ids, a writer and a reader task per stream, "
        "the router's per-call task), takes "
        f"{mux_p50['back_to_back']}x / {mux_p50['every_20_ms']}x the p50 of the same call as "
        f"an RPC of its own (back to back / 20 ms apart) and "
        f"{hop['multiplexed_over_watched_cpu']}x its CPU. On the router's call socket "
        "(asyncio Protocols at both ends, no gRPC) the same multiplexed call takes "
        f"{sock_p50['back_to_back']}x / {sock_p50['every_20_ms']}x the p50 of the gRPC "
        f"stream and {hop['call_socket_over_multiplexed_cpu']}x its CPU.",
    ]


def tracing_section(traced: dict[str, Any]) -> list[str]:
    off, on = traced["off"], traced["on"]
    return [
        "## Tracing on and off — `bench/tracing_overhead.py`",
        "",
        f"{off['calls']} chat calls, {traced['concurrency']} at a time, through a stack with "
        "tracing off (the default) and one exporting every call over OTLP/HTTP to a receiver "
        "in the harness. CPU of edge, router and billing per call: "
        f"off {off['cpu_us_per_call']} µs, on {on['cpu_us_per_call']} µs "
        f"(**{traced['cpu_on_over_off']}x**; {on['spans_received']} spans received). "
        f"With tracing off a call passes through the tracing helpers for "
        f"{traced['off_path_ns_per_call']} ns ({traced['off_path_share_of_cpu']:.3%} of its CPU).",
    ]


if __name__ == "__main__":
    main()
