"""Runs the sandbox with uvicorn on a free 127.0.0.1 port for the whole session."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from sandbox.app import create_app
from sandbox.settings import SandboxSettings


class _BackgroundServer:
    def __init__(self) -> None:
        app = create_app(SandboxSettings(port=0, stream_chunks=8, answer_tokens=40))
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="sandbox", daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sandbox server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    server = _BackgroundServer()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def control(sandbox_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client for the control API (and raw wire checks)."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean_sandbox(control: httpx.Client) -> None:
    control.post("/_sandbox/reset").raise_for_status()
    control.post("/_sandbox/config", json={"latency_ms": 0, "chunk_interval_ms": 0})
