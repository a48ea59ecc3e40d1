"""`python -m edge`: the public HTTP gateway."""

from __future__ import annotations

import contextlib
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


def main() -> None:
    logs.configure("edge")
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
        log_config=None,  # its loggers go to the root handler, in AIG_LOG_FORMAT
        log_level="info",
        # SIGTERM: uvicorn stops accepting, then waits for requests and streams in flight,
        # at most AIG_DRAIN_S, before the lifespan closes the router channel and the DB.
        timeout_graceful_shutdown=int(settings.drain_s),
    )
    _EdgeServer(config).run()


if __name__ == "__main__":
    main()
