"""OpenAI's Images API (`POST /v1/images/generations`, `gpt-image-1`): synchronous upstream,
still asynchronous to aig's client.

`submit` makes the whole call and answers SUCCEEDED with the images as `data:` URLs (what
`gpt-image-1` returns is base64; `url` answers of the DALL·E models are kept as URLs);
`fetch_result` decodes them. There is no upstream task: `poll` can only say that a result
not taken from `submit`'s answer is lost (e.g. the jobs service died mid-call), and there
are no callbacks. OpenAI has no idempotency key for images: the jobs service guards
against a second submission.

aig's common input maps onto OpenAI's: `num_images` → `n`, `aspect_ratio` → `size`
(1:1 → 1024x1024, landscape → 1536x1024, portrait → 1024x1536), `quality`, `output_format`.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from jobs.providers.base import (
    MediaSubmission,
    ProviderError,
    ProviderState,
    ProviderStatus,
    ResultFile,
)
from jobs.providers.http import HttpAdapter, download, send

PROVIDER_TYPE = "openai_images"

_LANDSCAPE = {"16:9", "3:2", "4:3", "21:9"}
_PORTRAIT = {"9:16", "2:3", "3:4"}
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def request_body(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's request from aig's validated input."""
    body: dict[str, Any] = {"model": model, "prompt": given["prompt"]}
    if "num_images" in given:
        body["n"] = given["num_images"]
    aspect = given.get("aspect_ratio")
    if aspect in _LANDSCAPE:
        body["size"] = "1536x1024"
    elif aspect in _PORTRAIT:
        body["size"] = "1024x1536"
    elif aspect == "1:1":
        body["size"] = "1024x1024"
    for field in ("quality", "output_format", "background", "size"):
        if field in given:
            body[field] = given[field]
    return body


class OpenAIImagesProvider(HttpAdapter):
    idempotent_submit: ClassVar[bool] = False

    async def submit(self, submission: MediaSubmission) -> ProviderStatus:
        if not isinstance(submission.input.get("prompt"), str):
            raise ProviderError("openai images: input has no prompt", retryable=False)
        body = request_body(submission.upstream_model, submission.input)
        answer = await send(
            self._client,
            "openai images",
            "POST",
            f"{self._base}/images/generations",
            json=body,
            headers=self._auth,
        )
        content_type = _CONTENT_TYPES.get(str(answer.get("output_format", "png")), "image/png")
        urls: list[str] = []
        for item in answer.get("data") or []:
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                urls.append(f"data:{content_type};base64,{item['b64_json']}")
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append(item["url"])
        # The answer has no id; this one names the call in logs and stays stable.
        call_id = "img_" + hashlib.sha256(submission.task_id.encode()).hexdigest()[:24]
        if not urls:
            return ProviderStatus(
                ProviderState.FAILED, call_id, fail_code="no_output", fail_message="no images"
            )
        return ProviderStatus(ProviderState.SUCCEEDED, call_id, result_urls=tuple(urls))

    async def poll(self, provider_task_id: str, upstream_model: str) -> ProviderStatus:
        return ProviderStatus(
            ProviderState.FAILED,
            provider_task_id,
            fail_code="result_lost",
            fail_message="OpenAI images answer synchronously; this answer was not kept",
        )

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> ProviderStatus:
        raise ProviderError("OpenAI images send no callbacks", retryable=False)

    async def fetch_result(self, url: str) -> ResultFile:
        # DALL·E URLs live on Azure blob storage: the API key is never sent there.
        return await download(self._client, url)

    async def cancel(self, provider_task_id: str, upstream_model: str) -> None:
        return None  # nothing runs upstream after submit has returned
