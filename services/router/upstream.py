"""One pooled HTTP client per provider instance, with that instance's own headers.

aiohttp rather than httpx: at 16 concurrent calls httpx cost about ten times aiohttp's CPU
per call (bench/http_clients.py, figures in bench/EXTRAS.md), and the router spends much of
its CPU talking to upstreams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from aig_common.errors import APIError

from .settings import RouterSettings

# Distinct (provider, path) URLs parsed once and kept; Gemini's paths name the model, so
# the set is bounded by the catalog, but a cap keeps a surprise from growing it forever.
_URL_CACHE_LIMIT = 4096


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

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnreachable(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as the provider sends them, never held back to fill a buffer."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnreachable(exc) from exc

    async def aclose(self) -> None:
        # Keeps the connection for reuse when the body was read to its end, closes it if not.
        self._response.release()


class UpstreamClients:
    """Keeps one keep-alive connection pool per destination for the router's lifetime.

    Create it inside the running event loop: aiohttp sessions belong to the loop they are
    made on.
    """

    def __init__(self, settings: RouterSettings) -> None:
        self._connect_timeout_s = settings.connect_timeout_s
        self._read_timeout_s = settings.read_timeout_s
        self._sessions: dict[Destination, aiohttp.ClientSession] = {}
        self._urls: dict[tuple[Destination, str], URL] = {}
        # Image downloads (Gemini needs inline bytes) get their own, stricter session.
        self._images = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=20.0, sock_connect=5.0)
        )
        self._max_image_bytes = settings.max_image_bytes

    def _session(self, destination: Destination) -> aiohttp.ClientSession:
        session = self._sessions.get(destination)
        if session is None:
            # Read timeout between bytes, not over the whole call: a long stream is fine as
            # long as it keeps moving.
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self._connect_timeout_s,
                sock_read=destination.read_timeout_s or self._read_timeout_s,
            )
            session = self._sessions[destination] = aiohttp.ClientSession(
                headers=dict(destination.headers),
                timeout=timeout,
                connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, ttl_dns_cache=300),
                # Bodies are relayed as they are; an upstream's compression is undone here.
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return session

    def _url(self, destination: Destination, path: str) -> URL:
        url = self._urls.get((destination, path))
        if url is None:
            if len(self._urls) >= _URL_CACHE_LIMIT:
                self._urls.clear()
            # encoded: paths are built by provider types, with their query strings ready.
            url = URL(destination.base_url + path, encoded=True)
            self._urls[(destination, path)] = url
        return url

    async def post(
        self,
        destination: Destination,
        path: str,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        """POSTs `content` and reads the whole answer, whatever its status. `headers` are
        this request's own, beside the instance's."""
        try:
            async with self._session(destination).post(
                self._url(destination, path), data=content, headers=headers
            ) as r:
                return UpstreamReply(r.status, r.headers, await r.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnreachable(exc) from exc

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
            response = await self._session(destination).post(
                self._url(destination, path), data=content, headers=headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
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
        for session in self._sessions.values():
            await session.close()
        await self._images.close()
        # Lets the connectors' transports finish closing before the loop goes away.
        await asyncio.sleep(0)
