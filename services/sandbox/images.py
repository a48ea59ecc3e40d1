"""Images: the PNG served for tests, and how answers acknowledge images they receive."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from dataclasses import dataclass


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width
    pixels = zlib.compress(row * height, 9)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


SAMPLE_PNG = png(4, 4, (32, 160, 96))


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image found in a request: inline bytes, or a URL the sandbox does not fetch."""

    data: bytes | None = None
    url: str | None = None

    def describe(self, number: int) -> str:
        if self.data is not None:
            digest = hashlib.sha256(self.data).hexdigest()[:12]
            return f"image {number}: {len(self.data)} bytes sha256={digest}"
        return f"image {number}: {self.url}"


def image_from_base64(data: str) -> ImageRef:
    try:
        return ImageRef(data=base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return ImageRef(data=b"")


def image_from_url(url: str) -> ImageRef:
    """OpenAI's `image_url.url`: a data URL is decoded, anything else is kept as a URL."""
    if url.startswith("data:"):
        _meta, _sep, payload = url.partition(",")
        return image_from_base64(payload)
    return ImageRef(url=url)
