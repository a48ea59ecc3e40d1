"""Protobuf messages on a plain byte stream (a TCP connection): each message is its
length as 4 bytes, big-endian, then its bytes.

This is how an edge and a router exchange Router.Calls batches on a call socket
(edge/call_socket.py, router/call_socket.py): the same CallFrames and ReplyFrames as on
the gRPC stream, without HTTP/2 and grpc's threads in between. The edge ends its side with
an empty CallFrames (4 zero bytes), gRPC's half-close: a socket that closes without it
belongs to an edge that went away.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .contracts import GRPC_MESSAGE_LIMIT

_LENGTH = struct.Struct(">I")
# The same bound as a gRPC message between edge and router: a request body may carry
# 16 MiB of base64 images, with room to spare.
MAX_MESSAGE_BYTES = GRPC_MESSAGE_LIMIT


class FrameTooLarge(ValueError):
    pass


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


def encode(message: _Message) -> bytes:
    data = message.SerializeToString()
    if len(data) > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(f"message of {len(data)} bytes over {MAX_MESSAGE_BYTES}")
    return _LENGTH.pack(len(data)) + data


class MessageBuffer:
    """Splits the bytes a socket delivers (asyncio.Protocol.data_received) into messages,
    however the stream cut them: a protocol parses in its callback, with no reader task
    woken per message."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The messages `data` completes, in order; a part-message waits for more."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_MESSAGE_BYTES:
                raise FrameTooLarge(f"message of {length} bytes over {MAX_MESSAGE_BYTES}")
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            messages.append(bytes(buffer[start + _LENGTH.size : end]))
            start = end
        if start:
            del buffer[:start]
        return messages
