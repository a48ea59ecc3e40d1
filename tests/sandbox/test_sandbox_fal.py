"""fal's queue API, driven by the official `fal-client` over TLS (it only speaks https),
pointed at the sandbox with its own `FAL_QUEUE_RUN_HOST` variable; and the jobs service's
fal adapter against the same simulator."""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from media_support import WebhookReceiver, poll_until_done
from sandbox_server import BackgroundServer, self_signed_certificate

from jobs.providers import provider_for
from jobs.providers.base import (
    MediaSubmission,
    ProviderError,
    ProviderInstance,
    ProviderState,
    ProviderStatus,
)
from jobs.providers.fal import FalProvider
from sandbox.app import create_app
from sandbox.settings import SandboxSettings

_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import fal_client, httpx

    webhook, sandbox = sys.argv[1], sys.argv[2]
    out = {}
    handle = fal_client.submit(
        "fal-ai/flux/dev", arguments={"prompt": "a red fox", "num_images": 2},
        webhook_url=webhook,
    )
    out["events"] = [type(e).__name__ for e in handle.iter_events(with_logs=True, interval=0.05)]
    out["result"] = handle.get()
    out["request_id"] = handle.request_id
    # Status and result again by id: the client builds these URLs itself, without the subpath.
    out["status_by_id"] = type(fal_client.status("fal-ai/flux/dev", handle.request_id)).__name__
    out["result_by_id"] = fal_client.result("fal-ai/flux/dev", handle.request_id)

    out["video"] = fal_client.subscribe(
        "fal-ai/veo3/fast", arguments={"prompt": "waves", "duration": "2s"}
    )

    # A render long enough that the cancel surely lands while it is still running.
    httpx.post(sandbox + "/_sandbox/config", json={"media_render_ms": 60000}).raise_for_status()
    slow = fal_client.submit("fal-ai/kling-video/v2", arguments={"prompt": "slow"})
    fal_client.cancel("fal-ai/kling-video/v2", slow.request_id)
    final = None
    for event in slow.iter_events(interval=0.05):
        final = event
    out["cancelled_error"] = final.error
    httpx.post(sandbox + "/_sandbox/config", json={"media_render_ms": 300}).raise_for_status()

    bad = fal_client.submit("fal-ai/flux/dev", arguments={"image_size": "square"})
    try:
        bad.get()
        out["bad"] = "no error"
    except fal_client.client.FalClientHTTPError as exc:
        out["bad"] = [exc.status_code, exc.error_type]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    certfile, keyfile = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    app = create_app(SandboxSettings(port=0, media_queue_ms=50, media_render_ms=300))
    server = BackgroundServer(app, certfile=certfile, keyfile=keyfile)
    url = server.start()
    yield url, certfile
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_official_fal_client_runs_the_queue(
    tls_sandbox: tuple[str, Path], receiver: WebhookReceiver
) -> None:
    url, certfile = tls_sandbox
    env = {
        **os.environ,
        "FAL_KEY": "sandbox-key-id:sandbox-secret",
        "FAL_QUEUE_RUN_HOST": url.removeprefix("https://") + "/fal",
        "SSL_CERT_FILE": str(certfile),
    }
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT, receiver.url, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)

    assert out["events"][-1] == "Completed"
    images = out["result"]["images"]
    assert len(images) == 2 and out["result_by_id"] == out["result"]
    assert out["status_by_id"] == "Completed"
    trust = ssl.create_default_context(cafile=str(certfile))
    with httpx.Client(verify=trust) as client:
        for image in images:
            file = client.get(image["url"])
            assert file.headers["content-type"] == "image/png"
            assert file.content.startswith(b"\x89PNG\r\n\x1a\n")
        video = client.get(out["video"]["video"]["url"])
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), "r") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 8 and frames[0].width == 64  # 2 s at 4 frames per second

    assert out["cancelled_error"] == "Request was cancelled"
    assert out["bad"] == [422, "validation_error"]

    # The webhook of the first request arrived, signed; the jobs adapter verifies it.
    headers, body = receiver.wait_for(1)[0]
    assert json.loads(body)["request_id"] == out["request_id"]

    async def verify() -> ProviderStatus:
        async with httpx.AsyncClient(verify=trust) as client:
            instance = ProviderInstance("fal", "fal", base_url=url + "/fal", api_key="k")
            return await FalProvider(instance, client=client).parse_callback(headers, body)

    status = asyncio.run(verify())
    assert status.state is ProviderState.SUCCEEDED
    assert len(status.result_urls) == 2


async def test_fal_adapter_follows_a_task_to_its_files(
    sandbox_url: str, control: httpx.Client, receiver: WebhookReceiver
) -> None:
    provider = provider_for(
        ProviderInstance("fal", "fal", base_url=sandbox_url + "/fal", api_key="fal-key")
    )
    model = "fal-ai/flux-pro/kontext"
    try:
        submitted = await provider.submit(
            MediaSubmission("task_1", model, {"prompt": "a fox"}, callback_url=receiver.url)
        )
        assert submitted.state is ProviderState.QUEUED
        status = await poll_until_done(provider, submitted.provider_task_id, model)
        assert status.state is ProviderState.SUCCEEDED and len(status.result_urls) == 1
        file = await provider.fetch_result(status.result_urls[0])
        assert file.content_type == "image/png" and file.data.startswith(b"\x89PNG")

        headers, body = (await asyncio.to_thread(receiver.wait_for, 1))[0]
        called_back = await provider.parse_callback(headers, body)
        assert called_back.result_urls == status.result_urls
        for forged in (body.replace(b"fox", b"cat") + b" ", body[:-1] + b" "):
            with pytest.raises(ProviderError, match="signature"):
                await provider.parse_callback(headers, forged)
        stale = {
            **headers,
            "x-fal-webhook-timestamp": str(int(headers["x-fal-webhook-timestamp"]) - 3600),
        }
        with pytest.raises(ProviderError, match="timestamp"):
            await provider.parse_callback(stale, body)

        # A render the model fails ends FAILED with fal's error, not as a transport error.
        await _fault(control, {"provider": "fal", "status": 500, "render": True})
        broken = await provider.submit(MediaSubmission("task_2", model, {"prompt": "x"}))
        failed = await poll_until_done(provider, broken.provider_task_id, model)
        assert failed.state is ProviderState.FAILED
        assert failed.fail_code == "runner_server_error" and "500" in failed.fail_message

        # An outage is retryable; a cancelled render is a failure.
        await _fault(control, {"provider": "fal", "status": 503})
        with pytest.raises(ProviderError) as outage:
            await provider.submit(MediaSubmission("task_3", model, {"prompt": "x"}))
        assert outage.value.retryable and outage.value.status == 503
        await asyncio.to_thread(control.post, "/_sandbox/config", json={"media_render_ms": 60000})
        running = await provider.submit(MediaSubmission("task_4", model, {"prompt": "x"}))
        await provider.cancel(running.provider_task_id, model)
        cancelled = await provider.poll(running.provider_task_id, model)
        assert cancelled.state is ProviderState.FAILED
        assert cancelled.fail_code == "request_cancelled"
    finally:
        await provider.aclose()

    unauthorised = provider_for(ProviderInstance("fal", "fal", base_url=sandbox_url + "/fal"))
    with pytest.raises(ProviderError) as refused:
        await unauthorised.submit(MediaSubmission("task_5", model, {"prompt": "x"}))
    assert refused.value.status == 401 and not refused.value.retryable
    await unauthorised.aclose()


async def _fault(control: httpx.Client, fault: dict[str, Any]) -> None:
    response = await asyncio.to_thread(control.post, "/_sandbox/faults", json=fault)
    response.raise_for_status()
