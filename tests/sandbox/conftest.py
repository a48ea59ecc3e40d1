"""Runs the sandbox with uvicorn on a free 127.0.0.1 port for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sandbox_server import BackgroundServer

from sandbox.app import create_app
from sandbox.settings import SandboxSettings


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    server = BackgroundServer(
        create_app(
            SandboxSettings(
                port=0, stream_chunks=8, answer_tokens=40, media_queue_ms=50, media_render_ms=300
            )
        )
    )
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def control(sandbox_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client for the control API (and raw wire checks)."""
    # Session-long: drop idle connections before uvicorn's 5 s keep-alive timeout closes them.
    with httpx.Client(
        base_url=sandbox_url, timeout=10, limits=httpx.Limits(keepalive_expiry=2)
    ) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean_sandbox(control: httpx.Client) -> None:
    control.post("/_sandbox/reset").raise_for_status()
    control.post(
        "/_sandbox/config",
        json={
            "latency_ms": 0,
            "chunk_interval_ms": 0,
            "media_queue_ms": 50,
            "media_render_ms": 300,
        },
    )
