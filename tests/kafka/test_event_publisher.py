"""The event publisher never fails a call and never loses an event: with the broker down
events go to a local spool, and they reach Kafka once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from aig_common.events import (
    EventPublisher,
    Journal,
    JournalSyncThread,
    Record,
    Spool,
    decode_records,
)
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


async def test_batches_go_out_while_earlier_ones_wait_for_acks(tmp_path: Path) -> None:
    """With the broker frozen no batch is confirmed, yet the publisher hands the producer
    `max_in_flight` batches, not one, and holds the rest back. Once the broker thaws, every
    event arrives once and in publish order, and the journal is left empty."""
    kafka = LocalKafka(tmp_path / "var", port=free_port(), libs_dir=LIBS_DIR)
    await asyncio.to_thread(kafka.start)
    publisher = EventPublisher(
        kafka.bootstrap_servers,
        tmp_path / "spool",
        client_id="test",
        delivery_timeout_s=30,
        linger_s=0,
        max_batch=5,
        max_in_flight=3,
    )
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await asyncio.to_thread(kafka.create_topics, AIG_TOPICS)
        await publisher.start()
        # A first event connects the producer and fetches the topic's metadata, so what
        # follows needs nothing from the broker until the acks.
        publisher.publish(TOPIC, "acct_1", b"first")
        await asyncio.wait_for(publisher.flush(), 30)
        assert kafka.process is not None
        os.kill(kafka.process.pid, signal.SIGSTOP)
        try:
            for i in range(40):
                publisher.publish(TOPIC, "acct_1", f"event-{i}".encode())
            for _ in range(100):
                if len(publisher._deliveries) == 3:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert len(publisher._deliveries) == 3
            assert publisher._queue.qsize() == 40 - 3 * 5
        finally:
            os.kill(kafka.process.pid, signal.SIGCONT)
        await asyncio.wait_for(publisher.flush(), 60)
        assert publisher.spooled_bytes == 0
        values = await _consume(kafka.bootstrap_servers, 41)
        assert values == [b"first"] + [f"event-{i}".encode() for i in range(40)]
        journal = list((tmp_path / "spool").glob("test.journal.*"))
        assert journal and sum(path.stat().st_size for path in journal) == 0
    finally:
        await publisher.stop()
        await asyncio.to_thread(kafka.stop)


def test_a_published_event_survives_a_crash_before_any_send(tmp_path: Path) -> None:
    """The process dies right after publish() (no flush, no stop): the next start of a
    publisher on the same directory finds the events in the journal and spools them."""
    unreachable = f"127.0.0.1:{free_port()}"
    crashed = EventPublisher(unreachable, tmp_path, client_id="router")
    published = [f"event-{i}".encode() for i in range(5)]
    for value in published:
        crashed.publish(TOPIC, "acct_1", value)
    # No start, flush or stop: as if kill -9 hit it now.
    restarted = EventPublisher(unreachable, tmp_path, client_id="router", delivery_timeout_s=0.5)
    restarted._recover_journal()
    assert [record.value for record in restarted._spool.take()] == published
    # The dead process's segment is gone; only the new process's own (empty) one is left.
    assert [path.stat().st_size for path in tmp_path.glob("router.journal.*")] == [0]


def test_journal_segments_are_deleted_once_settled(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "j", segment_bytes=200)
    record = Record(TOPIC, b"acct_1", b"x" * 100)
    ids = [journal.write(record) for _ in range(5)]
    assert len(set(ids)) >= 3  # sealed at 200 bytes: several segments
    assert len(list(tmp_path.glob("j.journal.*"))) == len(set(ids))
    journal.settle(ids[:-1])
    # Sealed segments whose records are all settled are gone; the last one still holds one.
    remaining = list(tmp_path.glob("j.journal.*"))
    assert decode_records(b"".join(path.read_bytes() for path in remaining)) == [record]
    journal.settle(ids[-1:])
    assert sum(path.stat().st_size for path in tmp_path.glob("j.journal.*")) == 0
    journal.close()


def test_a_burst_of_writes_is_synced_once_and_an_idle_journal_never(tmp_path: Path) -> None:
    """The sync thread waits for a write (it does not poll), then syncs every write of its
    interval at once; a write during a sync gets a sync of its own. Stopping ends it."""
    journal = Journal(tmp_path, "router")
    synced: list[bool] = []
    sync = journal.sync

    def counted_sync() -> None:
        synced.append(journal.dirty)
        sync()

    journal.sync = counted_sync  # type: ignore[method-assign]
    syncer = JournalSyncThread(journal, 0.01, name="test-journal-sync")
    syncer.start()
    record = Record(TOPIC, b"acct_1", b"event")
    try:
        time.sleep(0.1)
        assert synced == []
        for _ in range(3):
            journal.write(record)
            syncer.written()
        time.sleep(0.1)
        assert synced == [True] and not journal.dirty
        journal.write(record)
        syncer.written()
        time.sleep(0.1)
        assert synced == [True, True] and not journal.dirty
    finally:
        syncer.stop()
    assert not syncer._thread.is_alive()
    journal.close()


async def test_the_sync_thread_is_woken_after_the_answer_not_by_the_publish(
    tmp_path: Path,
) -> None:
    """A publish journals its record at once and wakes the sync thread two loop turns later:
    after the call's answer is written (in the publish's turn by an edge running the router,
    in the next by the call socket's Cork). A burst of publishes wakes it once."""
    publisher = EventPublisher(f"127.0.0.1:{free_port()}", tmp_path, client_id="wake")
    woken: list[bool] = []
    publisher._syncer.written = lambda: woken.append(publisher._journal.dirty)  # type: ignore[method-assign]
    try:
        for index in range(3):
            publisher.publish(TOPIC, "acct_1", f"event-{index}".encode())
        assert publisher._journal.dirty and woken == []
        await asyncio.sleep(0)
        assert woken == []  # the turn in which the call socket writes the answer
        await asyncio.sleep(0)
        assert woken == [True]
        publisher.publish(TOPIC, "acct_1", b"later")
        for _ in range(3):
            await asyncio.sleep(0)
        assert woken == [True, True]
    finally:
        publisher._journal.close()


async def test_a_flush_waits_for_what_was_published_before_it_not_after(tmp_path: Path) -> None:
    """A flush returns once the records published before it are in Kafka, while one
    published after it is still on its way. It used to wait until the publisher had nothing
    unsettled at all, which under a steady stream of events (the jobs service publishes
    every task's changes, and flushes before recording each) comes only in a lull. Each
    record here is a batch of its own that lingers `linger_s` before it is sent, so "after"
    leaves that long after "before" is confirmed."""
    linger_s = 2.0
    kafka = LocalKafka(tmp_path / "var", port=free_port(), libs_dir=LIBS_DIR)
    await asyncio.to_thread(kafka.start)
    publisher = EventPublisher(
        kafka.bootstrap_servers,
        tmp_path / "spool",
        client_id="test",
        linger_s=linger_s,
        max_batch=1,
    )
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await asyncio.to_thread(kafka.create_topics, AIG_TOPICS)
        await publisher.start()
        publisher.publish(TOPIC, "acct_1", b"first")  # connects the producer
        await asyncio.wait_for(publisher.flush(), 30)

        publisher.publish(TOPIC, "acct_1", b"before")
        flushed = asyncio.create_task(publisher.flush())
        await asyncio.sleep(0.1)
        publisher.publish(TOPIC, "acct_1", b"after")
        await asyncio.wait_for(flushed, 30)
        assert publisher.unsettled == 1  # "after" is still lingering

        await asyncio.wait_for(publisher.flush(), 30)
        assert publisher.unsettled == 0
        values = await _consume(kafka.bootstrap_servers, 3)
        assert values == [b"first", b"before", b"after"]
    finally:
        await publisher.stop()
        await asyncio.to_thread(kafka.stop)
