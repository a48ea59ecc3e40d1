"""Router configuration, read from the environment in one place.

Which providers exist is not configuration here: they are rows of the catalog
(`providers`), resolved by `router.providers.ProviderRegistry` against this environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from catalog.live import poll_interval_from_env


@dataclass(frozen=True, slots=True)
class RouterSettings:
    host: str
    port: int
    # Router.Calls on a plain socket (router/call_socket.py), beside gRPC; 0: not served.
    calls_port: int
    metrics_port: int
    # Where the sandbox simulates providers whose key variable is unset.
    sandbox_url: str
    connect_timeout_s: float
    read_timeout_s: float
    max_image_bytes: int
    kafka_bootstrap_servers: str
    spool_dir: str
    breaker_failures: int
    breaker_cooldown_s: float
    catalog_poll_s: float
    # After SIGTERM: how long calls and streams in flight may take to finish.
    drain_s: float
    # The whole environment, for the provider rows' key and base-URL variables.
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RouterSettings:
        env = dict(os.environ) if env is None else env
        return cls(
            host=env.get("AIG_ROUTER_HOST", "127.0.0.1"),
            port=int(env.get("AIG_ROUTER_PORT", "50051")),
            calls_port=int(env.get("AIG_ROUTER_CALLS_PORT", "50052")),
            metrics_port=int(env.get("AIG_ROUTER_METRICS_PORT", "9464")),
            sandbox_url=env.get("AIG_SANDBOX_URL", "http://127.0.0.1:8090").rstrip("/"),
            connect_timeout_s=float(env.get("AIG_UPSTREAM_CONNECT_TIMEOUT_S", "5")),
            read_timeout_s=float(env.get("AIG_UPSTREAM_READ_TIMEOUT_S", "300")),
            max_image_bytes=int(env.get("AIG_MAX_IMAGE_BYTES", str(20 * 1024 * 1024))),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            spool_dir=env.get("AIG_SPOOL_DIR", "var/spool"),
            breaker_failures=int(env.get("AIG_BREAKER_FAILURES", "5")),
            breaker_cooldown_s=float(env.get("AIG_BREAKER_COOLDOWN_S", "30")),
            catalog_poll_s=poll_interval_from_env(env),
            drain_s=float(env.get("AIG_DRAIN_S", "30")),
            env=env,
        )
