"""Session-wide servers, chosen by AIG_TEST_BACKENDS (tests/backends.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

# This process runs gRPC (router tests, in-process channels) and also forks every service of
# the stacks the tests start. With gRPC's fork support on (its C core's default), a forked
# child restarts gRPC's epoll poller between fork and exec, whose descriptor exec's
# close_fds then closes: the child can write `epoll_wait error: Bad file descriptor` into
# the service's log before the service's Python starts, a raw line that failed the
# every-line-is-JSON check in CI. No test forks a child that goes on using gRPC. Set before
# any test module imports grpc (gRPC reads it when its core starts).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

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
