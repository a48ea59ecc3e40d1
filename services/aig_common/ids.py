"""Identifiers made by producers: UUIDv7, so ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time
import uuid

_RANDOM_BATCH_BYTES = 4096


class _RandomBits:
    """Bits from the OS's CSPRNG, fetched 4 KiB at a time.

    Two `os.urandom` calls per id were a getrandom syscall each, and the router makes an id
    per call: 2.5 % of its samples in the default run's profile on a slow-syscall guest. The
    bytes are the same CSPRNG output, only read ahead; each is handed out once. A forked
    child drops what its parent had read ahead, or both would hand out the same ids.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool = b""
        self._offset = 0

    def take(self, n: int) -> int:
        """`n` random bytes, as a big-endian integer."""
        with self._lock:
            if self._offset + n > len(self._pool):
                self._pool = os.urandom(_RANDOM_BATCH_BYTES)
                self._offset = 0
            start = self._offset
            self._offset = start + n
            return int.from_bytes(self._pool[start : start + n], "big")


_random_bits = _RandomBits()


def _uuid7_int() -> int:
    """RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, variant, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    bits = _random_bits.take(10)  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    rand_a = (bits >> 62) & 0x0FFF
    rand_b = bits & ((1 << 62) - 1)
    return (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b


def uuid7() -> uuid.UUID:
    return uuid.UUID(int=_uuid7_int())


def uuid7_text() -> str:
    """A new UUIDv7 in its canonical text form, as `str(uuid7())` gives it, without the UUID
    object: the router makes one per call (its usage event's id), and `uuid.UUID`'s
    constructor and `__str__` took ~2 of the ~2.5 µs."""
    digits = f"{_uuid7_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
