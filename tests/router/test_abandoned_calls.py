"""A call the edge cancels before anything went upstream still produces its usage event, at
no cost (one cancelled with a request upstream: tests/router/test_failover.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from aig.router.v1 import router_pb2 as pb
from catalog.live import LiveCatalog
from catalog.models import load_catalog
from router.config import RouterConfig
from router.metering import CLIENT_CLOSED
from router.server import RouterServicer


class _Hanging:
    """Stands in for the chat and embeddings services: the upstream never answers."""

    async def complete(self, body: dict[str, Any], progress: Any = None, native: Any = None) -> Any:
        await asyncio.Event().wait()

    async def create(self, body: dict[str, Any]) -> Any:
        await asyncio.Event().wait()


class _Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, context: pb.CallContext, **fields: Any) -> None:
        self.records.append({"reservation_id": context.reservation_id, **fields})


@pytest.mark.parametrize("endpoint", ["chat.completions", "embeddings"])
async def test_a_cancelled_call_is_metered_as_client_closed(endpoint: str) -> None:
    meter = _Recorder()
    hanging = _Hanging()
    config = LiveCatalog.fixed(RouterConfig.build(load_catalog(), {}, "http://127.0.0.1:1"))
    servicer = RouterServicer(config, hanging, hanging, meter)  # type: ignore[arg-type]
    context = pb.CallContext(request_id="req_1", account_id="acct_1", reservation_id="resv_1")
    call: Coroutine[Any, Any, Any]
    if endpoint == "chat.completions":
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
        call = servicer.ChatCompletion(pb.ChatRequest(context=context, body=body), None)
    else:
        body = b'{"model": "text-embedding-3-small", "input": "hi"}'
        call = servicer.CreateEmbeddings(pb.EmbeddingsRequest(context=context, body=body), None)  # type: ignore[arg-type]
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(meter.records) == 1
    record = meter.records[0]
    assert record["reservation_id"] == "resv_1"
    assert record["status"] == CLIENT_CLOSED and record["usage"] is None
    assert record["endpoint"] == endpoint
