"""A throwaway PostgreSQL server for tests, from the Debian binaries, without Docker.

`local_postgres()` yields a `postgresql+asyncpg://` URL for the session fixture
`postgres_url` (tests/conftest.py; containers mode takes PostgreSQL from
tests/backends.py instead). With `AIG_TEST_POSTGRES_URL` set, that server is used and
nothing is started. Missing binaries fail the run (CI installs `postgresql`) rather than
skip it: a skipped database suite looks like a green one.

Use `create_database(url)` for a fresh, empty database on the same server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from devstack.lifetime import die_with_parent_preexec
from devstack.processes import free_port

POSTGRES_ENV_URL = "AIG_TEST_POSTGRES_URL"
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
TEST_DATABASE = "aig_test"


def find_postgres_bin_dir() -> Path:
    """The `bin` dir of the newest PostgreSQL under /usr/lib/postgresql/<version>."""
    candidates = [
        path / "bin"
        for path in DEBIAN_POSTGRES_ROOT.glob("*")
        if path.name.isdigit() and (path / "bin" / "initdb").exists()
    ]
    if not candidates:
        raise FileNotFoundError(
            f"no PostgreSQL binaries under {DEBIAN_POSTGRES_ROOT}/<version>/bin; install the "
            f"'postgresql' package (apt-get install postgresql) or set {POSTGRES_ENV_URL}"
        )
    return max(candidates, key=lambda path: int(path.parent.name))


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, trust auth, 127.0.0.1 only."""

    bin_dir: Path
    base_dir: Path
    port: int
    _process: subprocess.Popen[bytes] = field(init=False, repr=False)
    _log: BinaryIO = field(init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = find_postgres_bin_dir()
        base_dir = Path(tempfile.mkdtemp(prefix="aig-pg-"))
        server = cls(bin_dir=bin_dir, base_dir=base_dir, port=free_port())
        try:
            server._init_and_start()
        except BaseException:
            shutil.rmtree(base_dir, ignore_errors=True)
            raise
        return server

    def _init_and_start(self) -> None:
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; hand the directory to its system user.
            shutil.chown(self.base_dir, user=SERVER_USER)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
            # Durability buys nothing for a database deleted after the run.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
        }
        # The postmaster is this process's child, not pg_ctl's daemon: it gets SIGQUIT
        # (immediate shutdown) when the test run dies, so a killed run leaves no server.
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        self._log = open(self.base_dir / "server.log", "ab")  # noqa: SIM115 - the server's lifetime
        # PostgreSQL refuses to run as root; Popen switches to its system user first.
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent_preexec(os.getpid(), signal.SIGQUIT),
            **as_user,
        )
        self._wait_until_ready()

    def _wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited ({self._process.returncode}):\n{self._log_text()}"
                )
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres was not ready within {timeout_s:g} s:\n{self._log_text()}")

    def _log_text(self) -> str:
        log = self.base_dir / "server.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def create_database(self, name: str) -> None:
        self._run(
            "createdb", "--host", "127.0.0.1", "--port", str(self.port), "-U", SERVER_USER, name
        )

    def stop(self) -> None:
        try:
            self._process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        finally:
            self._log.close()
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"{self._log_text()}"
            )


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(url: str, name: str | None = None) -> str:
    """Create an empty database on the server of `url`; return its SQLAlchemy URL."""
    name = name or f"aig_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def local_postgres() -> Iterator[str]:
    """The URL of a database on a running PostgreSQL server, for the session."""
    configured = os.environ.get(POSTGRES_ENV_URL)
    if configured:
        yield configured
        return
    try:
        server = PostgresServer.start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.create_database(TEST_DATABASE)
        yield server.url(TEST_DATABASE)
    finally:
        server.stop()
