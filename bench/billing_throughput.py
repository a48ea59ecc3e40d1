"""Issue 3's benchmark: usage events per second from the topic into the ledger and the
control DB, end to end, against the rate a bare consumer reads the same topic (measured in
the same run). python -m bench.billing_throughput [EVENTS] [--one-core]

`--one-core` pins billing (all its threads, chDB's included) to the last CPU and everything
else (the broker, this harness) to the others: billing's capacity with the one core the
default run's pinned phases give the whole gateway, from a backlog large enough that the
consumer's first fetch does not weigh on the figure (the default run's drain phase can only
pile up ~8 s of calls; docs in bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from devstack.kafka import AIG_TOPICS, LocalKafka
from devstack.processes import Service, free_port
from devstack.stack import SHARED_KAFKA_LIBS

from .procs import pin

TOPIC = "aig.usage.v1"
ACCOUNTS = 50
OUT = Path(__file__).parent / "out" / "billing_throughput.json"
# Usage events on the topic for a measurement (bench.extras, bench.billing_scaleout). One
# consumer settles ~20,000 a second, so 20,000 (the number until 2026-12-06) were settled in
# about a second by one consumer and half a second by two. Billing's first fetch and its last
# batch's wait for more (up to 500 ms) were most of that, and two consumers measured
# 0.73-2.01x one from run to run. With 100,000, three runs in a row gave 2.13x, 2.0x, 2.0x.
BACKLOG = 100_000


def _event(index: int) -> bytes:
    account = f"acct_bench{index % ACCOUNTS}"
    return events.UsageEvent(
        event_id=str(uuid7()),
        occurred_at_ms=int(time.time() * 1000),
        request_id=f"req_{index}",
        account_id=account,
        key_id=f"key_bench{index % (ACCOUNTS * 4)}",
        endpoint="chat.completions",
        model="gpt-4o-mini",
        provider="openai",
        outcome=events.CALL_OUTCOME_SUCCEEDED,
        http_status=200,
        prompt_tokens=120,
        completion_tokens=100,
        upstream_cost_nano_usd=78_000,
        markup_basis_points=4000,
        billed_cost_nano_usd=109_200,
        latency_ms=40,
        reservation_id=f"resv_{index}",
    ).SerializeToString()


async def _produce(bootstrap: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        batch = []
        for index in range(count):
            key = f"acct_bench{index % ACCOUNTS}".encode()
            batch.append(await producer.send(TOPIC, _event(index), key=key))
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def _bare_read_rate(bootstrap: str, count: int) -> float:
    """Events/s of a consumer that only reads: the ceiling for any consumer here."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id="bench-bare", auto_offset_reset="earliest"
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return count / (time.perf_counter() - started)


def _settled(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute("SELECT count(*) FROM settlements").fetchone()[0])
    except sqlite3.Error:
        return 0


def measure(count: int, *, one_core: bool = False) -> dict[str, Any]:
    # The machine's CPUs, not this process's mask: `python -m bench` has pinned itself to
    # the driver's core by the time it gets here.
    cpus = list(range(os.cpu_count() or 1))
    billing_cpus = {cpus[-1]} if one_core and len(cpus) > 1 else None
    own_mask = os.sched_getaffinity(0)
    if billing_cpus is not None:
        # The harness and the broker it starts (inheriting the mask) keep off billing's core.
        os.sched_setaffinity(0, set(cpus) - billing_cpus)
    try:
        return _measure(count, billing_cpus)
    finally:
        os.sched_setaffinity(0, own_mask)


def _measure(count: int, billing_cpus: set[int] | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        var = Path(directory)
        kafka = LocalKafka(var, port=free_port(), libs_dir=SHARED_KAFKA_LIBS)
        kafka.ensure_jars()
        kafka.start()
        billing: Service | None = None
        try:
            kafka.wait_ready()
            kafka.create_topics(AIG_TOPICS)
            asyncio.run(_produce(kafka.bootstrap_servers, count))
            bare = asyncio.run(_bare_read_rate(kafka.bootstrap_servers, count))
            database = var / "aig.db"
            port = free_port()
            billing = Service(
                "billing",
                "billing",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "AIG_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
                    "AIG_VAR_DIR": str(var),
                    "AIG_BILLING_PORT": str(port),
                },
                f"http://127.0.0.1:{port}/healthz",
                var / "logs" / "billing.log",
            )
            billing.start()
            if billing_cpus is not None:
                assert billing.process is not None
                pin(billing.process.pid, billing_cpus)
            billing.wait_ready()
            first_at = done_at = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                settled = _settled(database)
                now = time.perf_counter()
                if settled and first_at is None:
                    first_at = now
                if settled >= count:
                    done_at = now
                    break
                time.sleep(0.05)
            if first_at is None or done_at is None:
                raise RuntimeError("billing did not settle every event in time")
            rate = count / max(done_at - first_at, 1e-6)
        finally:
            if billing is not None:
                billing.stop()
            kafka.stop()
    return {
        "events": count,
        "billing_cpus": sorted(billing_cpus) if billing_cpus is not None else "unpinned",
        "billing_events_per_s": round(rate),
        "bare_consumer_events_per_s": round(bare),
        "billing_over_bare": round(rate / bare, 3),
    }


def main() -> None:
    numbers = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    count = int(numbers[0]) if numbers else BACKLOG
    results = measure(count, one_core="--one-core" in sys.argv[1:])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
