"""How long and how hard each phase runs: the default run, --quick and --soak."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The upstream every target calls: fixed delay, ~100-token answer, 20 chunks when streamed.
SANDBOX_ENV = {
    "AIG_SANDBOX_LATENCY_MS": "20",
    "AIG_SANDBOX_CHUNK_INTERVAL_MS": "5",
    "AIG_SANDBOX_ANSWER_TOKENS": "100",
    "AIG_SANDBOX_STREAM_CHUNKS": "20",
}
ERROR_BUDGET = 0.001  # peak throughput counts only steps with < 0.1 % failed calls


@dataclass(frozen=True)
class Plan:
    name: str
    peak_connections: tuple[int, ...]
    peak_seconds: float
    rates: tuple[int, ...]
    rate_seconds: float
    # Open-loop in-flight cap: enough for every rate at the direct path's latency, and a
    # bound on how far a saturated target's queue can grow.
    rate_connections: int
    stream_calls: int
    stream_concurrency: int
    profile_seconds: float
    profile_rate: int
    soak_seconds: float
    soak_rate: int
    soak_interval_s: float
    compare_litellm: bool = True
    # The rate and stream phases take every target in turn this many times (rate_seconds
    # and stream_calls / latency_rounds each round), so a drift of the machine's speed
    # over the minutes a phase takes falls on every target alike instead of on whichever
    # ran at the wrong moment. A bound of 1 ms cannot be judged from one 10-second sample a
    # target: the direct baseline alone moved 0.2-0.6 ms between runs.
    latency_rounds: int = 1
    # The streamed calls are taken in this many turns of every target (stream_calls /
    # stream_rounds each). A turn is cheap (~1 s) and one target's TTFT p50 moves 0.5-1 ms
    # from turn to turn, so the TTFT overhead is the median over many turns of each turn's
    # difference from direct's: pooled over 3 turns it swung 0.55-1.73 ms between runs.
    stream_rounds: int = 1
    # Billing's capacity: seconds of closed-loop load piled up while billing is stopped
    # (under its consumer session timeout, 10 s, so it keeps its partitions).
    drain_seconds: float = 8
    # The two-core phase: aig with 2 edges + 2 routers and LiteLLM with 2 workers, unpinned.
    scaleout: bool = True
    # After both peak searches, each gateway's one-core and two-core peak steps are taken
    # again side by side this many times, the order turned each time; the two-core ratio
    # judged is the median of these rounds' (bench/scaleout.py `side_by_side`). The searches
    # run ~10 minutes apart, and this guest's speed drifts over minutes.
    scaleout_rounds: int = 3
    # Billing's capacity without the drain's limits: this many usage events on the topic
    # before billing starts, billing alone on one core (bench.billing_throughput), last.
    billing_backlog_events: int = 40_000
    # aig measured a second way beside the default: an edge with the router in its own
    # process (AIG_EDGE_IN_PROCESS_ROUTER), on the same stack, as the target `aig-inproc`.
    in_process_router: bool = True
    # The target whose processes the soak samples: "aig", or "aig-inproc" (with
    # in_process_router; `python -m bench --soak --in-process-router`).
    soak_target: str = "aig"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = Plan(
    name="default",
    # Up to 1,024: since admission stopped growing with the calls in flight (migration 0010)
    # both aig configurations still gained 9-19 % from 128 to 256 connections.
    peak_connections=(4, 16, 64, 128, 256, 512, 1024),
    peak_seconds=6,
    rates=(50, 200, 500),
    rate_seconds=5,
    rate_connections=128,
    stream_calls=240,
    stream_concurrency=4,
    latency_rounds=3,
    stream_rounds=8,
    profile_seconds=15,
    profile_rate=200,
    soak_seconds=60,
    soak_rate=100,
    soak_interval_s=3,
)

QUICK = Plan(
    name="quick",
    peak_connections=(8, 32, 96),
    peak_seconds=3,
    rates=(50, 200, 500),
    rate_seconds=2,
    rate_connections=96,
    stream_calls=30,
    stream_concurrency=4,
    latency_rounds=2,
    stream_rounds=2,
    profile_seconds=6,
    profile_rate=200,
    soak_seconds=15,
    soak_rate=100,
    soak_interval_s=1.5,
    drain_seconds=5,
    billing_backlog_events=10_000,
    scaleout_rounds=1,
)

# Only aig, only memory: five minutes of steady load, RSS every 5 s.
SOAK = Plan(
    name="soak",
    peak_connections=(),
    peak_seconds=0,
    rates=(),
    rate_seconds=0,
    rate_connections=64,
    stream_calls=0,
    stream_concurrency=1,
    profile_seconds=0,
    profile_rate=0,
    soak_seconds=300,
    soak_rate=100,
    soak_interval_s=5,
    compare_litellm=False,
    drain_seconds=0,
    scaleout=False,
    billing_backlog_events=0,
    in_process_router=False,
)
