from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pg
import pytest


def test_missing_postgres_binaries_are_reported_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg, "DEBIAN_POSTGRES_ROOT", tmp_path)

    with pytest.raises(FileNotFoundError, match="apt-get install postgresql"):
        pg.find_postgres_bin_dir()


def test_the_newest_postgres_version_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in ("9", "15", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    monkeypatch.setattr(pg, "DEBIAN_POSTGRES_ROOT", tmp_path)

    assert pg.find_postgres_bin_dir() == tmp_path / "16" / "bin"


def test_a_killed_test_run_takes_its_postgres_server_with_it(tmp_path: Path) -> None:
    """The server is the run's child with a parent-death signal, not pg_ctl's daemon: kill -9
    of the process that started it (a killed pytest) stops it, and nothing is left listening."""
    tests_dir = Path(pg.__file__).parent
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pg, sys, time\n"
            "server = pg.PostgresServer.start()\n"
            "print(server._process.pid, server.port, flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=tests_dir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), *sys.path])},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    postmaster_pid, port = (int(word) for word in starter.stdout.readline().split())
    assert _listening(port)
    starter.kill()
    starter.wait()
    # Bounded wait for the immediate shutdown to finish: the assertion is that it happens.
    deadline = time.monotonic() + 60
    while _alive(postmaster_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(postmaster_pid)
    assert not _listening(port)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent (the killed starter) is gone, init will reap it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
