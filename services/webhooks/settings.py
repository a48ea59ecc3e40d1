"""Webhooks configuration, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

# After the first attempt fails: ≈ 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 24 h (≈ 42 h in all),
# then the delivery is dead-lettered. Standard Webhooks' schedule, a little shortened.
DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 86400.0)


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    host: str
    port: int
    kafka_bootstrap_servers: str
    database_url: str
    # Delays after failed attempt 1, 2, …; when they run out the delivery is dead.
    retry_schedule_s: tuple[float, ...]
    # Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter], so a
    # receiver that failed for many deliveries at once is not hit by all of them again at once.
    jitter: float
    # The longest `retry-after` honoured; a receiver asking for more gets this.
    max_retry_after_s: float
    timeout_s: float
    # How long a replica owns a delivery it claimed; must exceed the timeout, because a
    # lease that ran out lets another replica send the same attempt again.
    lease_s: float
    concurrency: int
    poll_interval_s: float

    # After SIGTERM: how long work in hand may take to finish (AIG_DRAIN_S).
    drain_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebhooksSettings:
        env = dict(os.environ) if env is None else env
        schedule_raw = env.get("AIG_WEBHOOKS_RETRY_SCHEDULE_S", "")
        schedule = (
            tuple(float(part) for part in schedule_raw.split(",") if part.strip())
            if schedule_raw.strip()
            else DEFAULT_RETRY_SCHEDULE_S
        )
        settings = cls(
            host=env.get("AIG_WEBHOOKS_HOST", "127.0.0.1"),
            port=int(env.get("AIG_WEBHOOKS_PORT", "9467")),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            database_url=env.get("AIG_DATABASE_URL", "sqlite+aiosqlite:///var/aig.db"),
            retry_schedule_s=schedule,
            jitter=float(env.get("AIG_WEBHOOKS_JITTER", "0.2")),
            max_retry_after_s=float(env.get("AIG_WEBHOOKS_MAX_RETRY_AFTER_S", "86400")),
            timeout_s=float(env.get("AIG_WEBHOOKS_TIMEOUT_S", "15")),
            lease_s=float(env.get("AIG_WEBHOOKS_LEASE_S", "60")),
            concurrency=int(env.get("AIG_WEBHOOKS_CONCURRENCY", "64")),
            poll_interval_s=float(env.get("AIG_WEBHOOKS_POLL_INTERVAL_S", "1")),
            drain_s=float(env.get("AIG_DRAIN_S", "30")),
        )
        if settings.lease_s <= settings.timeout_s:
            raise RuntimeError("AIG_WEBHOOKS_LEASE_S must exceed AIG_WEBHOOKS_TIMEOUT_S.")
        if any(delay < 0 for delay in schedule) or not 0 <= settings.jitter < 1:
            raise RuntimeError("retry delays must be >= 0 and AIG_WEBHOOKS_JITTER in [0, 1).")
        return settings
