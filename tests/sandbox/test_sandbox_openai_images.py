"""OpenAI's Images API, driven by the official `openai` SDK's `images.generate`; and the
jobs service's adapter, which turns the synchronous call into a finished task."""

from __future__ import annotations

import asyncio
import base64

import httpx
import openai
import pytest

from jobs.providers import provider_for
from jobs.providers.base import MediaSubmission, ProviderError, ProviderInstance, ProviderState

PNG = b"\x89PNG\r\n\x1a\n"


def test_openai_sdk_generates_images(sandbox_url: str) -> None:
    client = openai.OpenAI(api_key="sk-sandbox", base_url=sandbox_url + "/openai/v1")
    result = client.images.generate(
        model="gpt-image-1", prompt="a lighthouse", n=2, size="1536x1024", quality="low"
    )
    images = result.data or []
    assert len(images) == 2
    assert all(base64.b64decode(item.b64_json or "").startswith(PNG) for item in images)
    assert result.usage is not None and result.usage.output_tokens == 2 * 272
    assert result.size == "1536x1024"

    dalle = client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="url")
    [drawn] = dalle.data or []
    assert drawn.revised_prompt == "a lighthouse"
    image = httpx.get(drawn.url or "")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(PNG)

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    assert refused.value.body["param"] == "response_format"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="dall-e-3", prompt="x", n=2)


async def test_openai_images_adapter(sandbox_url: str, control: httpx.Client) -> None:
    instance = ProviderInstance(
        "openai-images", "openai_images", sandbox_url + "/openai/v1", api_key="sk-key"
    )
    provider = provider_for(instance)
    try:
        done = await provider.submit(
            MediaSubmission("task_1", "gpt-image-1", {"prompt": "a fox", "num_images": 2})
        )
        assert done.state is ProviderState.SUCCEEDED and len(done.result_urls) == 2
        file = await provider.fetch_result(done.result_urls[1])
        assert file.content_type == "image/png" and file.data.startswith(PNG)
        # Nothing upstream to poll: a result not taken from submit's answer is lost.
        lost = await provider.poll(done.provider_task_id, "gpt-image-1")
        assert (lost.state, lost.fail_code) == (ProviderState.FAILED, "result_lost")

        await asyncio.to_thread(
            control.post, "/_sandbox/faults", json={"provider": "openai", "status": 429}
        )
        with pytest.raises(ProviderError) as limited:
            await provider.submit(MediaSubmission("task_2", "gpt-image-1", {"prompt": "x"}))
        assert limited.value.retryable and limited.value.status == 429
    finally:
        await provider.aclose()
