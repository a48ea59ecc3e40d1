"""Protobuf messages on a plain byte stream (TCP or a Unix socket): each message is its
length as 4 bytes, big-endian, then its bytes.

This is how an edge and a router exchange Router.Calls batches on a call socket
(edge/call_socket.py, router/call_socket.py): the same CallFrames and ReplyFrames as on
the gRPC stream, without HTTP/2 and grpc's threads in between. The edge ends its side with
an empty CallFrames (4 zero bytes), gRPC's half-close: a socket that closes without it
belongs to an edge that went away.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Protocol, TypeVar

from .contracts import GRPC_MESSAGE_LIMIT

_LENGTH = struct.Struct(">I")
# The same bound as a gRPC message between edge and router: a request body may carry
# 16 MiB of base64 images, with room to spare.
MAX_MESSAGE_BYTES = GRPC_MESSAGE_LIMIT


class FrameTooLarge(ValueError):
    pass


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


Parsed = TypeVar("Parsed")


def encode(message: _Message) -> bytes:
    data = message.SerializeToString()
    if len(data) > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(f"message of {len(data)} bytes over {MAX_MESSAGE_BYTES}")
    return _LENGTH.pack(len(data)) + data


async def read_message(
    reader: asyncio.StreamReader, parse: Callable[[bytes], Parsed]
) -> Parsed | None:
    """The next message, or None when the peer closed the stream between two messages.
    A stream that ends inside a message raises asyncio.IncompleteReadError."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(f"message of {length} bytes over {MAX_MESSAGE_BYTES}")
    return parse(await reader.readexactly(length))
