"""`python -m edge`: the public HTTP gateway."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from aig_common import logs, tracing
from aig_common.runtime import freeze_startup_heap

from .app import create_app
from .settings import EdgeSettings
from .wire import JsonErrorHttpToolsProtocol


class _EdgeServer(uvicorn.Server):
    """uvicorn re-raises the SIGTERM it caught once its graceful shutdown is over, so the
    process would end killed by the signal (-15). A drained edge exits 0 instead, as every
    other aig service does: the orchestrator sees a clean stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, which uvicorn listens on: every edge started
    with AIG_EDGE_REUSE_PORT on the same host and port gets its share of new connections
    from the kernel, so N edges use N cores behind one address without a balancer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def main() -> None:
    logs.configure("edge", relay_native_stderr=True)
    tracing.setup_from_env("edge")
    settings = EdgeSettings.from_env()
    app = create_app(settings)
    freeze_startup_heap()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=JsonErrorHttpToolsProtocol,
        access_log=False,
        # No `server: uvicorn` on every answer: a header per response, and it names the
        # software behind the gateway to anyone probing it.
        server_header=False,
        log_config=None,  # its loggers go to the root handler, in AIG_LOG_FORMAT
        log_level="info",
        # SIGTERM: uvicorn stops accepting, then waits for requests and streams in flight,
        # at most AIG_DRAIN_S, before the lifespan closes the router channel and the DB.
        timeout_graceful_shutdown=int(settings.drain_s),
        # uvicorn's default, 5 s, is httpx's own idle expiry: a client could send on a
        # connection in the very moment the edge closed it (a ReadError, not an answer).
        timeout_keep_alive=settings.keep_alive_s,
    )
    server = _EdgeServer(config)
    if settings.reuse_port:
        server.run(sockets=[reuse_port_socket(settings.host, settings.port)])
    else:
        server.run()


if __name__ == "__main__":
    main()
