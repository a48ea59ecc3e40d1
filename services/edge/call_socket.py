"""Router.Calls on the routers' call sockets (router/call_socket.py): the edge's side.

The same CallFrames / ReplyFrames batches as on the gRPC stream, length-prefixed on a
plain TCP connection (`aig_common.framing`). `RouterStreams` (edge/router_streams.py)
multiplexes calls on these connections exactly as on gRPC streams: rotation, drains and
resending calls no router took are its job, not this module's.

What the gRPC channel did for its streams is done here for the connections:
- **Finding the routers.** `AIG_ROUTER_CALLS_ADDRESS` uses the gRPC target syntax the
  edge's `AIG_ROUTER_ADDRESS` does: `host:port`, `dns:///host:port` (every address a name
  resolves to, looked up again at most every `RESOLVE_EVERY_S`) or a list,
  `ipv4:127.0.0.1:50052,127.0.0.1:50062`.
- **Round robin over ready routers.** Each new connection goes to the next address in
  turn; one that refuses (a router draining, restarting or gone) is skipped for the next,
  so a connection fails only when no router takes it.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import cast

from aig.router.v1 import router_pb2 as pb
from aig_common.batches import Cork
from aig_common.framing import FrameTooLarge, MessageBuffer, encode

from .router_streams import OnBroken, OnReplies, unavailable

# New router pods behind a headless Service are looked up again at most this often, as the
# gRPC channel does (aig_common.contracts: grpc.dns_min_time_between_resolutions_ms).
RESOLVE_EVERY_S = 5.0
END_OF_CALLS = encode(pb.CallFrames())
# A router that neither accepts nor refuses (a pod gone without a trace) is skipped after this.
CONNECT_TIMEOUT_S = 2.0


def parse_targets(address: str) -> list[tuple[str, int]]:
    """`host:port`, `dns:///host:port` or `ipv4:h:p,h:p` as (host, port) pairs."""
    spec = address.strip()
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if spec.startswith(scheme):
            spec = spec[len(scheme) :]
            break
    targets = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"call socket address {part!r} is not host:port")
        targets.append((host.strip("[]"), int(port)))
    if not targets:
        raise ValueError(f"no call socket address in {address!r}")
    return targets


class CallSockets:
    """Opens call socket connections to the routers, round robin."""

    def __init__(self, address: str) -> None:
        self._targets = parse_targets(address)
        self._resolved: list[tuple[str, int]] = []
        self._resolved_at = float("-inf")
        self._turn = itertools.count()

    async def _addresses(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        if self._resolved and loop.time() - self._resolved_at < RESOLVE_EVERY_S:
            return self._resolved
        found: list[tuple[str, int]] = []
        for host, port in self._targets:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            for info in infos:
                address = (str(info[4][0]), int(info[4][1]))
                if address not in found:
                    found.append(address)
        self._resolved, self._resolved_at = found, loop.time()
        return found

    async def connect(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """Connects `protocol` to the next router that takes it."""
        addresses = await self._addresses()
        first = next(self._turn)
        loop = asyncio.get_running_loop()
        failure: OSError = ConnectionRefusedError("no router address resolved")
        for offset in range(len(addresses)):
            host, port = addresses[(first + offset) % len(addresses)]
            try:
                await asyncio.wait_for(
                    loop.create_connection(protocol, host, port), timeout=CONNECT_TIMEOUT_S
                )
                return
            except OSError as exc:  # refused, unreachable, or timed out (TimeoutError)
                failure = exc
        raise failure

    def open(self) -> SocketCallChannel:
        return SocketCallChannel(self)


class SocketCallChannel(asyncio.Protocol, Cork[pb.CallFrame]):
    """One connection as a Router.Calls stream (edge/router_streams.CallChannel).

    An asyncio.Protocol: replies are parsed and handed on as the bytes arrive, and frames
    sent in one turn of the event loop go out as one CallFrames, one send, so no reader or
    writer task is woken per message (the channel is its own `Cork`). Frames sent before the
    connection is made wait for it."""

    def __init__(self, sockets: CallSockets) -> None:
        super().__init__(held=True)  # held until the connection is made
        self._sockets = sockets
        self._transport: asyncio.Transport | None = None
        self._ending = False
        self._buffer = MessageBuffer()
        self._on_replies: OnReplies | None = None
        self._on_broken: OnBroken | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self, on_replies: OnReplies, on_broken: OnBroken) -> None:
        self._on_replies, self._on_broken = on_replies, on_broken
        self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self._sockets.connect(lambda: self)
        except OSError as exc:
            self._broken(f"the router's call socket failed: {exc!r}")

    def send(self, frame: pb.CallFrame) -> None:
        self.put(frame)

    def end(self) -> None:
        self._ending = True
        self.write_soon()

    def write(self, frames: list[pb.CallFrame]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        try:
            data = encode(pb.CallFrames(frames=frames)) if frames else b""
        except FrameTooLarge as exc:
            # Not reached: the edge refuses to start with a body limit that allows it
            # (EdgeSettings). Were it reached, the calls fail rather than wait forever.
            self._broken(f"call frames not sent: {exc}")
            return
        if self._ending:
            # An empty batch ends the stream: the router answers what it read, then
            # closes. Closing the socket alone would not do: a dead edge's socket closes
            # the same way, and its calls are cancelled instead.
            data += END_OF_CALLS
            self._ending = False
        if data:
            transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, though they are one.
        self._transport = cast(asyncio.Transport, transport)
        self.release()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._buffer.feed(data)
        except FrameTooLarge as exc:
            self._broken(f"the router's call socket failed: {exc!r}")
            return
        for message in messages:
            if self._on_replies is not None:
                self._on_replies(pb.ReplyFrames.FromString(message))

    def eof_received(self) -> bool:
        return False  # the router closes once it has answered: so do we

    def connection_lost(self, exc: Exception | None) -> None:
        self._broken("the router's call stream ended" if exc is None else repr(exc))

    def _broken(self, details: str) -> None:
        on_broken, self._on_broken, self._on_replies = self._on_broken, None, None
        if self._transport is not None:
            self._transport.abort()
        if on_broken is not None:
            on_broken(unavailable(details))

    def cancel(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        self._on_broken = self._on_replies = None
        if self._transport is not None:
            self._transport.abort()
