"""fal.ai's queue API: submit, poll status, read the result, cancel; verified webhooks.

`base_url` is the queue host (`https://queue.fal.run`, or the sandbox's `/fal`). Status,
result and cancel URLs use only `owner/alias` of the model id (fal drops the subpath).
Webhooks are verified with Ed25519 against fal's published JWKS, over
`request_id \\n user_id \\n timestamp \\n sha256hex(body)`, within ±5 minutes; the keys are
cached for a day and fetched again when a signature does not match a cached key.

fal has no idempotency key: the jobs service guards against a second submission.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from jobs.providers.base import (
    MediaSubmission,
    ProviderError,
    ProviderInstance,
    ProviderState,
    ProviderStatus,
    ResultFile,
)
from jobs.providers.http import HttpAdapter, download, send

PROVIDER_TYPE = "fal"
PUBLIC_QUEUE_HOST = "queue.fal.run"
PUBLIC_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
TIMESTAMP_LEEWAY_S = 300
JWKS_TTL_S = 24 * 3600
JWKS_MIN_REFRESH_S = 60  # an unknown key refetches the JWKS at most this often

_STATES = {"IN_QUEUE": ProviderState.QUEUED, "IN_PROGRESS": ProviderState.RUNNING}


def jwks_url_for(base_url: str) -> str:
    """fal's own JWKS for fal's queue; a fal-compatible queue elsewhere (the sandbox)
    publishes its keys beside its queue."""
    if urlsplit(base_url).hostname == PUBLIC_QUEUE_HOST:
        return PUBLIC_JWKS_URL
    return f"{base_url.rstrip('/')}/.well-known/jwks.json"


class FalProvider(HttpAdapter):
    idempotent_submit: ClassVar[bool] = False
    auth_scheme = "Key"

    def __init__(
        self,
        instance: ProviderInstance,
        *,
        client: httpx.AsyncClient | None = None,
        jwks_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(instance, client=client, clock=clock)
        self._jwks_url = jwks_url or jwks_url_for(self._base)
        self._keys: list[Ed25519PublicKey] = []
        self._keys_fetched_at = float("-inf")

    # --- the queue ----------------------------------------------------------------------

    async def submit(self, submission: MediaSubmission) -> ProviderStatus:
        url = f"{self._base}/{submission.upstream_model.strip('/')}"
        if submission.callback_url:
            url += "?" + urlencode({"fal_webhook": submission.callback_url})
        answer = await send(
            self._client, "fal submit", "POST", url, json=submission.input, headers=self._auth
        )
        request_id = _text(answer, "request_id")
        return ProviderStatus(ProviderState.QUEUED, request_id)

    async def poll(self, provider_task_id: str, upstream_model: str) -> ProviderStatus:
        base = self._request_url(provider_task_id, upstream_model)
        answer = await send(self._client, "fal status", "GET", f"{base}/status", headers=self._auth)
        status = answer.get("status")
        if status in _STATES:
            return ProviderStatus(_STATES[status], provider_task_id)
        if status != "COMPLETED":
            raise ProviderError(f"fal status: unknown status {status!r}", retryable=True)
        if answer.get("error"):
            return _failed(provider_task_id, answer.get("error_type"), answer["error"])
        try:
            output = await send(self._client, "fal result", "GET", base, headers=self._auth)
        except ProviderError as exc:
            if exc.retryable:
                raise
            return _failed(provider_task_id, f"http_{exc.status}", str(exc))
        return _succeeded(provider_task_id, output)

    async def cancel(self, provider_task_id: str, upstream_model: str) -> None:
        url = f"{self._request_url(provider_task_id, upstream_model)}/cancel"
        try:
            await send(self._client, "fal cancel", "PUT", url, headers=self._auth)
        except ProviderError as exc:
            if exc.status != 400:  # 400 ALREADY_COMPLETED: nothing left to stop
                raise

    async def fetch_result(self, url: str) -> ResultFile:
        # fal's CDN files are public: the key is never sent to it.
        return await download(self._client, url)

    def _request_url(self, request_id: str, upstream_model: str) -> str:
        owner_alias = "/".join(upstream_model.strip("/").split("/")[:2])
        return f"{self._base}/{owner_alias}/requests/{request_id}"

    # --- webhooks -----------------------------------------------------------------------

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> ProviderStatus:
        lowered = {name.lower(): value for name, value in headers.items()}
        request_id = lowered.get("x-fal-webhook-request-id", "")
        user_id = lowered.get("x-fal-webhook-user-id", "")
        timestamp = lowered.get("x-fal-webhook-timestamp", "")
        signature_hex = lowered.get("x-fal-webhook-signature", "")
        if not (request_id and user_id and timestamp and signature_hex):
            raise ProviderError("fal webhook: signature headers missing", retryable=False)
        try:
            sent_at = int(timestamp)
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise ProviderError(
                "fal webhook: malformed signature headers", retryable=False
            ) from None
        if abs(self._clock() - sent_at) > TIMESTAMP_LEEWAY_S:
            raise ProviderError("fal webhook: timestamp outside tolerance", retryable=False)
        message = "\n".join(
            (request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())
        ).encode()
        await self._verify(signature, message)

        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProviderError("fal webhook: body is not JSON", retryable=False) from None
        if not isinstance(event, dict) or event.get("request_id") != request_id:
            raise ProviderError("fal webhook: body does not match its headers", retryable=False)
        if event.get("status") == "OK" and isinstance(event.get("payload"), dict):
            return _succeeded(request_id, event["payload"])
        if event.get("status") == "OK":  # output that was not JSON
            return _failed(request_id, "payload_error", str(event.get("payload_error", "")))
        return _failed(request_id, "fal_error", str(event.get("error") or "fal reported an error"))

    async def _verify(self, signature: bytes, message: bytes) -> None:
        now = self._clock()
        if now - self._keys_fetched_at > JWKS_TTL_S:
            await self._fetch_keys(now)
        if _any_key_signed(self._keys, signature, message):
            return
        if now - self._keys_fetched_at > JWKS_MIN_REFRESH_S:  # fal may have rotated its key
            await self._fetch_keys(now)
            if _any_key_signed(self._keys, signature, message):
                return
        raise ProviderError("fal webhook: signature does not verify", retryable=False)

    async def _fetch_keys(self, now: float) -> None:
        # The JWKS needs no credentials; a failure is retryable (fal retries its webhook).
        jwks = await send(self._client, "fal JWKS", "GET", self._jwks_url)
        keys: list[Ed25519PublicKey] = []
        for entry in jwks.get("keys", []) if isinstance(jwks, dict) else []:
            if not isinstance(entry, dict) or entry.get("crv") != "Ed25519":
                continue
            try:
                x = str(entry["x"])
                raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
            except (KeyError, ValueError, binascii.Error):
                continue
        self._keys = keys
        self._keys_fetched_at = now


def _any_key_signed(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


def _text(answer: Any, field: str) -> str:
    value = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise ProviderError(f"fal answer has no {field}", retryable=False)
    return value


def result_urls(output: Any) -> tuple[str, ...]:
    """Every file URL in a model's output (`images[].url`, `video.url`, `audio.url`, …),
    in document order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            url = value.get("url")
            if isinstance(url, str) and url.startswith(("http://", "https://", "data:")):
                found.append(url)
            for name, child in value.items():
                if name != "url":
                    walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(output)
    return tuple(dict.fromkeys(found))


def _succeeded(request_id: str, output: Any) -> ProviderStatus:
    urls = result_urls(output)
    if not urls:
        return _failed(request_id, "no_output", "fal returned no files")
    return ProviderStatus(ProviderState.SUCCEEDED, request_id, result_urls=urls)


def _failed(request_id: str, code: Any, message: Any) -> ProviderStatus:
    return ProviderStatus(
        ProviderState.FAILED,
        request_id,
        fail_code=str(code or "fal_error"),
        fail_message=str(message)[:500],
    )
