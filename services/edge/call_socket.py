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
from collections.abc import Coroutine
from typing import Any

from aig.router.v1 import router_pb2 as pb
from aig_common.framing import encode, read_message

# New router pods behind a headless Service are looked up again at most this often, as the
# gRPC channel does (aig_common.contracts: grpc.dns_min_time_between_resolutions_ms).
RESOLVE_EVERY_S = 5.0
END_OF_CALLS = encode(pb.CallFrames())
# A router that neither accepts nor refuses (a pod gone without a trace) is skipped after this.
CONNECT_TIMEOUT_S = 2.0

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


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

    async def connect(self) -> _Connection:
        addresses = await self._addresses()
        first = next(self._turn)
        failure: OSError = ConnectionRefusedError("no router address resolved")
        for offset in range(len(addresses)):
            host, port = addresses[(first + offset) % len(addresses)]
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT_S
                )
            except OSError as exc:  # refused, unreachable, or timed out (TimeoutError)
                failure = exc
        raise failure

    def open(self) -> SocketCallChannel:
        return SocketCallChannel(self.connect())


class SocketCallChannel:
    """One connection as a Router.Calls stream (edge/router_streams.CallChannel). Connecting
    starts at once; writes and reads wait for it, and both see its failure."""

    def __init__(self, connecting: Coroutine[Any, Any, _Connection]) -> None:
        self._connection = asyncio.ensure_future(connecting)

    async def write(self, batch: pb.CallFrames) -> None:
        _, writer = await self._connection
        writer.write(encode(batch))
        await writer.drain()

    async def done_writing(self) -> None:
        # An empty batch ends the stream: the router answers what it read, then closes.
        # Closing the socket alone would not do: a dead edge's socket closes the same way,
        # and its calls are cancelled instead.
        _, writer = await self._connection
        writer.write(END_OF_CALLS)
        await writer.drain()

    async def read(self) -> pb.ReplyFrames | None:
        reader, _ = await self._connection
        return await read_message(reader, pb.ReplyFrames.FromString)

    def cancel(self) -> None:
        if not self._connection.done():
            self._connection.cancel()
        elif not self._connection.cancelled() and self._connection.exception() is None:
            self._connection.result()[1].close()
