"""The router's calls to upstreams: keep-alive pools per provider origin, each provider
instance's headers encoded once per path.

API calls go through `router.http1`, a lean HTTP/1.1 client: the router spends much of its
CPU talking to upstreams, and at 16 concurrent calls aiohttp cost about three times its CPU
per call and httpx about ten times aiohttp's (bench/http_clients.py, figures in
bench/EXTRAS.md). Image downloads, which follow redirects, keep aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from aig_common.errors import APIError

from .http1 import Http1Client, RequestTarget, Response, UpstreamConnectionError
from .settings import RouterSettings

# Distinct (provider, path) request heads encoded once and kept; Gemini's paths name the
# model, so the set is bounded by the catalog, but a cap keeps a surprise from growing it.
_TARGET_CACHE_LIMIT = 4096
# What a failed exchange can raise below HTTP: the response's framing or the connection
# closing (UpstreamConnectionError), or OSError: refused, reset, TLS (ssl.SSLError) and a
# silent server (TimeoutError) are all OSErrors.
_TRANSPORT_ERRORS = (UpstreamConnectionError, OSError)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one provider instance's calls go: its base URL and every header it needs
    (authentication included). Hashable, so a reloaded catalog that changes nothing keeps
    its connection pools."""

    name: str
    base_url: str
    headers: tuple[tuple[str, str], ...]
    # Longest silence mid-answer; None keeps AIG_UPSTREAM_READ_TIMEOUT_S.
    read_timeout_s: float | None = None


class UpstreamUnreachable(Exception):
    """No HTTP answer: the connection failed, broke, or the provider went silent too long."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause_name = type(cause).__name__
        self.timed_out = isinstance(cause, TimeoutError)


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream:
    """An upstream answer whose body is read as it arrives (SSE)."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamUnreachable(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as the provider sends them, never held back to fill a buffer."""
        try:
            async for chunk in self._response.chunks():
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamUnreachable(exc) from exc

    async def aclose(self) -> None:
        # Keeps the connection for reuse when the body was read to its end, closes it if not.
        self._response.close()


class UpstreamClients:
    """Keeps one keep-alive connection pool per destination for the router's lifetime.

    Create it inside the running event loop: aiohttp sessions belong to the loop they are
    made on.
    """

    def __init__(self, settings: RouterSettings) -> None:
        # Read timeout between bytes, not over the whole call: a long stream is fine as long
        # as it keeps moving.
        self._http = Http1Client(
            connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.read_timeout_s
        )
        self._targets: dict[tuple[Destination, str], RequestTarget] = {}
        # Image downloads (Gemini needs inline bytes) get their own, stricter session.
        self._images = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=20.0, sock_connect=5.0)
        )
        self._max_image_bytes = settings.max_image_bytes

    def _target(self, destination: Destination, path: str) -> RequestTarget:
        target = self._targets.get((destination, path))
        if target is None:
            if len(self._targets) >= _TARGET_CACHE_LIMIT:
                self._targets.clear()
            target = RequestTarget.post(destination.base_url + path, destination.headers)
            self._targets[(destination, path)] = target
        return target

    async def post(
        self,
        destination: Destination,
        path: str,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        """POSTs `content` and reads the whole answer, whatever its status. `headers` are
        this request's own, beside the instance's."""
        stream = await self.open_stream(destination, path, content, headers)
        return UpstreamReply(stream.status, stream.headers, await stream.read())

    async def open_stream(
        self,
        destination: Destination,
        path: str,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamStream:
        """POSTs `content` and returns once the answer's headers are in; the caller must
        `aclose()` the stream."""
        try:
            response = await self._http.post(
                self._target(destination, path),
                content,
                headers,
                read_timeout_s=destination.read_timeout_s,
            )
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamUnreachable(exc) from exc
        return UpstreamStream(response)

    async def fetch_image(self, url: str) -> tuple[str, bytes]:
        """Downloads an image the client referenced by URL, bounded in size."""
        try:
            async with self._images.get(url, allow_redirects=True) as response:
                if response.status != 200:
                    raise APIError(
                        400,
                        f"Could not fetch image_url {url!r}: HTTP {response.status}.",
                        param="messages",
                        code="invalid_image_url",
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > self._max_image_bytes:
                        raise APIError(
                            400,
                            f"image_url {url!r} is larger than {self._max_image_bytes} bytes.",
                            param="messages",
                            code="image_too_large",
                        )
                    chunks.append(chunk)
                mime = response.headers.get("content-type", "image/png").split(";")[0].strip()
                return mime, b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise APIError(
                400,
                f"Could not fetch image_url {url!r}: {type(exc).__name__}.",
                param="messages",
                code="invalid_image_url",
            ) from exc

    async def fetch_images(self, urls: list[str]) -> Mapping[str, tuple[str, bytes]]:
        return {url: await self.fetch_image(url) for url in dict.fromkeys(urls)}

    async def aclose(self) -> None:
        self._http.close()
        await self._images.close()
        # Lets the connectors' transports finish closing before the loop goes away.
        await asyncio.sleep(0)
