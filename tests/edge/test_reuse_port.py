"""AIG_EDGE_REUSE_PORT: several edge processes on one host share one listening port."""

from __future__ import annotations

import socket

import pytest

from edge.__main__ import reuse_port_socket
from edge.settings import EdgeSettings

BASE_ENV = {"AIG_ADMIN_TOKEN": "admin", "AIG_KEY_PEPPER": "pepper"}


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True), ("true", True)]
)
def test_reuse_port_setting(value: str | None, expected: bool) -> None:
    env = dict(BASE_ENV)
    if value is not None:
        env["AIG_EDGE_REUSE_PORT"] = value
    assert EdgeSettings.from_env(env).reuse_port is expected


def test_two_edges_bind_one_port_and_both_accept() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuse_port_socket("127.0.0.1", port)
    try:
        for listener in (first, second):
            listener.listen()
            listener.settimeout(0.05)
        accepted = set()
        # The kernel hashes each new connection (by its source port) to one listener: over
        # a few dozen connections both get some.
        for _ in range(64):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                for index, listener in enumerate((first, second)):
                    try:
                        connection, _ = listener.accept()
                    except TimeoutError:
                        continue
                    connection.close()
                    accepted.add(index)
            if accepted == {0, 1}:
                break
        assert accepted == {0, 1}
    finally:
        first.close()
        second.close()


def test_a_plain_socket_cannot_share_the_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    first.listen()
    try:
        plain = socket.socket()
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", first.getsockname()[1]))
        plain.close()
    finally:
        first.close()
