"""Replicate's predictions API: create, get, cancel; webhooks per Standard Webhooks.

`base_url` is the API host (`https://api.replicate.com`, or the sandbox's `/replicate`).
An upstream model `owner/name` is created through `/v1/models/{owner}/{name}/predictions`
(official models, always the latest version); `owner/name:version` pins a version through
`/v1/predictions`. Only the `completed` webhook is asked for. Its signature is checked with
the `standardwebhooks` library against the account's signing secret, which Replicate
serves at `/v1/webhooks/default/secret` (fetched once and cached).

Replicate has no idempotency key for predictions: the jobs service guards against a
second submission.
"""

from __future__ import annotations

from typing import Any, ClassVar

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.providers.base import (
    MediaSubmission,
    ProviderError,
    ProviderState,
    ProviderStatus,
    ResultFile,
)
from jobs.providers.http import HttpAdapter, download, send

PROVIDER_TYPE = "replicate"
SECRET_MIN_REFRESH_S = 60  # a signature that fails refetches the secret at most this often

_STATES = {
    "starting": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "succeeded": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "canceled": ProviderState.FAILED,
    "aborted": ProviderState.FAILED,  # a Cancel-After deadline passed before it started
}


class ReplicateProvider(HttpAdapter):
    idempotent_submit: ClassVar[bool] = False
    # The account's webhook signing secret, fetched when the first webhook arrives.
    _secret: Webhook | None = None
    _secret_fetched_at = float("-inf")

    async def submit(self, submission: MediaSubmission) -> ProviderStatus:
        model, _sep, version = submission.upstream_model.partition(":")
        body: dict[str, Any] = {"input": submission.input}
        if version:
            body["version"] = submission.upstream_model
            url = f"{self._base}/v1/predictions"
        else:
            url = f"{self._base}/v1/models/{model.strip('/')}/predictions"
        if submission.callback_url:
            body["webhook"] = submission.callback_url
            body["webhook_events_filter"] = ["completed"]
        prediction = await send(
            self._client, "replicate create", "POST", url, json=body, headers=self._auth
        )
        return status_of(prediction)

    async def poll(self, provider_task_id: str, upstream_model: str) -> ProviderStatus:
        url = f"{self._base}/v1/predictions/{provider_task_id}"
        return status_of(await send(self._client, "replicate get", "GET", url, headers=self._auth))

    async def cancel(self, provider_task_id: str, upstream_model: str) -> None:
        url = f"{self._base}/v1/predictions/{provider_task_id}/cancel"
        await send(self._client, "replicate cancel", "POST", url, headers=self._auth)

    async def fetch_result(self, url: str) -> ResultFile:
        # Files on the API host (`/v1/files/…`) need the token; delivery CDN files do not,
        # and the token is never sent to another host.
        on_api = url.startswith(self._base + "/")
        return await download(self._client, url, headers=self._auth if on_api else None)

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> ProviderStatus:
        now = self._clock()
        if self._secret is None:
            await self._fetch_secret(now)
        try:
            prediction = self._verify(headers, body)
        except WebhookVerificationError as first_error:
            if now - self._secret_fetched_at <= SECRET_MIN_REFRESH_S:
                raise ProviderError(f"replicate webhook: {first_error}", retryable=False) from None
            await self._fetch_secret(now)  # the account secret may have been rotated
            try:
                prediction = self._verify(headers, body)
            except WebhookVerificationError as exc:
                raise ProviderError(f"replicate webhook: {exc}", retryable=False) from None
        if not isinstance(prediction, dict):
            raise ProviderError("replicate webhook: body is not a prediction", retryable=False)
        return status_of(prediction)

    def _verify(self, headers: dict[str, str], body: bytes) -> Any:
        assert self._secret is not None
        try:
            return self._secret.verify(body, headers)
        except ValueError as exc:  # a body that is not JSON, after a valid signature
            raise ProviderError(f"replicate webhook: {exc}", retryable=False) from None

    async def _fetch_secret(self, now: float) -> None:
        url = f"{self._base}/v1/webhooks/default/secret"
        answer = await send(
            self._client, "replicate webhook secret", "GET", url, headers=self._auth
        )
        key = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(key, str) or not key.startswith("whsec_"):
            raise ProviderError("replicate webhook secret has an unexpected shape", retryable=True)
        self._secret = Webhook(key)
        self._secret_fetched_at = now


def result_urls(output: Any) -> tuple[str, ...]:
    """Output URLs: a string, a list of strings, or strings inside an object."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value.startswith(("http://", "https://", "data:")):
                found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(output)
    return tuple(dict.fromkeys(found))


def status_of(prediction: Any) -> ProviderStatus:
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        raise ProviderError("replicate answer is not a prediction", retryable=False)
    prediction_id = prediction["id"]
    status = prediction.get("status")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise ProviderError(f"replicate: unknown prediction status {status!r}", retryable=True)
    if state is ProviderState.FAILED:
        message = prediction.get("error") or f"prediction {status}"
        return ProviderStatus(
            state, prediction_id, fail_code=str(status), fail_message=str(message)[:500]
        )
    if state is ProviderState.SUCCEEDED:
        urls = result_urls(prediction.get("output"))
        if not urls:
            return ProviderStatus(
                ProviderState.FAILED,
                prediction_id,
                fail_code="no_output",
                fail_message="replicate returned no files",
            )
        return ProviderStatus(state, prediction_id, result_urls=urls)
    return ProviderStatus(state, prediction_id)
