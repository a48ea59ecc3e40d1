"""The event publisher never fails a call and never loses an event: with the broker down
events go to a local spool, and they reach Kafka once it is back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from aig_common.events import EventPublisher, Record, Spool, decode_records
from devstack.kafka import AIG_TOPICS, REPO_ROOT, LocalKafka
from devstack.processes import free_port

LIBS_DIR = Path(os.environ.get("AIG_KAFKA_LIBS_DIR", REPO_ROOT / "var" / "kafka" / "libs"))
TOPIC = "aig.usage.v1"


def test_spool_frames_survive_a_torn_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "t")
    records = [
        Record(TOPIC, b"acct_1", bytes([i]) * 10, (("traceparent", b"00-x"),)) for i in range(3)
    ]
    spool.append(records)
    with spool.path.open("ab") as file:
        file.write(records[0].encode()[:7])  # a crash in the middle of the next append
    assert decode_records(spool.path.read_bytes()) == records
    assert spool.take() == records
    spool.done()
    assert spool.size() == 0


async def _consume(bootstrap: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id="check", auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < expected:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            values.extend(
                record.value for records in batch.values() for record in records if record.value
            )
    finally:
        await consumer.stop()
    return values


async def test_broker_down_then_up_delivers_every_event(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "var", port=free_port(), libs_dir=LIBS_DIR)
    publisher = EventPublisher(
        kafka.bootstrap_servers,
        tmp_path / "spool",
        client_id="test",
        delivery_timeout_s=2,
        retry_interval_s=0.2,
    )
    await publisher.start()
    try:
        for i in range(20):
            publisher.publish(TOPIC, "acct_1", f"event-{i}".encode())
        await asyncio.wait_for(publisher.flush(), 30)
        assert publisher.spooled_bytes > 0  # nothing lost while Kafka was away

        await asyncio.to_thread(kafka.start)
        await asyncio.to_thread(kafka.wait_ready)
        await asyncio.to_thread(kafka.create_topics, AIG_TOPICS)
        for i in range(20, 25):
            publisher.publish(TOPIC, "acct_1", f"event-{i}".encode())
        values = await _consume(kafka.bootstrap_servers, 25)
        assert sorted(set(values)) == sorted(f"event-{i}".encode() for i in range(25))
        for _ in range(50):
            if publisher.spooled_bytes == 0:
                break
            await asyncio.sleep(0.2)
        assert publisher.spooled_bytes == 0
    finally:
        await publisher.stop()
        await asyncio.to_thread(kafka.stop)
