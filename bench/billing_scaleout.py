"""Issue 13's billing figure: usage events per second settled with one billing consumer and
with two in the same consumer group, on PostgreSQL (production's control DB), each run from a
fresh broker and database holding the same events. `python -m bench.billing_scaleout [EVENTS]`

The topic has 6 partitions, so two consumers split it 3 + 3 after the group's rebalance. Each
billing process keeps its own chDB ledger directory (chDB allows one per process; production
points every replica at one ClickHouse server), so the ledger half scales by construction and
the shared parts are the broker and PostgreSQL's settlement transactions. The consumers start
together on an empty topic, and the events are produced once the group is stable with every
consumer in it: with the events already there, the first consumer to join took all six
partitions and settled the whole backlog (about 1.5 s) before the second had joined, so two
consumers measured the same as one. Settled events are counted in PostgreSQL's `settlements`
table, the rate runs from the first settlement to the last, and each consumer's own count
(its `aig_billing_events_total`) shows how the work split. Both runs share this machine's
cores with the broker, the database and the producer, so read the ratio, not the absolute
rates.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from aig_common.contracts import BILLING_CONSUMER_GROUP
from controldb.migrate import migrate
from devstack.kafka import AIG_TOPICS, LocalKafka
from devstack.processes import Service, free_port
from devstack.stack import SHARED_KAFKA_LIBS

from .billing_throughput import BACKLOG, _produce
from .procs import cpu_seconds, machine_cpu_seconds
from .settlement import scrape

OUT = Path(__file__).parent / "out" / "billing_scaleout.json"


async def _settled(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM settlements"))
    except asyncpg.UndefinedTableError:  # billing has not migrated yet
        return 0
    finally:
        await connection.close()


async def _group_members(bootstrap: str) -> int:
    """Members of billing's consumer group once it is Stable (0 while it rebalances)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([BILLING_CONSUMER_GROUP])
        _error, _group, state, _protocol_type, _protocol, members, *_ = response.groups[0]
        return len(members) if state == "Stable" else 0
    finally:
        await admin.close()


def _wait_for_group(bootstrap: str, consumers: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while asyncio.run(_group_members(bootstrap)) != consumers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"billing's group did not settle with {consumers} consumer(s)")
        time.sleep(0.2)


def _settled_by(service: Service) -> int:
    """The events this consumer settled itself, from its /metrics."""
    return int(scrape([service.ready_url.replace("/readyz", "/metrics")]).settled)


def _billing(name: str, var: Path, bootstrap: str, database_url: str) -> Service:
    port = free_port()
    return Service(
        name,
        "billing",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AIG_DATABASE_URL": database_url,
            "AIG_VAR_DIR": str(var / name),
            "AIG_BILLING_PORT": str(port),
            "AIG_SPOOL_DIR": str(var / name / "spool"),
        },
        f"http://127.0.0.1:{port}/readyz",
        var / "logs" / f"{name}.log",
    )


def measure_one(count: int, consumers: int, server_url: str, database: str) -> dict[str, Any]:
    from tests.pg import asyncpg_dsn, create_database

    database_url = asyncio.run(create_database(server_url, database))
    dsn = asyncpg_dsn(database_url)
    with tempfile.TemporaryDirectory() as directory:
        var = Path(directory)
        kafka = LocalKafka(var, port=free_port(), libs_dir=SHARED_KAFKA_LIBS)
        kafka.ensure_jars()
        kafka.start()
        services: list[Service] = []
        try:
            kafka.wait_ready()
            kafka.create_topics(AIG_TOPICS)
            # Migrated up front, so the consumers can start together (each would migrate).
            asyncio.run(migrate(database_url))
            services = [
                _billing(f"billing-{index}", var, kafka.bootstrap_servers, database_url)
                for index in range(consumers)
            ]
            for service in services:
                service.start()
            for service in services:
                service.wait_ready()
            _wait_for_group(kafka.bootstrap_servers, consumers)
            asyncio.run(_produce(kafka.bootstrap_servers, count))
            first_at = done_at = None
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                settled = asyncio.run(_settled(dsn))
                now = time.perf_counter()
                if settled and first_at is None:
                    first_at, machine_at_first = now, machine_cpu_seconds()
                if settled >= count:
                    done_at, machine_at_done = now, machine_cpu_seconds()
                    break
                time.sleep(0.1)
            if first_at is None or done_at is None:
                raise RuntimeError(f"{consumers} billing consumer(s) did not settle in time")
            # Start-up (imports, chDB, joining the group) included: the same in both runs.
            cpu = sum(cpu_seconds(s.process.pid) for s in services if s.process is not None)
            split = [_settled_by(service) for service in services]
        finally:
            for service in services:
                service.stop()
            kafka.stop()
    busy = machine_at_done[0] - machine_at_first[0]
    total = machine_at_done[1] - machine_at_first[1]
    return {
        "consumers": consumers,
        # Of all the machine's cores while settling: near 1.0 means the cores were the limit.
        "machine_cpu_busy": round(busy / total, 2) if total else 0.0,
        "events_per_s": round(count / max(done_at - first_at, 1e-6)),
        "billing_cpu_ms_per_event_incl_startup": round(cpu * 1000 / count, 3),
        "settled_by_each_consumer": split,
    }


def measure(count: int) -> dict[str, Any]:
    from tests.pg import PostgresServer

    server = PostgresServer.start()
    try:
        one = measure_one(count, 1, server.url(), "bench_one")
        two = measure_one(count, 2, server.url(), "bench_two")
    finally:
        server.stop()
    return {
        "events": count,
        "control_db": "postgresql",
        "one_consumer": one,
        "two_consumers": two,
        "two_over_one": round(two["events_per_s"] / one["events_per_s"], 2),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else BACKLOG
    results = measure(count)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
