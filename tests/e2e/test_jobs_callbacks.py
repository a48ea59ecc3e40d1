"""Provider callbacks end to end: the fal simulator POSTs its signed completion webhook to
the jobs service's `/callbacks/fal/{taskId}` (AIG_PROVIDER_CALLBACK_URL), which verifies it
against the simulator's JWKS and finishes the task without waiting for its next poll.

The stack of this module polls a task only every 120 s after its first look, so a task that
finishes within seconds was finished by the callback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aig_common.money import NANO_PER_USD, apply_markup, parse_usd
from devstack.stack import Stack, StackPorts

from .conftest import (
    Sandbox,
    _session_stack_env,
    admin_client,
    create_key,
    start_stack,
    wait_for_task,
    wait_until_settled,
)

POLL_S = 120
STARTER_MARKUP_BP = 4000


def _env(var_dir: Path, ports: StackPorts) -> dict[str, str]:
    return {
        **_session_stack_env(var_dir, ports),
        "AIG_JOBS_POLL_INITIAL_S": str(POLL_S),
        "AIG_JOBS_POLL_MAX_S": str(POLL_S),
        "AIG_PROVIDER_CALLBACK_URL": f"http://127.0.0.1:{ports.jobs}/callbacks",
    }


@pytest.fixture(scope="module")
def callback_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = start_stack(request, tmp_path_factory, "sqlite", _env)
    yield running
    running.stop()


def _record(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get("/jobs/recordInfo", params={"taskId": task_id})
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


@contextlib.contextmanager
def _started_task(
    stack: Stack, render_ms: int, prompt: str
) -> Iterator[tuple[httpx.Client, str, str]]:
    """A new account's key (with $10.00), a client for it, and the id of an image task of
    `prompt` the sandbox renders in `render_ms`."""
    sandbox = Sandbox(stack.sandbox_url)
    sandbox.http.post("/_sandbox/config", json={"media_render_ms": render_ms}).raise_for_status()
    with admin_client(stack) as admin:
        key = str(create_key(admin, prompt, credits_usd="10.00")["key"])
    with httpx.Client(
        base_url=f"{stack.edge_url}/v1", headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        created = client.post(
            "/jobs/createTask", json={"model": "flux-kontext-pro", "input": {"prompt": prompt}}
        )
        assert created.status_code == 200, created.text
        yield client, key, str(created.json()["data"]["taskId"])


def _submissions(sandbox: Sandbox, prompt: str) -> list[dict[str, Any]]:
    return [
        seen
        for seen in sandbox.requests("fal")
        if prompt in str(seen.get("body")) and "/requests/" not in seen["path"]
    ]


def test_a_signed_provider_callback_finishes_the_task_before_its_next_poll(
    callback_stack: Stack,
) -> None:
    sandbox = Sandbox(callback_stack.sandbox_url)
    with _started_task(callback_stack, 1000, "called back") as (client, key, task_id):
        record = wait_for_task(client, task_id, {"success", "fail"}, timeout_s=POLL_S / 4)
    (submission,) = _submissions(sandbox, "called back")
    assert (
        f"fal_webhook=http%3A%2F%2F127.0.0.1%3A{callback_stack.ports.jobs}" in submission["query"]
    )
    assert record["state"] == "success", record
    image = httpx.get(httpx.Response(200, content=record["resultJson"]).json()["resultUrls"][0])
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
    billed = apply_markup(40_000_000, STARTER_MARKUP_BP)  # one image at $0.04, marked up 40 %
    me = wait_until_settled(f"{callback_stack.edge_url}/v1", key)
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed


def test_a_forged_provider_callback_is_refused_and_changes_nothing(
    callback_stack: Stack,
) -> None:
    sandbox = Sandbox(callback_stack.sandbox_url)
    with _started_task(callback_stack, 600_000, "forged") as (client, _key, task_id):
        submitted_by = time.monotonic() + 30  # jobs submits it after createTask has answered
        while not _submissions(sandbox, "forged"):
            assert time.monotonic() < submitted_by, "the task never reached the provider"
            time.sleep(0.1)
        forged_body = (
            b'{"request_id": "x", "status": "OK", "payload": {"images": [{"url": "http://x/"}]}}'
        )
        forged = httpx.post(
            f"http://127.0.0.1:{callback_stack.ports.jobs}/callbacks/fal/{task_id}",
            content=forged_body,
            headers={
                "x-fal-webhook-request-id": "x",
                "x-fal-webhook-user-id": "someone",
                "x-fal-webhook-timestamp": str(int(time.time())),
                "x-fal-webhook-signature": "00" * 64,
            },
            timeout=10,
        )
        assert forged.status_code == 401, forged.text
        unsigned = httpx.post(
            f"http://127.0.0.1:{callback_stack.ports.jobs}/callbacks/fal/{task_id}",
            content=forged_body,
            timeout=10,
        )
        assert unsigned.status_code == 401, unsigned.text
        assert _record(client, task_id)["state"] in {"waiting", "queuing", "generating"}
