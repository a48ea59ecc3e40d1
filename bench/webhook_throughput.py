"""Issue 10's webhook benchmark: signed callbacks per second from terminal task events on
the topic to a local receiver, end to end (intake into the control DB, claim, sign, POST,
record the attempt). python -m bench.webhook_throughput [DELIVERIES]

The receiver (aiohttp, answering 200 at once) runs in this process on the same machine, so
the figure is the webhooks service's ceiling on it, not a network's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from controldb import KeyStore, create_engine_from_url, migrate
from devstack.kafka import AIG_TOPICS, LocalKafka
from devstack.processes import Service, free_port
from devstack.stack import SHARED_KAFKA_LIBS

from .procs import cpu_seconds

TOPIC = "aig.task-events.v1"
ACCOUNTS = 20
OUT = Path(__file__).parent / "out" / "webhook_throughput.json"


class Receiver:
    """Counts distinct webhook-ids and when the first and the last arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ids: set[str] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.ids.add(request.headers["webhook-id"])
            return web.Response(status=200)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


async def _accounts(database_url: str) -> list[str]:
    await migrate(database_url)
    engine = create_engine_from_url(database_url)
    store = KeyStore(engine, b"bench-pepper")
    try:
        return [(await store.create_account(f"bench-{n}")).id for n in range(ACCOUNTS)]
    finally:
        await engine.dispose()


async def _produce(bootstrap: str, count: int, accounts: list[str], url: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        sent = []
        for index in range(count):
            task_id = f"task_bench{index}"
            record = {"taskId": task_id, "model": "flux-kontext-pro", "state": "success"}
            event = events.TaskEvent(
                event_id=str(uuid7()),
                occurred_at_ms=int(time.time() * 1000),
                task_id=task_id,
                account_id=accounts[index % len(accounts)],
                state=events.TASK_STATE_SUCCESS,
                callback_url=url,
                record=orjson.dumps(record),
            )
            sent.append(await producer.send(TOPIC, event.SerializeToString(), key=task_id.encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _delivered(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            query = "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
            return int(connection.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


def measure(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        var = Path(directory)
        database = var / "aig.db"
        database_url = f"sqlite+aiosqlite:///{database}"
        kafka = LocalKafka(var, port=free_port(), libs_dir=SHARED_KAFKA_LIBS)
        kafka.ensure_jars()
        kafka.start()
        receiver = Receiver()
        receiver.start()
        webhooks: Service | None = None
        try:
            kafka.wait_ready()
            kafka.create_topics(AIG_TOPICS)
            accounts = asyncio.run(_accounts(database_url))
            url = f"http://127.0.0.1:{receiver.port}/hook"
            asyncio.run(_produce(kafka.bootstrap_servers, count, accounts, url))
            port = free_port()
            webhooks = Service(
                "webhooks",
                "webhooks",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "AIG_DATABASE_URL": database_url,
                    "AIG_WEBHOOKS_PORT": str(port),
                    "AIG_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
                },
                f"http://127.0.0.1:{port}/healthz",
                var / "logs" / "webhooks.log",
            )
            webhooks.start()
            webhooks.wait_ready()
            assert webhooks.process is not None
            pid = webhooks.process.pid
            deadline = time.monotonic() + 600
            cpu_from: tuple[int, float] | None = None
            while (delivered := _delivered(database)) < count:
                if cpu_from is None and delivered:
                    # From the first delivery on: start-up (imports, migrations) is not counted.
                    cpu_from = (delivered, cpu_seconds(pid))
                if time.monotonic() > deadline:
                    raise RuntimeError("webhooks did not deliver every event in time")
                time.sleep(0.1)
            assert cpu_from is not None
            cpu_ms = (cpu_seconds(pid) - cpu_from[1]) * 1000 / max(count - cpu_from[0], 1)
        finally:
            if webhooks is not None:
                webhooks.stop()
            kafka.stop()
    assert receiver.first_at is not None and receiver.last_at is not None
    elapsed = receiver.last_at - receiver.first_at
    return {
        "deliveries": count,
        "distinct_webhook_ids_received": len(receiver.ids),
        "deliveries_per_s": round(count / max(elapsed, 1e-6)),
        "seconds": round(elapsed, 2),
        "cpu_ms_per_delivery": round(cpu_ms, 2),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    results = measure(count)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
