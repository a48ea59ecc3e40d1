"""Session-wide servers, chosen by AIG_TEST_BACKENDS (tests/backends.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import BackendsUnavailable, ContainerServers, mode, require_docker
from pg import local_postgres


def pytest_configure(config: pytest.Config) -> None:
    """Containers mode without a Docker engine stops the run here, before any test, with
    the reason; it never falls back to other servers or skips."""
    try:
        if mode() == "containers":
            require_docker()
    except BackendsUnavailable as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def container_servers() -> Iterator[ContainerServers]:
    """The servers of containers mode; asked for only in that mode."""
    servers = ContainerServers()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database on a PostgreSQL server for the session: Debian's binaries (local) or a
    container. Tests create databases of their own on the same server (pg.create_database)."""
    if mode() == "containers":
        servers: ContainerServers = request.getfixturevalue("container_servers")
        yield servers.postgres_url()
        return
    yield from local_postgres()
