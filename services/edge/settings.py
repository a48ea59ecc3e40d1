"""Edge configuration, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aig_common.framing import MAX_MESSAGE_BYTES
from aig_common.public_url import public_url_from_env

# Room in a router message for the call context and the frame around the bodies.
MESSAGE_HEADROOM_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str
    port: int
    router_address: str
    database_url: str
    admin_token: str
    key_pepper: bytes
    max_body_bytes: int
    auth_cache_ttl_s: float
    billing_url: str
    tier_recompute_interval_s: int
    reservation_ttl_s: float
    max_header_bytes: int
    body_timeout_s: float
    auth_failure_burst: int
    auth_failures_per_minute: float
    service_token: str
    min_clamped_output_tokens: int
    # After SIGTERM: how long requests and streams in flight may take to finish.
    drain_s: float
    # How long an idle keep-alive connection stays open. Longer than clients' own (httpx,
    # so the OpenAI SDK: 5 s) and load balancers' (nginx ingress: 60 s), so that they close
    # idle connections first and never send on one the edge is closing.
    keep_alive_s: int
    kafka_bootstrap_servers: str
    spool_dir: str
    # Where clients reach aig (result URLs and provider callbacks are built on it).
    public_url: str
    # SO_REUSEPORT on the listening socket: several edge processes on one host share one
    # port and the kernel spreads connections over them (as a Service spreads them over pods).
    reuse_port: bool = False
    # Long-lived Router.Calls streams the edge multiplexes chat calls on (edge/router_streams.py);
    # 0 sends each chat call as a gRPC call of its own.
    router_call_streams: int = 4
    # The routers' call sockets (edge/call_socket.py), where those streams go when set, in
    # AIG_ROUTER_ADDRESS's syntax; empty: they are gRPC streams on the router channel.
    router_calls_address: str = "127.0.0.1:50052"
    # The router runs inside this process (edge/in_process_router.py) instead of apart:
    # AIG_ROUTER_ADDRESS and AIG_ROUTER_CALLS_ADDRESS are then unused.
    in_process_router: bool = False
    # A busy key's next call takes a reservation admitted while its last call waited for
    # its upstream (edge/reservation_pool.py); off: every call admits on its own path.
    reserve_ahead: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EdgeSettings:
        env = dict(os.environ) if env is None else env
        admin_token = env.get("AIG_ADMIN_TOKEN", "")
        if not admin_token:
            raise RuntimeError("AIG_ADMIN_TOKEN must be set (make up generates one).")
        pepper = env.get("AIG_KEY_PEPPER", "")
        if not pepper:
            raise RuntimeError(
                "AIG_KEY_PEPPER must be set: API keys are stored as HMACs keyed by it."
            )
        return cls(
            host=env.get("AIG_EDGE_HOST", "127.0.0.1"),
            port=int(env.get("AIG_EDGE_PORT", "8080")),
            router_address=env.get("AIG_ROUTER_ADDRESS", "127.0.0.1:50051"),
            database_url=env.get("AIG_DATABASE_URL", "sqlite+aiosqlite:///var/aig.db"),
            admin_token=admin_token,
            key_pepper=pepper.encode(),
            # 16 MiB: room for a few inline (data URL) images, small enough to refuse abuse early.
            max_body_bytes=int(env.get("AIG_MAX_BODY_BYTES", str(16 * 1024 * 1024))),
            auth_cache_ttl_s=float(env.get("AIG_AUTH_CACHE_TTL_S", "5")),
            billing_url=env.get("AIG_BILLING_URL", "http://127.0.0.1:9465"),
            tier_recompute_interval_s=int(env.get("AIG_TIER_RECOMPUTE_INTERVAL_S", "21600")),
            # Longer than any call plus settlement lag: a reservation that outlives its call
            # is only ever released early by settlement, never by expiry.
            reservation_ttl_s=float(env.get("AIG_RESERVATION_TTL_S", "900")),
            # All request headers together; real clients send about 1 KiB.
            max_header_bytes=int(env.get("AIG_MAX_HEADER_BYTES", str(32 * 1024))),
            body_timeout_s=float(env.get("AIG_BODY_TIMEOUT_S", "30")),
            auth_failure_burst=int(env.get("AIG_AUTH_FAILURE_BURST", "20")),
            auth_failures_per_minute=float(env.get("AIG_AUTH_FAILURES_PER_MINUTE", "30")),
            # Sent to billing's internal API; the same secret every service is given.
            service_token=env.get("AIG_SERVICE_TOKEN", ""),
            # Below this many affordable output tokens a call without max_tokens is a 402.
            min_clamped_output_tokens=int(env.get("AIG_MIN_CLAMPED_OUTPUT_TOKENS", "64")),
            drain_s=float(env.get("AIG_DRAIN_S", "30")),
            keep_alive_s=int(env.get("AIG_EDGE_KEEP_ALIVE_S", "75")),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            spool_dir=env.get("AIG_SPOOL_DIR", "var/spool"),
            public_url=public_url_from_env(env),
            reuse_port=env_flag(env.get("AIG_EDGE_REUSE_PORT", "")),
            router_call_streams=int(env.get("AIG_ROUTER_CALL_STREAMS", "4")),
            router_calls_address=env.get("AIG_ROUTER_CALLS_ADDRESS", "127.0.0.1:50052"),
            in_process_router=env_flag(env.get("AIG_EDGE_IN_PROCESS_ROUTER", "")),
            reserve_ahead=env_flag(env.get("AIG_RESERVE_AHEAD", "1")),
        ).checked()

    def checked(self) -> EdgeSettings:
        # A chat call to the router carries the body, and for a native dialect the client's
        # own body beside it, in one message of at most MAX_MESSAGE_BYTES (gRPC's limit too).
        if 2 * self.max_body_bytes + MESSAGE_HEADROOM_BYTES > MAX_MESSAGE_BYTES:
            largest = (MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES) // 2
            raise RuntimeError(
                f"AIG_MAX_BODY_BYTES={self.max_body_bytes} is over {largest}: a chat call "
                f"carrying such a body would not fit the router's {MAX_MESSAGE_BYTES}-byte "
                "message limit."
            )
        return self


def env_flag(value: str) -> bool:
    """An on/off variable: on when 1, true or yes (any case)."""
    return value.strip().lower() in ("1", "true", "yes")
