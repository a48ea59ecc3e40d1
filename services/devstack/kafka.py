"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM), no Docker.

The jars come from Maven Central through `deploy/local/kafka/fetch.sh` and run on the
machine's Java 17+. With `KAFKA_BOOTSTRAP_SERVERS` set, `kafka_from_env` hands back that
cluster instead and nothing is started.

    kafka = kafka_from_env(var_dir)
    kafka.start()
    kafka.wait_ready()
    kafka.create_topics(AIG_TOPICS)
    ...  # producers and consumers use kafka.bootstrap_servers
    kafka.stop()

The methods are synchronous, like the rest of the devstack; the `*_async` module functions
do the same work for callers that already run an event loop.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from aig_common.contracts import USAGE_TOPIC

from .lifetime import die_with_parent_preexec
from .processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "deploy" / "local" / "kafka" / "fetch.sh"

BROKER_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
NODE_ID = 1

# The topics of docs/design.md § Kafka, with their partition counts.
AIG_TOPICS: Mapping[str, int] = {
    USAGE_TOPIC: 6,
    "aig.tasks.v1": 6,
    "aig.task-events.v1": 6,
}
DEFAULT_TOPIC_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
}
# Keys are account/task ids, so any replication above this is wasted on a dev cluster and
# required for durability on a real one.
MAX_REPLICATION_FACTOR = 3
ERROR_NONE = 0
ERROR_TOPIC_ALREADY_EXISTS = 36

T = TypeVar("T")


class KafkaStartError(RuntimeError):
    """The local broker could not be fetched, formatted or started; carries the log tail."""


class KafkaCluster(Protocol):
    """What the devstack needs from a Kafka cluster, local or external."""

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self) -> None: ...

    def wait_ready(self, timeout_s: float = 120) -> None: ...

    def create_topics(
        self, topics: Mapping[str, int], configs: Mapping[str, str] | None = None
    ) -> dict[str, int]: ...

    def stop(self) -> None: ...


# --- client-side operations, for any cluster -------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    broker_ids: tuple[int, ...]


async def describe_cluster_async(bootstrap_servers: str, timeout_s: float = 5) -> ClusterInfo:
    """Fetches metadata once; raises `KafkaError`/`OSError`/`TimeoutError` if unreachable."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            described = await admin.describe_cluster()
    finally:
        await admin.close()
    return ClusterInfo(
        cluster_id=described.get("cluster_id"),
        broker_ids=tuple(sorted(broker["node_id"] for broker in described["brokers"])),
    )


async def create_topics_async(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    configs: Mapping[str, str] | None = None,
    replication_factor: int | None = None,
    timeout_s: float = 60,
) -> dict[str, int]:
    """Creates the missing topics and waits until every partition has a leader.

    Existing topics are left as they are (their partition count is returned, not changed:
    adding partitions would move keys to other partitions). Without an explicit
    replication factor it is min(3, brokers), and `min.insync.replicas` follows it so that
    `acks=all` survives one broker down on a real cluster.
    Returns the partition count of each topic as the cluster reports it.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            if replication_factor is None:
                brokers = (await admin.describe_cluster())["brokers"]
                replication_factor = max(1, min(MAX_REPLICATION_FACTOR, len(brokers)))
            topic_configs = {
                "min.insync.replicas": str(2 if replication_factor >= 3 else 1),
                **DEFAULT_TOPIC_CONFIGS,
                **(configs or {}),
            }
            response = await admin.create_topics(
                [
                    NewTopic(name, partitions, replication_factor, topic_configs=topic_configs)
                    for name, partitions in topics.items()
                ]
            )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code not in (ERROR_NONE, ERROR_TOPIC_ALREADY_EXISTS):
                    detail = topic_error[2] if len(topic_error) > 2 else ""
                    raise KafkaError(f"creating topic {name!r} failed: error {code} {detail}")
            return await _wait_for_leaders(admin, list(topics))
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    # CreateTopics returns before the controller has elected leaders; a producer started
    # right then would see NOT_LEADER errors until it refreshes metadata.
    while True:
        described = await admin.describe_topics(names)
        ready = {
            topic["topic"]: len(topic["partitions"])
            for topic in described
            if topic["error_code"] == ERROR_NONE
            and topic["partitions"]
            and all(p["leader"] >= 0 for p in topic["partitions"])
        }
        if len(ready) == len(names):
            return ready
        await asyncio.sleep(0.2)


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine to completion from sync code, even when a loop is already running."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from inside a loop (an async test, a FastAPI startup hook): asyncio.run would
    # refuse, so give the coroutine a loop of its own on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


# --- an external cluster -----------------------------------------------------------------------


@dataclass
class ExternalKafka:
    """A cluster someone else runs (`KAFKA_BOOTSTRAP_SERVERS`): never started or stopped here."""

    bootstrap_servers: str

    def start(self) -> None:
        pass

    def wait_ready(self, timeout_s: float = 120) -> None:
        _wait_for_metadata(self.bootstrap_servers, timeout_s, on_retry=lambda: None)

    def create_topics(
        self, topics: Mapping[str, int], configs: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        return _run_sync(lambda: create_topics_async(self.bootstrap_servers, topics, configs))

    def stop(self) -> None:
        pass


def _wait_for_metadata(
    bootstrap_servers: str, timeout_s: float, on_retry: Callable[[], None]
) -> ClusterInfo:
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        on_retry()
        if not _accepts_connections(bootstrap_servers):
            # Until something listens, a plain connect is enough and keeps aiokafka from
            # logging a connection error on every attempt.
            time.sleep(0.25)
            continue
        try:
            info = _run_sync(lambda: describe_cluster_async(bootstrap_servers))
            if info.broker_ids:
                return info
        except (KafkaError, OSError, TimeoutError) as exc:
            last_error = exc
        time.sleep(0.5)
    raise TimeoutError(
        f"Kafka at {bootstrap_servers} served no metadata within {timeout_s:.0f} s"
        f" (last error: {last_error!r})"
    )


def _accepts_connections(bootstrap_servers: str) -> bool:
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 1):
                return True
        except (OSError, ValueError):
            continue
    return False


# --- the local broker --------------------------------------------------------------------------


class LocalKafka:
    """One Kafka 4.x process that is both broker and KRaft controller, on 127.0.0.1 only.

    Layout under `var_dir`: `kafka/libs` (jars, unless `libs_dir` points elsewhere),
    `kafka/data` (the log dir: topics and the metadata log; survives restarts),
    `kafka/server.properties`, `kafka/log4j2.properties`, and `logs/kafka.log`.
    """

    def __init__(
        self,
        var_dir: Path,
        port: int = 9092,
        controller_port: int | None = None,
        *,
        libs_dir: Path | None = None,
        heap: str = "512m",
    ) -> None:
        self.var_dir = var_dir
        self.port = port
        self.controller_port = controller_port
        self.home = var_dir / "kafka"
        self.libs_dir = libs_dir or self.home / "libs"
        self.data_dir = self.home / "data"
        self.config_path = self.home / "server.properties"
        self.log_config_path = self.home / "log4j2.properties"
        self.log_path = var_dir / "logs" / "kafka.log"
        self.pid_path = self.home / "broker.pid"
        self.heap = heap
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cluster_id(self) -> str | None:
        """The id the log dir was formatted with, or None before the first start."""
        meta = self.data_dir / "meta.properties"
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def ensure_jars(self) -> None:
        """Downloads the broker's jars once (Maven); later calls return at once."""
        result = subprocess.run(
            ["bash", str(FETCH_SCRIPT), str(self.libs_dir)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise KafkaStartError(
                f"{FETCH_SCRIPT} failed with {result.returncode} (needs Maven and access to"
                f" Maven Central):\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
            )

    def start(self) -> None:
        """Formats the log dir on first use, then launches the broker (does not wait)."""
        if self.process is not None and self.process.poll() is None:
            return
        java = _java_executable()
        self.ensure_jars()
        try:
            _require_free_port(self.port, "AIG_KAFKA_PORT")
        except KafkaStartError as exc:
            if self.pid_path.exists():
                pid = self.pid_path.read_text().strip()
                raise KafkaStartError(
                    f"{exc}; {self.pid_path} says a broker with pid {pid} was left running"
                ) from exc
            raise
        if self.controller_port is None:
            self.controller_port = free_port()
        else:
            _require_free_port(self.controller_port, "the controller port")
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._server_properties())
        self.log_config_path.write_text(LOG4J2_PROPERTIES)
        if self.cluster_id is None:
            self._format(java)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [*self._java_command(java), BROKER_MAIN_CLASS, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C meant for `make up` must not kill the broker
                # before the services that still flush to it. It still dies with us.
                start_new_session=True,
                preexec_fn=die_with_parent_preexec(os.getpid()),
            )
        finally:
            log.close()
        self.pid_path.write_text(f"{self.process.pid}\n")

    name = "kafka"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Starts the broker again on the same port and data (for the supervisor)."""
        self.start()

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Blocks until this broker serves metadata; a JVM on two cores needs 5 to 15 s."""
        process = self.process
        if process is None:
            raise KafkaStartError("LocalKafka.wait_ready() called before start()")

        def exited_early() -> None:
            if process.poll() is not None:
                raise KafkaStartError(
                    f"the Kafka broker exited with {process.returncode}\n{self._log_tail()}"
                )

        try:
            info = _wait_for_metadata(self.bootstrap_servers, timeout_s, on_retry=exited_early)
        except TimeoutError as exc:
            raise KafkaStartError(f"{exc}\n{self._log_tail()}") from exc
        if info.cluster_id != self.cluster_id:
            # Something else answered on our port (a broker left over from another run).
            raise KafkaStartError(
                f"{self.bootstrap_servers} belongs to cluster {info.cluster_id},"
                f" not to the one formatted in {self.data_dir} ({self.cluster_id})"
            )

    def create_topics(
        self, topics: Mapping[str, int], configs: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        return _run_sync(
            lambda: create_topics_async(
                self.bootstrap_servers, topics, configs, replication_factor=1
            )
        )

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (a controlled shutdown flushes the logs), then SIGKILL after `timeout_s`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    def _java_command(self, java: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log_config_path}",
            "-cp",
            f"{self.libs_dir}/*",
        ]

    def _format(self, java: str) -> None:
        result = subprocess.run(
            [
                *self._java_command(java),
                STORAGE_TOOL_CLASS,
                "format",
                "--config",
                str(self.config_path),
                "--cluster-id",
                new_cluster_id(),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise KafkaStartError(
                f"formatting {self.data_dir} failed with {result.returncode}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
            )

    def _server_properties(self) -> str:
        settings: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            # Static voters rather than a dynamic quorum: the controller port may change
            # between runs (it is picked free) without the log dir remembering the old one.
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": self.data_dir,
            "num.partitions": 3,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 6,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # A lone consumer should get its partitions at once, not after 3 s.
            "group.initial.rebalance.delay.ms": 0,
            # Few threads: this shares two cores with the whole gateway.
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.hours": 168,
            "log.segment.bytes": 64 * 1024 * 1024,
        }
        header = "# Written by services/devstack/kafka.py on every start; edits are lost.\n"
        return header + "".join(f"{key}={value}\n" for key, value in settings.items())

    def _log_tail(self, chars: int = 6000) -> str:
        try:
            tail = self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            tail = "(no log written)"
        return f"--- {self.log_path} (tail) ---\n{tail}"


LOG4J2_PROPERTIES = """\
# Written by services/devstack/kafka.py; the broker's stdout goes to var/logs/kafka.log.
status = warn
# Console output is flushed per line; the hook only logs a warning when the JVM exits.
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
# Every config object dumps all its values at INFO: thousands of lines per start.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def new_cluster_id() -> str:
    """A random cluster id in Kafka's format: 16 bytes, URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka rejects ids that a command line would read as an option.
        if not text.startswith("-"):
            return text


def kafka_from_env(
    var_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    libs_dir: Path | None = None,
) -> KafkaCluster:
    """`KAFKA_BOOTSTRAP_SERVERS` names an external cluster; otherwise a local broker on
    `AIG_KAFKA_PORT` (default 9092) with its state under `var_dir`."""
    env = os.environ if env is None else env
    external = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return ExternalKafka(external)
    libs = env.get("AIG_KAFKA_LIBS_DIR")
    return LocalKafka(
        var_dir,
        port=int(env.get("AIG_KAFKA_PORT", "9092")),
        libs_dir=Path(libs) if libs else libs_dir,
    )


def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise KafkaStartError(
            "no `java` on PATH (and no JAVA_HOME): Kafka 4 needs Java 17 or newer,"
            " e.g. `apt-get install openjdk-17-jre-headless`"
        )
    return found


def _require_free_port(port: int, what: str) -> None:
    with socket.socket() as sock:
        # Like the broker itself: connections in TIME_WAIT from a previous run are no
        # obstacle, only a listener is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise KafkaStartError(
                f"port {port} on 127.0.0.1 is taken ({exc.strerror}); stop what uses it"
                f" (a broker left from an earlier run?) or choose another with {what}"
            ) from exc


def main() -> None:
    """`python -m devstack.kafka [VAR_DIR]`: the broker alone, with the aig topics, until Ctrl-C."""
    import sys

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    var_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AIG_VAR_DIR", "var"))
    kafka = kafka_from_env(var_dir.resolve())
    try:
        kafka.start()
        kafka.wait_ready()
        kafka.create_topics(AIG_TOPICS)
        print(f"Kafka ready at {kafka.bootstrap_servers}; Ctrl-C stops it", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()
