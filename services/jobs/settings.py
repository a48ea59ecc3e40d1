"""Jobs service configuration, read from the environment in one place."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobsSettings:
    host: str
    port: int
    kafka_bootstrap_servers: str
    database_url: str
    spool_dir: str
    # Polling backoff: the first poll after this many seconds, then x1.5 up to the maximum
    # (Kie advises 2-3 s, then 5-10 s, then 15-30 s).
    poll_initial_s: float
    poll_max_s: float
    # The public address of this service's `/callbacks` (AIG_PROVIDER_CALLBACK_URL, e.g. an
    # ingress path routed here); providers POST completions to `<it>/<provider>/<task id>`.
    # Empty: polling only.
    provider_callback_base: str
    # A task claimed for submission that has no provider id after this long was cut off
    # mid-submission (a crash): its provider cannot be asked again, so it fails at no cost.
    submission_grace_s: float

    # After SIGTERM: how long work in hand may take to finish (AIG_DRAIN_S).
    drain_s: float = 30.0
    # This replica's name on the tasks it follows (AIG_INSTANCE_ID; default the host name,
    # which is the pod's name in Kubernetes): stable across restarts, unique per replica.
    instance_id: str = "jobs"
    # How long a replica's claim on a task lasts unrenewed (AIG_JOBS_LEASE_S): the longest
    # a task of a replica that went away without a graceful stop waits for adoption.
    lease_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> JobsSettings:
        env = dict(os.environ) if env is None else env
        return cls(
            host=env.get("AIG_JOBS_HOST", "127.0.0.1"),
            port=int(env.get("AIG_JOBS_PORT", "9466")),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            database_url=env.get("AIG_DATABASE_URL", "sqlite+aiosqlite:///var/aig.db"),
            spool_dir=env.get("AIG_SPOOL_DIR", "var/spool"),
            poll_initial_s=float(env.get("AIG_JOBS_POLL_INITIAL_S", "2")),
            poll_max_s=float(env.get("AIG_JOBS_POLL_MAX_S", "20")),
            provider_callback_base=env.get("AIG_PROVIDER_CALLBACK_URL", "").strip().rstrip("/"),
            submission_grace_s=float(env.get("AIG_JOBS_SUBMISSION_GRACE_S", "300")),
            drain_s=float(env.get("AIG_DRAIN_S", "30")),
            instance_id=env.get("AIG_INSTANCE_ID", "") or socket.gethostname(),
            lease_s=float(env.get("AIG_JOBS_LEASE_S", "30")),
        )
