"""UUIDv7 ids: the RFC's layout, creation-time order, and never one id twice, not even in a
forked child that inherits the parent's read-ahead randomness."""

from __future__ import annotations

import os
import time
import uuid

from aig_common.ids import uuid7, uuid7_text


def test_an_id_has_the_rfc_9562_layout_and_its_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_the_text_form_is_the_canonical_one_of_a_uuid7() -> None:
    before = time.time_ns() // 1_000_000
    texts = [uuid7_text() for _ in range(1_000)]
    for text in texts:
        value = uuid.UUID(text)
        assert str(value) == text  # lower-case hex, dashes at 8-4-4-4-12
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= time.time_ns() // 1_000_000
    assert len(set(texts)) == len(texts)


def test_ids_sort_by_creation_and_never_repeat() -> None:
    first = [uuid7() for _ in range(5_000)]  # more than one read-ahead of random bytes
    time.sleep(0.002)
    later = uuid7()
    assert len(set(first)) == len(first)
    assert all(later > value for value in first)
    # 74 random bits per id: the random parts differ too, not only the timestamps.
    random_parts = {value.int & ((1 << 76) - 1) for value in first}
    assert len(random_parts) == len(first)


def test_a_forked_child_makes_ids_its_parent_does_not() -> None:
    uuid7()  # the parent has random bytes read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids to the parent and leave at once
        os.close(read)
        os.write(write, b"".join(uuid7().bytes for _ in range(10)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
    parent = {uuid7() for _ in range(10)}
    assert len(child) == 10
    # Without the reset at fork both would take the same bytes and differ only in time.
    random_part = (1 << 74) - 1
    assert not {v.int & random_part for v in child} & {v.int & random_part for v in parent}
