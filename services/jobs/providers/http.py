"""HTTP steps every media adapter shares: the client, error mapping, result downloads."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import orjson

from jobs.providers.base import ProviderError, ProviderInstance, ResultFile

# Results are downloaded whole into memory; a sandbox clip is kilobytes, a real 4K
# 30-second render tens of megabytes. Past this the download is refused, not truncated.
MAX_RESULT_BYTES = 512 * 1024 * 1024
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class HttpAdapter:
    """What every HTTP adapter holds: its instance, base URL, auth headers and client."""

    # How the provider wants its key: "Bearer" (Replicate, OpenAI) or "Key" (fal).
    auth_scheme = "Bearer"

    def __init__(
        self,
        instance: ProviderInstance,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self._base = instance.base_url.rstrip("/")
        self._auth = dict(instance.headers)
        if instance.api_key:  # empty for a sandbox that only checks a key is present
            self._auth["authorization"] = f"{self.auth_scheme} {instance.api_key}"
        self._client = client or new_client()
        self._clock = clock

    async def aclose(self) -> None:
        await self._client.aclose()


def new_client(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=_TIMEOUT, headers=headers, follow_redirects=False)


def retryable_status(status: int) -> bool:
    """Whether trying the same call again may help (rate limits, timeouts, outages)."""
    return status in (408, 409, 425, 429) or status >= 500


def check(response: httpx.Response, what: str) -> Any:
    """The JSON body of a 2xx answer; otherwise a `ProviderError` that says why."""
    if response.is_success:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderError(f"{what}: answer is not JSON", retryable=True) from None
    raise ProviderError(
        f"{what}: HTTP {response.status_code}: {_short(response)}",
        retryable=retryable_status(response.status_code),
        status=response.status_code,
    )


async def send(client: httpx.AsyncClient, what: str, method: str, url: str, **kw: Any) -> Any:
    """One call upstream; transport errors are retryable `ProviderError`s."""
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        raise ProviderError(f"{what}: {type(exc).__name__}", retryable=True) from exc
    return check(response, what)


def _short(response: httpx.Response) -> str:
    # The provider's own message helps operators; it never carries our credentials.
    return response.text[:300].replace("\n", " ")


def decode_data_url(url: str) -> ResultFile:
    """`data:<type>[;base64],<payload>` (how inline results are handed over)."""
    header, sep, payload = url.removeprefix("data:").partition(",")
    if not sep:
        raise ProviderError("malformed data: URL", retryable=False)
    meta = header.split(";")
    content_type = meta[0] or "application/octet-stream"
    try:
        data = (
            base64.b64decode(payload, validate=True)
            if "base64" in meta[1:]
            else unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError):
        raise ProviderError("data: URL is not valid base64", retryable=False) from None
    return ResultFile(data, content_type)


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    redirects_left: int = 5,
) -> ResultFile:
    """A result file. Only http(s) and data: URLs; redirects are followed (CDNs use them)
    but the caller's `headers` (credentials) go only to the first host."""
    if url.startswith("data:"):
        return decode_data_url(url)
    if not url.startswith(("http://", "https://")):
        raise ProviderError(f"result URL has an unsupported scheme: {url[:16]}", retryable=False)
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.is_redirect and "location" in response.headers and redirects_left:
                target = str(response.url.join(response.headers["location"]))
                return await download(client, target, redirects_left=redirects_left - 1)
            if not response.is_success:
                await response.aread()
                check(response, "result download")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESULT_BYTES:
                    raise ProviderError("result file is too large", retryable=False)
                chunks.append(chunk)
            content_type = response.headers.get("content-type", "application/octet-stream")
    except httpx.HTTPError as exc:
        raise ProviderError(f"result download: {type(exc).__name__}", retryable=True) from exc
    return ResultFile(b"".join(chunks), content_type.split(";")[0].strip())
