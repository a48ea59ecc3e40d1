"""Replicate's predictions API, driven by the official `replicate` client (its own
`base_url` option points it at the sandbox); and the jobs service's Replicate adapter."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import av
import httpx
import pytest
import replicate
from media_support import WebhookReceiver, poll_until_done
from replicate.exceptions import ReplicateError
from standardwebhooks import Webhook

from jobs.providers import provider_for
from jobs.providers.base import (
    MediaSubmission,
    ProviderError,
    ProviderInstance,
    ProviderState,
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_official_replicate_client(
    sandbox_url: str, control: httpx.Client, receiver: WebhookReceiver
) -> None:
    client = replicate.Client(api_token="r8_sandbox", base_url=sandbox_url + "/replicate")

    # run(): create with `Prefer: wait`, then the output URLs (file objects only for
    # https URLs, which the plain-http sandbox does not serve).
    outputs = list(
        client.run("black-forest-labs/flux-schnell", input={"prompt": "a fox", "num_outputs": 2})
    )
    assert len(outputs) == 2
    for url in outputs:
        image = httpx.get(url)
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")

    prediction = client.models.predictions.create(
        model="google/veo-3",
        input={"prompt": "waves", "duration": 2},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )
    assert prediction.status in ("starting", "processing")
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.metrics
    video = httpx.get(prediction.output)
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), "r") as container:
        assert len(list(container.decode(video=0))) == 8

    # The completed webhook verifies with both the client's and Standard Webhooks' code.
    headers, body = receiver.wait_for(1)[0]
    secret = client.webhooks.default.secret()
    replicate.webhooks.validate(headers=headers, body=body.decode(), secret=secret)  # raises
    assert Webhook(secret.key).verify(body, headers)["id"] == prediction.id
    assert headers["webhook-id"].startswith("msg_")

    control.post("/_sandbox/config", json={"media_render_ms": 60000})  # cancel lands in time
    pinned = client.predictions.create(
        version="acme/slow-model:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        input={"prompt": "slow"},
    )
    assert pinned.model == "acme/slow-model"
    pinned.cancel()
    assert pinned.status == "canceled"
    assert client.predictions.get(pinned.id).status == "canceled"

    with pytest.raises(ReplicateError) as invalid:
        client.models.predictions.create(model="acme/image", input={"width": 512})
    assert invalid.value.status == 422 and "prompt" in (invalid.value.detail or "")
    with pytest.raises(ReplicateError) as missing:
        client.predictions.get("doesnotexist")
    assert missing.value.status == 404
    stranger = replicate.Client(api_token="r8_other", base_url=sandbox_url + "/replicate")
    with pytest.raises(ReplicateError) as hidden:
        stranger.predictions.get(prediction.id)
    assert hidden.value.status == 404


async def test_replicate_adapter(
    sandbox_url: str, control: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = sandbox_url + "/replicate"
    provider = provider_for(ProviderInstance("replicate", "replicate", base, api_key="r8_key"))
    model = "meta/musicgen"
    try:
        submitted = await provider.submit(
            MediaSubmission("task_1", model, {"prompt": "a tune"}, callback_url=receiver.url)
        )
        assert submitted.state in (ProviderState.QUEUED, ProviderState.RUNNING)
        done = await poll_until_done(provider, submitted.provider_task_id, model)
        assert done.state is ProviderState.SUCCEEDED
        file = await provider.fetch_result(done.result_urls[0])
        assert file.content_type == "audio/wav" and file.data[:4] == b"RIFF"

        headers, body = (await asyncio.to_thread(receiver.wait_for, 1))[0]
        assert (await provider.parse_callback(headers, body)).result_urls == done.result_urls
        with pytest.raises(ProviderError, match="signature"):
            await provider.parse_callback(headers, body.replace(b"succeeded", b"failed"))

        await asyncio.to_thread(
            control.post,
            "/_sandbox/faults",
            json={"provider": "replicate", "status": 500, "render": True, "message": "OOM"},
        )
        broken = await provider.submit(MediaSubmission("task_2", model, {"prompt": "x"}))
        failed = await poll_until_done(provider, broken.provider_task_id, model)
        assert (failed.state, failed.fail_code, failed.fail_message) == (
            ProviderState.FAILED,
            "failed",
            "OOM",
        )
        with pytest.raises(ProviderError) as invalid:
            await provider.submit(MediaSubmission("task_3", model, {"seed": 1}))
        assert invalid.value.status == 422 and not invalid.value.retryable
    finally:
        await provider.aclose()
