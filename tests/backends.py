"""Where the tests get their servers: `AIG_TEST_BACKENDS=local` (the default) or `containers`.

- `local`: what any of our machines has without Docker — Kafka from the Apache jars
  (devstack.kafka.LocalKafka), chDB (and, for the clickhouse-connect backend, the chDB-backed
  HTTP endpoint in tests/ledger/clickhouse_http.py), PostgreSQL from Debian's binaries
  (tests/pg.py).
- `containers`: the real servers from testcontainers — Apache Kafka, a ClickHouse server
  and PostgreSQL, at the pinned images below. The ledger tests, the end-to-end stacks and
  the money tests run against them unchanged; `make test-containers` runs this mode.

Containers mode checks for a Docker engine when the session starts and stops the run with
a message saying so when there is none: a suite that skipped its servers would look green.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

BACKENDS_ENV = "AIG_TEST_BACKENDS"
MODES = ("local", "containers")

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_IMAGE = "postgres:17-alpine"
# The LTS line nearest the chDB engine the embedded ledger runs (chDB 4.4 is ClickHouse 26.9).
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:26.8"
POSTGRES_USER = "aig"
CLICKHOUSE_USER = "aig"
# Throwaway servers on the loopback of a test run: not secrets.
TEST_PASSWORD = "aig-test"


def kafka_image() -> str:
    """apache/kafka at the same release as the jars `make up` runs (deploy/local/kafka)."""
    pom = (REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml").read_text()
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if found is None:
        raise RuntimeError("deploy/local/kafka/pom.xml names no <kafka.version>")
    return f"apache/kafka:{found.group(1)}"


class BackendsUnavailable(RuntimeError):
    """The chosen backends cannot run here; the message says what to do instead."""


def mode() -> str:
    chosen = os.environ.get(BACKENDS_ENV, "local").strip() or "local"
    if chosen not in MODES:
        raise BackendsUnavailable(
            f"{BACKENDS_ENV}={chosen!r} is not a test backend mode; use one of {', '.join(MODES)}"
        )
    return chosen


def require_docker() -> None:
    """Raises BackendsUnavailable unless a Docker engine answers a ping."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
        raise BackendsUnavailable(
            f"{BACKENDS_ENV}=containers runs Kafka, ClickHouse and PostgreSQL in Docker "
            f"containers, but no Docker engine answered at {where}: {exc}. Start Docker (or "
            f"point DOCKER_HOST at one), or run the default mode, which needs no Docker: "
            f"unset {BACKENDS_ENV} (make test)."
        ) from None


class ContainerServers:
    """Servers from testcontainers for one test session, each started on first use.

    PostgreSQL is one server (every user creates its own database on it). Kafka and
    ClickHouse are one container per stack: two stacks on one broker would share the
    `billing` consumer group and settle each other's usage.
    """

    def __init__(self) -> None:
        self._started: list[Any] = []
        self._postgres_url: str | None = None
        self._ledger_url: str | None = None

    def _start(self, container: Any) -> Any:
        self._started.append(container)
        container.start()
        return container

    def postgres_url(self) -> str:
        """The URL of a database on the session's PostgreSQL container (asyncpg driver)."""
        if self._postgres_url is None:
            from testcontainers.postgres import PostgresContainer

            server = self._start(
                PostgresContainer(
                    POSTGRES_IMAGE,
                    username=POSTGRES_USER,
                    password=TEST_PASSWORD,
                    dbname="aig_test",
                    driver="asyncpg",
                )
            )
            self._postgres_url = str(server.get_connection_url())
        return self._postgres_url

    def kafka_bootstrap_servers(self) -> str:
        """A new single-node KRaft broker; returns its bootstrap address."""
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        from devstack.processes import free_port

        # The broker must advertise the address clients reach it at, which is known before
        # start only if the host port is chosen here (a free one) rather than by Docker.
        port = free_port()
        container = DockerContainer(kafka_image()).with_bind_ports(port, port)
        # The Docker host's address (localhost for a local engine), known before start.
        host = container.get_docker_client().host()
        container.with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
        container.waiting_for(
            LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120)
        )
        self._start(container)
        return f"{host}:{port}"

    def clickhouse_url(self) -> str:
        """A new ClickHouse server; returns a clickhouse-connect DSN (HTTP interface)."""
        from testcontainers.community.clickhouse import ClickHouseContainer

        server = self._start(
            ClickHouseContainer(
                CLICKHOUSE_IMAGE,
                username=CLICKHOUSE_USER,
                password=TEST_PASSWORD,
                dbname="default",
            )
        )
        host = server.get_container_host_ip()
        port = server.get_exposed_port(8123)
        return f"http://{CLICKHOUSE_USER}:{TEST_PASSWORD}@{host}:{port}/"

    def ledger_server_url(self) -> str:
        """One ClickHouse server for the ledger tests, which empty it before each test."""
        if self._ledger_url is None:
            self._ledger_url = self.clickhouse_url()
        return self._ledger_url

    def stack_env(self) -> dict[str, str]:
        """What a devstack Stack needs to use a broker and a ledger of its own here."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers(),
            "AIG_CLICKHOUSE_URL": self.clickhouse_url(),
        }

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()
