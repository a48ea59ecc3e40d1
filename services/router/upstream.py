"""One pooled HTTP client per provider, with the provider's own authentication headers."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from aig_common.errors import APIError

from .settings import ProviderSettings, RouterSettings

ANTHROPIC_VERSION = "2023-06-01"


def _auth_headers(provider: ProviderSettings) -> dict[str, str]:
    if provider.name == "anthropic":
        return {"x-api-key": provider.api_key, "anthropic-version": ANTHROPIC_VERSION}
    if provider.name == "google":
        return {"x-goog-api-key": provider.api_key}
    return {"authorization": f"Bearer {provider.api_key}"}


class UpstreamClients:
    """Keeps one keep-alive connection pool per provider for the router's lifetime."""

    def __init__(self, settings: RouterSettings) -> None:
        timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        self._clients: dict[str, httpx.AsyncClient] = {
            name: httpx.AsyncClient(
                base_url=provider.base_url,
                headers={**_auth_headers(provider), "content-type": "application/json"},
                timeout=timeout,
                limits=limits,
            )
            for name, provider in settings.providers.items()
        }
        # Image downloads (Gemini needs inline bytes) get their own, stricter client.
        self._images = httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))
        self._max_image_bytes = settings.max_image_bytes

    def client(self, provider: str) -> httpx.AsyncClient:
        return self._clients[provider]

    async def fetch_image(self, url: str) -> tuple[str, bytes]:
        """Downloads an image the client referenced by URL, bounded in size."""
        try:
            async with self._images.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise APIError(
                        400,
                        f"Could not fetch image_url {url!r}: HTTP {response.status_code}.",
                        param="messages",
                        code="invalid_image_url",
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
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
        except httpx.HTTPError as exc:
            raise APIError(
                400,
                f"Could not fetch image_url {url!r}: {type(exc).__name__}.",
                param="messages",
                code="invalid_image_url",
            ) from exc

    async def fetch_images(self, urls: list[str]) -> Mapping[str, tuple[str, bytes]]:
        return {url: await self.fetch_image(url) for url in dict.fromkeys(urls)}

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        await self._images.aclose()
