"""The router's call socket: Router.Calls without gRPC.

An edge's chat calls travel as CallFrames / ReplyFrames batches (router.proto), each
length-prefixed on a plain TCP connection (`aig_common.framing`); a connection is one
stream, served by the same `CallStreams` as the gRPC method. On this machine that exchange
costs about a third of the CPU of the same frames on a grpc.aio stream (bench/grpc_hop.py),
which spends most of it in its own write path and poller threads.

Listening stops at once on a drain, so a new connection goes to another router; the
streams open here are told to take no new call, and each ends once the edge has
half-closed it and its calls are answered. Whatever is still open when the grace runs out
is cancelled, and its calls are metered as abandoned, as on the gRPC stream.
"""

from __future__ import annotations

import asyncio
import logging

from .call_streams import CallStreams, ChatHandlers

log = logging.getLogger("router")


class CallSocketServer:
    def __init__(self, streams: CallStreams, handlers: ChatHandlers) -> None:
        self._streams = streams
        self._handlers = handlers
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._streams.serve_socket(self._handlers, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # The edge went away: its calls here were cancelled and metered as abandoned.
            log.info("call socket connection lost: %r", exc)
        finally:
            self._connections.discard(task)

    async def stop(self, grace_s: float | None) -> None:
        """Refuses new connections, then waits up to `grace_s` for the open ones to end."""
        if self._server is None:
            return
        self._server.close()
        if self._connections and grace_s:
            await asyncio.wait(list(self._connections), timeout=grace_s)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections))
