"""The local stack: Kafka, sandbox (when a provider has no key), router, billing, jobs,
webhooks and edge."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from catalog.media import load_media_catalog
from catalog.models import DEFAULT_CATALOG_PATH, load_catalog

from .kafka import (
    AIG_TOPICS,
    DEFAULT_TOPIC_CONFIGS,
    REPO_ROOT,
    KafkaCluster,
    LocalKafka,
    kafka_from_env,
)
from .lifetime import Supervised, Supervisor
from .processes import Service, free_port

# The key variables of the shipped catalog's providers (its `providers` rows name them).
PROVIDER_KEYS = tuple(
    dict.fromkeys(
        [row.key_env for row in load_catalog(DEFAULT_CATALOG_PATH).providers if row.key_env]
        + [row.key_env for row in load_media_catalog(env={}).providers.values()]
    )
)


# Tests and `make up` share one download of the broker's jars.
SHARED_KAFKA_LIBS = REPO_ROOT / "var" / "kafka" / "libs"


@dataclass
class StackPorts:
    edge: int = 8080
    router: int = 50051
    router_calls: int = 50052
    router_ops: int = 9464
    sandbox: int = 8090
    billing: int = 9465
    jobs: int = 9466
    webhooks: int = 9467
    kafka: int = 9092
    smtp: int = 2525
    mail_http: int = 8025

    @classmethod
    def free(cls) -> StackPorts:
        return cls(
            edge=free_port(),
            router=free_port(),
            router_calls=free_port(),
            router_ops=free_port(),
            sandbox=free_port(),
            billing=free_port(),
            jobs=free_port(),
            webhooks=free_port(),
            kafka=free_port(),
            smtp=free_port(),
            mail_http=free_port(),
        )


@dataclass
class Stack:
    """Everything `make up` runs; tests start one on free ports."""

    var_dir: Path
    ports: StackPorts
    admin_token: str
    key_pepper: str
    database_url: str
    env: dict[str, str]
    with_sandbox: bool = True
    # More edge processes behind the same control DB, as replicas in production.
    extra_edges: int = 0
    # More routers (every edge round-robins over all of them) and more billing, jobs and
    # webhooks consumers in the same consumer groups: the scale-out of a cluster, on one host.
    extra_routers: int = 0
    extra_consumers: int = 0
    # The router inside the edge's process (edge/in_process_router.py), not a service apart.
    in_process_router: bool = False
    # Signs the expiring URLs of stored media results (edge and jobs share it).
    result_url_secret: str = field(default_factory=lambda: new_secret(""))
    services: list[Service] = field(default_factory=list)
    supervisor: Supervisor | None = None
    kafka: KafkaCluster | None = None
    # Shared by the services for their internal APIs (billing's /internal/v1).
    service_token: str = field(default_factory=lambda: new_secret("aig-svc-"))

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.edge}"

    @property
    def mail_url(self) -> str:
        """Where the mail sink shows what the dashboard sent (sign-up, reset)."""
        return f"http://127.0.0.1:{self.ports.mail_http}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    def _service_env(self) -> dict[str, str]:
        assert self.kafka is not None
        return {
            **self.env,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "AIG_VAR_DIR": str(self.var_dir),
            "AIG_SPOOL_DIR": str(self.var_dir / "spool"),
            "AIG_BILLING_PORT": str(self.ports.billing),
            "AIG_BILLING_URL": f"http://127.0.0.1:{self.ports.billing}",
            "AIG_WEBHOOKS_PORT": str(self.ports.webhooks),
            "AIG_SANDBOX_URL": self.sandbox_url,
            "AIG_SANDBOX_PORT": str(self.ports.sandbox),
            "AIG_ROUTER_PORT": str(self.ports.router),
            "AIG_ROUTER_METRICS_PORT": str(self.ports.router_ops),
            "AIG_ROUTER_ADDRESS": f"127.0.0.1:{self.ports.router}",
            "AIG_ROUTER_CALLS_PORT": str(self.ports.router_calls),
            "AIG_ROUTER_CALLS_ADDRESS": f"127.0.0.1:{self.ports.router_calls}",
            "AIG_EDGE_PORT": str(self.ports.edge),
            "AIG_EDGE_IN_PROCESS_ROUTER": "1" if self.in_process_router else "0",
            "AIG_DATABASE_URL": self.database_url,
            "AIG_ADMIN_TOKEN": self.admin_token,
            "AIG_KEY_PEPPER": self.key_pepper,
            "AIG_SERVICE_TOKEN": self.service_token,
            "AIG_MAILSINK_SMTP_PORT": str(self.ports.smtp),
            "AIG_MAILSINK_HTTP_PORT": str(self.ports.mail_http),
            "AIG_MAILSINK_DIR": str(self.var_dir / "mail"),
            "AIG_SMTP_URL": self.env.get("AIG_SMTP_URL", f"smtp://127.0.0.1:{self.ports.smtp}"),
            "AIG_JOBS_PORT": str(self.ports.jobs),
            "AIG_RESULT_URL_SECRET": self.result_url_secret,
            "AIG_STORAGE_URL": self.env.get("AIG_STORAGE_URL")
            or (self.var_dir / "results").as_uri(),
        }

    def start(self) -> None:
        self.kafka = kafka_from_env(
            self.var_dir,
            env={**os.environ, **self.env, "AIG_KAFKA_PORT": str(self.ports.kafka)},
            libs_dir=SHARED_KAFKA_LIBS,
        )
        env = self._service_env()
        logs = self.var_dir / "logs"
        if self.with_sandbox:
            self.services.append(
                Service(
                    "sandbox", "sandbox", env, f"{self.sandbox_url}/healthz", logs / "sandbox.log"
                )
            )
        if "AIG_SMTP_URL" not in self.env:
            self.services.append(
                Service(
                    "mailsink",
                    "devstack.mailsink",
                    env,
                    f"{self.mail_url}/healthz",
                    logs / "mailsink.log",
                )
            )
        if self.in_process_router and self.extra_routers:
            raise ValueError("a router in the edge's process has no replicas of its own")
        if not self.in_process_router:
            self.services.append(
                Service(
                    "router",
                    "router",
                    env,
                    f"http://127.0.0.1:{self.ports.router_ops}/healthz",
                    logs / "router.log",
                )
            )
        routers = [f"127.0.0.1:{self.ports.router}"]
        call_sockets = [f"127.0.0.1:{self.ports.router_calls}"]
        for replica in range(1, self.extra_routers + 1):
            port, calls, ops = free_port(), free_port(), free_port()
            routers.append(f"127.0.0.1:{port}")
            call_sockets.append(f"127.0.0.1:{calls}")
            self.services.append(
                Service(
                    f"router-{replica}",
                    "router",
                    {
                        **self.replica_env(env, f"router-{replica}"),
                        "AIG_ROUTER_PORT": str(port),
                        "AIG_ROUTER_CALLS_PORT": str(calls),
                        "AIG_ROUTER_METRICS_PORT": str(ops),
                    },
                    f"http://127.0.0.1:{ops}/healthz",
                    logs / f"router-{replica}.log",
                )
            )
        if self.extra_routers:
            env = {
                **env,
                "AIG_ROUTER_ADDRESS": "ipv4:" + ",".join(routers),
                "AIG_ROUTER_CALLS_ADDRESS": "ipv4:" + ",".join(call_sockets),
            }
        self.services.append(
            Service("edge", "edge", env, f"{self.edge_url}/readyz", logs / "edge.log")
        )
        for replica in range(1, self.extra_edges + 1):
            port = free_port()
            self.services.append(
                Service(
                    f"edge-{replica}",
                    "edge",
                    {**self.replica_env(env, f"edge-{replica}"), "AIG_EDGE_PORT": str(port)},
                    f"http://127.0.0.1:{port}/readyz",
                    logs / f"edge-{replica}.log",
                )
            )
        billing = Service(
            "billing",
            "billing",
            env,
            f"http://127.0.0.1:{self.ports.billing}/readyz",
            logs / "billing.log",
        )
        jobs = Service(
            "jobs", "jobs", env, f"http://127.0.0.1:{self.ports.jobs}/readyz", logs / "jobs.log"
        )
        webhooks = Service(
            "webhooks",
            "webhooks",
            env,
            f"http://127.0.0.1:{self.ports.webhooks}/readyz",
            logs / "webhooks.log",
        )
        consumers = [billing, jobs, webhooks]
        for replica in range(1, self.extra_consumers + 1):
            for module, port_variable in (
                ("billing", "AIG_BILLING_PORT"),
                ("jobs", "AIG_JOBS_PORT"),
                ("webhooks", "AIG_WEBHOOKS_PORT"),
            ):
                name, port = f"{module}-{replica}", free_port()
                consumers.append(
                    Service(
                        name,
                        module,
                        {**self.replica_env(env, name), port_variable: str(port)},
                        f"http://127.0.0.1:{port}/readyz",
                        logs / f"{name}.log",
                    )
                )
        try:
            # The JVM takes seconds to start: the Python services start meanwhile.
            if isinstance(self.kafka, LocalKafka):
                self.kafka.ensure_jars()
            self.kafka.start()
            for service in self.services:
                service.start()
            self.kafka.wait_ready()
            self.kafka.create_topics(AIG_TOPICS, DEFAULT_TOPIC_CONFIGS)
            # The consumers start once their topics exist.
            for consumer in consumers:
                self.services.append(consumer)
                consumer.start()
            for service in self.services:
                service.wait_ready()
        except BaseException:
            self.stop()
            raise

    def replica_env(self, env: dict[str, str], name: str) -> dict[str, str]:
        """A replica's own disk, as each pod has its own: the event journal and spool
        (replicas share a client id, and a starting producer takes over the journal it finds
        as a crashed one's) and billing's chDB ledger (one process per data directory); and
        its own name, as a pod's (jobs leases tasks under it)."""
        own = self.var_dir / "replicas" / name
        return {
            **env,
            "AIG_SPOOL_DIR": str(own / "spool"),
            "AIG_VAR_DIR": str(own),
            "AIG_INSTANCE_ID": name,
        }

    def billing_urls(self) -> list[str]:
        """Every billing replica's internal API (each keeps its own chDB ledger here)."""
        return [
            service.ready_url.removesuffix("/readyz")
            for service in self.services
            if service.module == "billing"
        ]

    @property
    def edge_urls(self) -> list[str]:
        return [
            service.ready_url.removesuffix("/readyz")
            for service in self.services
            if service.module == "edge"
        ]

    def service(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)

    def supervise(self, report: Callable[[str], None]) -> Supervisor:
        """Restarts (with backoff) any service or the broker that exits on its own, as
        `make up` wants; the tests restart what they kill themselves."""
        units: list[Supervised] = list(self.services)
        if isinstance(self.kafka, LocalKafka):
            units.append(self.kafka)
        self.supervisor = Supervisor(units, report)
        self.supervisor.start()
        return self.supervisor

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self.kafka is not None:
            self.kafka.stop()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)
