"""Helpers of the media simulator tests: a webhook receiver, polling an adapter."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobs.providers.base import MediaProvider, ProviderState, ProviderStatus


class WebhookReceiver:
    """Listens on a free 127.0.0.1 port and keeps every POST it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []  # statuses to answer with, in order; then 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 15) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhooks, got {len(self.received)}")
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def poll_until_done(provider: MediaProvider, task: str, model: str) -> ProviderStatus:
    for _ in range(200):
        status = await provider.poll(task, model)
        if status.state in (ProviderState.SUCCEEDED, ProviderState.FAILED):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("the render never finished")
