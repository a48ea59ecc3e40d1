"""Publishing events to Kafka without ever failing a call or losing an event.

`publish()` never waits for the broker: it appends the record to a write-ahead journal on
local disk (one `write`, into the page cache, so a killed process loses nothing) and
enqueues it. The journal is fsynced every few milliseconds on a thread of its own (group
commit), so even a machine crash loses at most that window. A background task sends
batches with an idempotent, acks=all producer; while one batch waits for the broker's acks
the next is already gathering and sent (a few batches in flight, never more), so a batch's
round trip does not hold back the records behind it. Whatever cannot be delivered (broker down,
timeout) is appended to a spool file (fsynced); the spool is sent again when the broker is
back. Journal segments are deleted once every record in them was confirmed by the broker or
moved to the spool, and a process that starts and finds journal segments (it crashed) moves
their records to the spool. A record may then reach Kafka twice, which is fine: every
consumer is idempotent by event id.

One spool directory per process: two processes must not share `AIG_SPOOL_DIR` and
`client_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

log = logging.getLogger("aig.events")

EVENTS_SENT = Counter("aig_events_sent_total", "Events delivered to Kafka", ["topic"])
EVENTS_SPOOLED = Counter("aig_events_spooled_total", "Events written to the local spool")
SPOOL_BYTES = Gauge("aig_events_spool_bytes", "Bytes waiting in the local spool")

_FRAME = struct.Struct(">II")  # metadata length, value length


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def encode(self) -> bytes:
        meta = orjson.dumps(
            {
                "topic": self.topic,
                "key": self.key.hex(),
                "headers": [[name, value.hex()] for name, value in self.headers],
            }
        )
        return _FRAME.pack(len(meta), len(self.value)) + meta + self.value


def decode_records(data: bytes) -> list[Record]:
    """Reads spool frames; a torn last frame (crash mid-write) is dropped, never misread."""
    records: list[Record] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        meta_len, value_len = _FRAME.unpack_from(data, offset)
        end = offset + _FRAME.size + meta_len + value_len
        if end > len(data):
            break
        meta = orjson.loads(data[offset + _FRAME.size : offset + _FRAME.size + meta_len])
        records.append(
            Record(
                topic=meta["topic"],
                key=bytes.fromhex(meta["key"]),
                value=data[end - value_len : end],
                headers=tuple((name, bytes.fromhex(value)) for name, value in meta["headers"]),
            )
        )
        offset = end
    return records


class Spool:
    """An append-only file of records that could not be delivered yet."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.spool"
        self._draining = directory / f"{name}.draining"

    def append(self, records: Sequence[Record]) -> None:
        with self.path.open("ab") as spool:
            spool.write(b"".join(record.encode() for record in records))
            spool.flush()
            os.fsync(spool.fileno())
        EVENTS_SPOOLED.inc(len(records))
        SPOOL_BYTES.set(self.size())

    def size(self) -> int:
        return sum(p.stat().st_size for p in (self.path, self._draining) if p.exists())

    def take(self) -> list[Record]:
        """Moves the spool aside and returns its records; `done()` deletes them once sent."""
        if not self._draining.exists():
            if not self.path.exists():
                return []
            self.path.rename(self._draining)
        return decode_records(self._draining.read_bytes())

    def done(self) -> None:
        self._draining.unlink(missing_ok=True)
        SPOOL_BYTES.set(self.size())


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    size: int = 0
    written: int = 0
    settled: int = 0
    sealed: bool = False


class Journal:
    """The write-ahead file every published record enters before it is sent.

    Records live in numbered segments; the current one takes appends and is sealed once it
    passes `segment_bytes`. A segment is deleted (or, the current one, truncated) when every
    record written to it is settled: confirmed by the broker or copied into the spool.
    """

    def __init__(self, directory: Path, name: str, segment_bytes: int = 1 << 20) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._name = name
        self._segment_bytes = segment_bytes
        self._segments: dict[int, _Segment] = {}
        self._next_id = 0
        self._current = self._open_segment()
        self.dirty = False

    def _segment_path(self, segment_id: int) -> Path:
        return self._directory / f"{self._name}.journal.{segment_id}"

    def _open_segment(self) -> _Segment:
        while self._segment_path(self._next_id).exists():
            self._next_id += 1
        path = self._segment_path(self._next_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        segment = self._segments[self._next_id] = _Segment(path, fd)
        self._next_id += 1
        return segment

    def leftovers(self) -> list[Path]:
        """Segments of an earlier process (it crashed): their records were never settled."""
        own = {segment.path for segment in self._segments.values()}
        found = self._directory.glob(f"{self._name}.journal.*")
        return sorted(path for path in found if path not in own)

    def write(self, record: Record) -> int:
        """Appends `record`; returns its segment id for `settle`."""
        segment = self._current
        data = record.encode()
        os.write(segment.fd, data)
        segment.size += len(data)
        segment.written += 1
        self.dirty = True
        segment_id = self._next_id - 1
        if segment.size >= self._segment_bytes:
            os.fsync(segment.fd)  # once per sealed segment: it will not be synced again
            segment.sealed = True
            self._current = self._open_segment()
        return segment_id

    def settle(self, segment_ids: Sequence[int]) -> None:
        for segment_id in segment_ids:
            segment = self._segments.get(segment_id)
            if segment is None:
                continue
            segment.settled += 1
            if segment.settled < segment.written:
                continue
            if segment.sealed:
                os.close(segment.fd)
                segment.path.unlink(missing_ok=True)
                del self._segments[segment_id]
            else:
                # Everything in it is settled: start it over. Not synced: if this is lost
                # in a machine crash the records are sent again, and consumers dedupe.
                os.ftruncate(segment.fd, 0)
                segment.size = segment.written = segment.settled = 0

    def sync(self) -> None:
        """Runs on the journal's sync thread. The event loop may seal the current segment
        meanwhile: sealing fsyncs it, so a sync that then fails (its descriptor closed once
        the sealed segment was settled) loses nothing."""
        self.dirty = False
        with contextlib.suppress(OSError):
            os.fdatasync(self._current.fd)

    def close(self) -> None:
        for segment in self._segments.values():
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._segments.clear()


class JournalSyncThread:
    """Syncs the journal at most `interval_s` after a write, on a thread of its own.

    Without a sync, a record written to the journal is safe from a crash of the process but
    not of the machine. One sync covers every write of its interval. This was a task that
    slept `interval_s` after a write and then ran the fdatasync through asyncio.to_thread:
    at 200 calls/s about one timer, one executor hand-off and one extra wake-up of the event
    loop per call. The thread never wakes the loop; a write only sets a threading.Event, and
    only when it is not set already. Nor does it poll while nothing is written: polling every
    5 ms cost each idle publishing service ~9 CPU-ms per second.
    """

    def __init__(self, journal: Journal, interval_s: float, *, name: str) -> None:
        self._journal = journal
        self._interval_s = interval_s
        self._written = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def written(self) -> None:
        """Called on the event loop after each journal write."""
        if not self._written.is_set():
            self._written.set()

    def _run(self) -> None:
        while True:
            self._written.wait()
            if self._stopping:
                return
            time.sleep(self._interval_s)
            # Cleared before the sync: a write during it sets the event for the next round.
            self._written.clear()
            if self._journal.dirty:
                self._journal.sync()

    def stop(self) -> None:
        """Returns once the thread has ended (after the sync in hand, if any)."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self._written.set()
        self._thread.join()


@dataclass(slots=True)
class _BatchMark:
    """A batch handed to the producer: the count of records published up to its last."""

    last: int
    settled: bool = False


class EventPublisher:
    def __init__(
        self,
        bootstrap_servers: str,
        spool_dir: Path,
        *,
        client_id: str,
        delivery_timeout_s: float = 10.0,
        retry_interval_s: float = 1.0,
        max_batch: int = 1000,
        linger_s: float = 0.02,
        journal_sync_interval_s: float = 0.005,
        max_in_flight: int = 4,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._spool = Spool(spool_dir, client_id)
        self._delivery_timeout_s = delivery_timeout_s
        self._retry_interval_s = retry_interval_s
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._journal = Journal(spool_dir, client_id)
        self._queue: asyncio.Queue[tuple[Record, int]] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._sender: asyncio.Task[None] | None = None
        self._syncer = JournalSyncThread(
            self._journal, journal_sync_interval_s, name=f"{client_id}-journal-sync"
        )
        # Batches sent and not yet confirmed or spooled. One was the old way: the next batch
        # waited out the acks of the one before, and at a saturated router that wait was most
        # of the settlement lag spent in the publisher (p99 0.4-0.8 s at two cores' peak).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._deliveries: set[asyncio.Task[None]] = set()
        # Records are counted as published, and batches take them off the queue in that
        # order, so what has settled is every record up to a count: `flush` waits for the
        # count when it was called, not for the publisher to go idle (under a steady stream
        # it never does, and the jobs service's every state change waited for a lull).
        self._published = 0
        self._batched = 0
        self._settled_through = 0
        self._batches: deque[_BatchMark] = deque()  # handed to the producer, in order
        self._flushes: deque[tuple[int, asyncio.Future[None]]] = deque()  # by count
        self._sync_wake_pending = False

    def publish(
        self,
        topic: str,
        key: str,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self._published += 1
        record = Record(topic, key.encode(), value, tuple(headers))
        try:
            segment_id = self._journal.write(record)
            self._wake_syncer_soon()
        except OSError as exc:
            # A full or broken disk must not fail the call; the record still goes out.
            log.error("event journal write failed (%s); event kept in memory only", exc)
            segment_id = -1
        self._queue.put_nowait((record, segment_id))

    def _wake_syncer_soon(self) -> None:
        """Wakes the sync thread two turns of the loop from now, not here. The record is in
        the journal already (safe from the process's crash); the sync only bounds what a
        machine crash can take, so a few microseconds later changes nothing. Woken in the
        publish, the thread cost the call in hand ~20 µs of its metering stage at 50 calls/s
        (bench.stages); two turns on, the answer has gone out: in the edge's process in this
        turn, on the call socket in the next (its Cork writes a turn after the put)."""
        if self._sync_wake_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside a loop (a script, a test): no answer waits
            self._syncer.written()
            return
        self._sync_wake_pending = True
        loop.call_soon(loop.call_soon, self._wake_syncer)

    def _wake_syncer(self) -> None:
        self._sync_wake_pending = False
        self._syncer.written()

    async def start(self) -> None:
        self._recover_journal()
        self._sender = asyncio.create_task(self._run(), name=f"{self._client_id}-publisher")
        self._syncer.start()

    def _recover_journal(self) -> None:
        """Moves the records of a crashed process's journal into the spool, to be resent."""
        for path in self._journal.leftovers():
            records = decode_records(path.read_bytes())
            if records:
                self._spool.append(records)
                log.warning("recovered %d unsent events from %s", len(records), path.name)
            path.unlink()

    async def flush(self) -> None:
        """Waits until everything published so far is in Kafka or in the spool; what is
        published while it waits is not waited for."""
        target = self._published
        if self._settled_through >= target:
            return
        settled = asyncio.get_running_loop().create_future()
        # `_published` never goes down, so the waits stay in the order they settle in.
        self._flushes.append((target, settled))
        await settled

    @property
    def unsettled(self) -> int:
        """Records published and not yet known to be in Kafka or in the spool, counted in
        publish order (a batch confirmed before one sent ahead of it still counts)."""
        return self._published - self._settled_through

    @property
    def spooled_bytes(self) -> int:
        return self._spool.size()

    async def stop(self) -> None:
        await self.flush()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        # Flushed, so every delivery has settled its batch; at most one is still returning.
        if self._deliveries:
            await asyncio.wait(self._deliveries)
        await asyncio.to_thread(self._syncer.stop)
        self._journal.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _run(self) -> None:
        while True:
            # A free slot first, then the batch: what arrives while every slot waits for acks
            # joins the next batch instead of going out in one of its own.
            await self._in_flight.acquire()
            try:
                item = await asyncio.wait_for(self._queue.get(), self._retry_interval_s)
            except TimeoutError:
                item = None
            batch = [item] if item is not None else []
            if batch and self._linger_s > 0 and self._queue.qsize() < self._max_batch:
                # Let a batch gather: one produce request per linger instead of per call or
                # two. Nobody waits on an event, and the consumer batches for longer anyway.
                await asyncio.sleep(self._linger_s)
            while batch and len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not batch:
                self._in_flight.release()
            else:
                # Handed to the producer here, in publish order; only the wait for the acks
                # runs beside the next batch.
                records = [record for record, _ in batch]
                self._batched += len(batch)
                mark = _BatchMark(self._batched)
                self._batches.append(mark)
                producer, pending, failed = await self._enqueue(records)
                delivery = asyncio.create_task(
                    self._deliver(batch, mark, producer, pending, failed),
                    name=f"{self._client_id}-delivery",
                )
                self._deliveries.add(delivery)
                delivery.add_done_callback(self._delivered)
            if self._spool.size():
                # Spooled records go out after those in flight are confirmed or spooled too.
                if self._deliveries:
                    await asyncio.wait(self._deliveries)
                await self._drain_spool()

    def _delivered(self, delivery: asyncio.Task[None]) -> None:
        self._deliveries.discard(delivery)
        if not delivery.cancelled() and (exc := delivery.exception()) is not None:
            # Its records stay in the journal and are sent again by the next process.
            log.error("event delivery failed: %r", exc)

    async def _deliver(
        self,
        batch: list[tuple[Record, int]],
        mark: _BatchMark,
        producer: AIOKafkaProducer | None,
        pending: list[tuple[Record, asyncio.Future[object]]],
        failed: list[Record],
    ) -> None:
        try:
            failed = failed + await self._confirmed(producer, pending)
            if failed:
                self._spool.append(failed)
            # Confirmed or durable in the spool: the journal need not keep them.
            self._journal.settle([segment_id for _, segment_id in batch])
        finally:
            self._in_flight.release()
            mark.settled = True
            self._settle_in_order()

    def _settle_in_order(self) -> None:
        """Moves the settled count past every batch settled from the oldest on (a batch
        may settle before one sent ahead of it) and ends the flushes it covers."""
        batches = self._batches
        while batches and batches[0].settled:
            self._settled_through = batches.popleft().last
        flushes = self._flushes
        while flushes and flushes[0][0] <= self._settled_through:
            _, settled = flushes.popleft()
            if not settled.done():  # a cancelled flush
                settled.set_result(None)

    async def _drain_spool(self) -> None:
        records = self._spool.take()
        if not records:
            self._spool.done()
            return
        failed = await self._send(records)
        if failed:
            # Keep the draining file for the next try; new failures go to the spool file.
            return
        self._spool.done()
        log.info("delivered %d spooled events", len(records))

    async def _ensure_producer(self) -> AIOKafkaProducer | None:
        if self._producer is not None:
            return self._producer
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=int(self._delivery_timeout_s * 1000),
        )
        try:
            await asyncio.wait_for(producer.start(), self._delivery_timeout_s)
        except Exception as exc:
            log.warning("Kafka unreachable (%s); events go to the local spool", type(exc).__name__)
            with contextlib.suppress(Exception):
                await producer.stop()
            return None
        self._producer = producer
        return producer

    async def _send(self, records: Sequence[Record]) -> list[Record]:
        """Sends records and waits for the acks; returns those not confirmed by the broker."""
        producer, pending, failed = await self._enqueue(records)
        return failed + await self._confirmed(producer, pending)

    async def _enqueue(
        self, records: Sequence[Record]
    ) -> tuple[AIOKafkaProducer | None, list[tuple[Record, asyncio.Future[object]]], list[Record]]:
        """Hands records to the producer in order; returns the producer, each handed record
        with its delivery future, and the records it would not take."""
        producer = await self._ensure_producer()
        if producer is None:
            return None, [], list(records)
        pending: list[tuple[Record, asyncio.Future[object]]] = []
        failed: list[Record] = []
        for record in records:
            try:
                future = await producer.send(
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
                pending.append((record, future))
            except Exception:
                failed.append(record)
        if failed:
            await self._discard_producer(producer)
        return producer, pending, failed

    async def _confirmed(
        self,
        producer: AIOKafkaProducer | None,
        pending: list[tuple[Record, asyncio.Future[object]]],
    ) -> list[Record]:
        """Waits for the broker's acks; returns the records it did not confirm."""
        if not pending:
            return []
        # One wait for the whole batch: a wait_for per record cost more than the send.
        await asyncio.wait([future for _, future in pending], timeout=self._delivery_timeout_s)
        failed: list[Record] = []
        for record, future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                EVENTS_SENT.labels(record.topic).inc()
            else:
                future.cancel()
                failed.append(record)
        if failed and producer is not None:
            await self._discard_producer(producer)
        return failed

    async def _discard_producer(self, producer: AIOKafkaProducer) -> None:
        """A producer that failed may be wedged on a dead connection: start afresh. Only
        if it is still the current one: a batch that was in flight on an older producer
        must not throw away the one started after it."""
        current = self._producer
        if current is None or current is not producer:
            return
        self._producer = None
        with contextlib.suppress(Exception):
            await current.stop()
