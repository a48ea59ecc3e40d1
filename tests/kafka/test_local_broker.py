"""The local Kafka broker of the devstack: a real KRaft node, fetched with Maven, no Docker.

The jars are taken from the repo's var/kafka/libs (downloaded there on first use), or from
AIG_KAFKA_LIBS_DIR, so a test run never downloads them twice.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devstack.kafka import (
    AIG_TOPICS,
    REPO_ROOT,
    ExternalKafka,
    KafkaStartError,
    LocalKafka,
    kafka_from_env,
    new_cluster_id,
)
from devstack.processes import free_port

LIBS_DIR = Path(os.environ.get("AIG_KAFKA_LIBS_DIR", REPO_ROOT / "var" / "kafka" / "libs"))
USAGE_TOPIC = "aig.usage.v1"
RECEIVE_TIMEOUT_S = 30


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "var", port=free_port(), libs_dir=LIBS_DIR)
    yield kafka
    kafka.stop()


async def produce(bootstrap_servers: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            USAGE_TOPIC, value, key=key, headers=[("traceparent", b"00-" + b"ab" * 16 + b"-01")]
        )
    finally:
        await producer.stop()


async def consume_one(bootstrap_servers: str, group_id: str) -> ConsumerRecord[bytes, bytes]:
    """The next record for `group_id`, committed afterwards, as a billing consumer would."""
    consumer = AIOKafkaConsumer(
        USAGE_TOPIC,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), RECEIVE_TIMEOUT_S)
        await consumer.commit()
        return record
    finally:
        await consumer.stop()


async def topic_config(bootstrap_servers: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [(_code, _message, _type, _name, entries)] = response.resources
    return {entry[0]: entry[1] for entry in entries}


async def test_broker_serves_topics_and_keeps_data_and_offsets_across_a_restart(
    broker: LocalKafka,
) -> None:
    broker.start()
    broker.wait_ready()
    cluster_id = broker.cluster_id
    assert cluster_id is not None

    assert broker.create_topics(AIG_TOPICS) == {name: 6 for name in AIG_TOPICS}
    # Creating again is a no-op, so every start of the stack may call it.
    assert broker.create_topics(AIG_TOPICS) == {name: 6 for name in AIG_TOPICS}
    config = await topic_config(broker.bootstrap_servers, USAGE_TOPIC)
    assert config["min.insync.replicas"] == "1"
    assert config["retention.ms"] == str(7 * 24 * 3600 * 1000)

    await produce(broker.bootstrap_servers, b"acct_1", b"first")
    first = await consume_one(broker.bootstrap_servers, "billing")
    assert (first.key, first.value) == (b"acct_1", b"first")
    assert dict(first.headers)["traceparent"].startswith(b"00-")

    broker.stop()
    assert broker.process is None

    # Same log dir and broker port, but a new controller port: the node must come back as
    # the same cluster, with the record and the committed offset of `billing` intact.
    restarted = LocalKafka(broker.var_dir, port=broker.port, libs_dir=LIBS_DIR)
    try:
        restarted.start()
        restarted.wait_ready()
        assert restarted.cluster_id == cluster_id
        await produce(restarted.bootstrap_servers, b"acct_1", b"second")

        after_commit = await consume_one(restarted.bootstrap_servers, "billing")
        assert after_commit.value == b"second"
        from_the_start = await consume_one(restarted.bootstrap_servers, "replay")
        assert from_the_start.value == b"first"
    finally:
        restarted.stop()


def test_a_taken_port_is_reported_before_java_starts(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        kafka = LocalKafka(tmp_path, port=port, libs_dir=LIBS_DIR)
        with pytest.raises(KafkaStartError, match=f"port {port} on 127.0.0.1 is taken"):
            kafka.start()
    assert kafka.process is None


def test_kafka_bootstrap_servers_selects_an_external_cluster(tmp_path: Path) -> None:
    external = kafka_from_env(tmp_path, env={"KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092"})
    assert external == ExternalKafka("kafka-0:9092")

    local = kafka_from_env(tmp_path, env={"AIG_KAFKA_PORT": "19092"})
    assert isinstance(local, LocalKafka)
    assert local.bootstrap_servers == "127.0.0.1:19092"
    assert local.data_dir == tmp_path / "kafka" / "data"


def test_cluster_ids_have_kafkas_format() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
