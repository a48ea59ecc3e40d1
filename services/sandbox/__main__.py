"""`python -m sandbox`: serve the simulators on AIG_SANDBOX_HOST:AIG_SANDBOX_PORT."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_app
from sandbox.settings import SandboxSettings

SHUTDOWN_GRACE_S = 1


def main() -> None:
    settings = SandboxSettings.from_env()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        # A simulated call can be told to hang for good, and uvicorn's SIGTERM otherwise
        # waits for every open call: each stack that had one took the full 10 s its
        # supervisor allows before a kill. A simulator has nothing worth draining.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


if __name__ == "__main__":
    main()
