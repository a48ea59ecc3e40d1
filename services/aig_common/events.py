"""Publishing events to Kafka without ever failing a call or losing an event.

`publish()` only enqueues: the response never waits for the broker. A background task
sends batches with an idempotent, acks=all producer. Whatever cannot be delivered (broker
down, timeout) is appended to a spool file on local disk and fsynced; the spool is sent
again when the broker is back, and at the next start after a crash. A record may then
reach Kafka twice, which is fine: every consumer is idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
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
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._spool = Spool(spool_dir, client_id)
        self._delivery_timeout_s = delivery_timeout_s
        self._retry_interval_s = retry_interval_s
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: asyncio.Queue[Record] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._sender: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def publish(
        self,
        topic: str,
        key: str,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self._idle.clear()
        self._queue.put_nowait(Record(topic, key.encode(), value, tuple(headers)))

    async def start(self) -> None:
        self._sender = asyncio.create_task(self._run(), name=f"{self._client_id}-publisher")

    async def flush(self) -> None:
        """Waits until everything published so far is in Kafka or in the spool."""
        await self._idle.wait()

    @property
    def spooled_bytes(self) -> int:
        return self._spool.size()

    async def stop(self) -> None:
        await self.flush()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _run(self) -> None:
        while True:
            try:
                record = await asyncio.wait_for(self._queue.get(), self._retry_interval_s)
            except TimeoutError:
                record = None
            batch = [record] if record is not None else []
            if batch and self._linger_s > 0 and self._queue.qsize() < self._max_batch:
                # Let a batch gather: one produce request per linger instead of per call or
                # two. Nobody waits on an event, and the consumer batches for longer anyway.
                await asyncio.sleep(self._linger_s)
            while batch and len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if batch:
                failed = await self._send(batch)
                if failed:
                    self._spool.append(failed)
            if self._queue.empty():
                self._idle.set()
            if self._spool.size():
                await self._drain_spool()

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
        """Sends records; returns those not confirmed by the broker."""
        producer = await self._ensure_producer()
        if producer is None:
            return list(records)
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
        if pending:
            # One wait for the whole batch: a wait_for per record cost more than the send.
            await asyncio.wait([future for _, future in pending], timeout=self._delivery_timeout_s)
        for record, future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                EVENTS_SENT.labels(record.topic).inc()
            else:
                future.cancel()
                failed.append(record)
        if failed:
            # A producer that failed may be wedged on a dead connection: start afresh.
            with contextlib.suppress(Exception):
                await producer.stop()
            self._producer = None
        return failed
