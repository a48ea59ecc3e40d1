"""Billing configuration, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BillingSettings:
    host: str
    port: int
    kafka_bootstrap_servers: str
    database_url: str
    var_dir: str
    max_batch: int
    # How long the broker may hold a fetch to gather a batch: settlement lag against the
    # cost of a batch (a ledger insert and a control-DB transaction, ~20 ms whatever its size).
    batch_wait_ms: int
    tier_recompute_interval_s: float
    # Test hook: exit right after the ledger and the control DB are written, before the
    # Kafka offsets are committed, to prove that redelivery changes nothing.
    crash_after_write: bool
    # Test hook: exit after the ledger write of the Nth batch (1-based; 0 = never), before
    # the control DB settles it and before the offset commit: the window in which the
    # ledger has rows that no settlement matches yet.
    crash_after_ledger_batch: int
    # Required by the internal API (`/internal/v1/*`); unset, that API refuses every call.
    service_token: str

    # After SIGTERM: how long work in hand may take to finish (AIG_DRAIN_S).
    drain_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BillingSettings:
        env = dict(os.environ) if env is None else env
        return cls(
            host=env.get("AIG_BILLING_HOST", "127.0.0.1"),
            port=int(env.get("AIG_BILLING_PORT", "9465")),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            database_url=env.get("AIG_DATABASE_URL", "sqlite+aiosqlite:///var/aig.db"),
            var_dir=env.get("AIG_VAR_DIR", "var"),
            max_batch=int(env.get("AIG_BILLING_MAX_BATCH", "1000")),
            batch_wait_ms=int(env.get("AIG_BILLING_BATCH_WAIT_MS", "500")),
            tier_recompute_interval_s=float(env.get("AIG_TIER_RECOMPUTE_INTERVAL_S", "21600")),
            crash_after_write=env.get("AIG_BILLING_CRASH_AFTER_WRITE") == "1",
            crash_after_ledger_batch=int(env.get("AIG_BILLING_CRASH_AFTER_LEDGER_BATCH") or "0"),
            service_token=env.get("AIG_SERVICE_TOKEN", ""),
            drain_s=float(env.get("AIG_DRAIN_S", "30")),
        )
