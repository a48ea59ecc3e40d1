"""Ports for the stack's services: never from the ephemeral range an outgoing connection
could take them from, never the same one twice, never one that is in use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack import processes
from devstack.processes import ephemeral_port_range, free_port


def test_ports_are_outside_the_ephemeral_range_and_distinct() -> None:
    ephemeral = ephemeral_port_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [port for port in ports if port in ephemeral]
    assert all(processes._LOWEST_PORT <= port < 65_536 for port in ports)


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener, socket.socket() as spare_probe:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        spare_probe.bind(("127.0.0.1", 0))
        spare = spare_probe.getsockname()[1]
        spare_probe.close()
        monkeypatch.setattr(processes, "_candidate_ports", lambda: [taken, spare])
        monkeypatch.setattr(processes, "_handed_out", set())
        assert free_port() == spare
        # Both are now unavailable: one in use, one already handed out.
        with pytest.raises(RuntimeError, match="no free TCP port"):
            free_port()


def test_the_range_is_read_from_the_kernel_setting(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t45000\n")
    assert ephemeral_port_range(setting) == range(40_000, 45_001)
    assert ephemeral_port_range(tmp_path / "absent") == range(32_768, 61_000)
