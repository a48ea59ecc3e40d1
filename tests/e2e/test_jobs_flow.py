"""Media tasks end to end: edge → Kafka → jobs → the fal simulator → storage → billing.

Real broker, real control DB, real ledger, the sandbox's fal queue API rendering real files.
"""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aig.events.v1 import events_pb2 as events
from aig_common.money import NANO_PER_USD, apply_markup, parse_usd, usd
from controldb.tasks import now_ms
from devstack.processes import Service, free_port
from devstack.stack import Stack

from .conftest import Sandbox, create_key, wait_for_task, wait_for_usage, wait_until_settled

STARTER_MARKUP_BP = 4000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def media_sandbox(sandbox: Sandbox) -> Iterator[Sandbox]:
    yield sandbox
    sandbox.http.post("/_sandbox/config", json={"media_render_ms": 1000}).raise_for_status()


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/v1", headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def _create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/jobs/createTask", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


def _submissions(sandbox: Sandbox, prompt: str) -> int:
    """How many times the fal simulator was asked to start a render of `prompt`."""
    return sum(
        1
        for seen in sandbox.requests("fal")
        if "/requests/" not in seen["path"]
        and "/files/" not in seen["path"]
        and prompt in str(seen.get("body"))
    )


def test_image_task_succeeds_is_stored_and_billed_exactly(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    key = create_key(admin, "jobs-success", credits_usd="10.00")["key"]
    with _client(stack, key) as client:
        task_id = _create(
            client,
            {"model": "flux-kontext-pro", "input": {"prompt": "fox one", "num_images": 2}},
        )
        record = wait_for_task(client, task_id, {"success", "fail"})
        assert record["state"] == "success", record
        assert record["failCode"] == "" and record["completeTime"] >= record["createTime"]
        urls = httpx.Response(200, content=record["resultJson"]).json()["resultUrls"]
        assert len(urls) == 2
        for url in urls:
            # The signed URL is the credential: no API key needed.
            file = httpx.get(url, timeout=10)
            assert file.status_code == 200
            assert file.headers["content-type"] == "image/png"
            assert file.content.startswith(PNG_SIGNATURE)
        forged = httpx.get(urls[0].replace("signature=", "signature=x"), timeout=10)
        assert forged.status_code == 403

    # Two images at $0.04, marked up 40 %.
    billed = apply_markup(2 * 40_000_000, STARTER_MARKUP_BP)
    assert record["costUsd"] == usd(billed)
    me = wait_until_settled(base_url, key)
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == billed
    rows = wait_for_usage(base_url, key, 1)
    assert [(row["model"], parse_usd(row["billed_cost_usd"])) for row in rows] == [
        ("flux-kontext-pro", billed)
    ]
    assert _submissions(media_sandbox, "fox one") == 1


def test_audio_task_serves_a_real_wav(stack: Stack, api_key: str, media_sandbox: Sandbox) -> None:
    with _client(stack, api_key) as client:
        task_id = _create(
            client, {"model": "suno-v4.5-plus", "input": {"prompt": "a calm piano tune"}}
        )
        record = wait_for_task(client, task_id, {"success", "fail"})
    assert record["state"] == "success", record
    url = httpx.Response(200, content=record["resultJson"]).json()["resultUrls"][0]
    file = httpx.get(url, timeout=10)
    assert file.headers["content-type"] in {"audio/wav", "audio/x-wav"}
    with wave.open(io.BytesIO(file.content)) as audio:
        assert audio.getnframes() > 0


def test_provider_failure_fails_the_task_at_no_cost(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    key = create_key(admin, "jobs-fail", credits_usd="10.00")["key"]
    media_sandbox.http.post(
        "/_sandbox/faults", json={"provider": "fal", "status": 500, "count": 1, "render": True}
    ).raise_for_status()
    with _client(stack, key) as client:
        task_id = _create(client, {"model": "veo-3.1", "input": {"prompt": "doomed"}})
        record = wait_for_task(client, task_id, {"success", "fail"})
    assert record["state"] == "fail", record
    assert record["failCode"] and record["failMsg"]
    assert record["resultJson"] == "" and record["costUsd"] == "0.00"
    me = wait_until_settled(base_url, key)  # the reservation is released
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD
    rows = wait_for_usage(base_url, key, 1)
    assert [(row["failed"], parse_usd(row["billed_cost_usd"])) for row in rows] == [(1, 0)]


def test_jobs_killed_mid_render_completes_with_one_submission(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    media_sandbox.http.post("/_sandbox/config", json={"media_render_ms": 6000}).raise_for_status()
    key = create_key(admin, "jobs-kill", credits_usd="10.00")["key"]
    jobs = stack.service("jobs")
    with _client(stack, key) as client:
        task_id = _create(
            client, {"model": "veo-3.1", "input": {"prompt": "survivor", "duration": 4}}
        )
        wait_for_task(client, task_id, {"generating"})
        assert jobs.process is not None
        jobs.process.kill()  # SIGKILL: no shutdown, nothing flushed
        jobs.process.wait()
        jobs.start()
        jobs.wait_ready()
        record = wait_for_task(client, task_id, {"success", "fail"})
    assert record["state"] == "success", record
    url = httpx.Response(200, content=record["resultJson"]).json()["resultUrls"][0]
    video = httpx.get(url, timeout=10)
    assert video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    assert _submissions(media_sandbox, "survivor") == 1
    billed = apply_markup(4 * 400_000_000, STARTER_MARKUP_BP)
    me = wait_until_settled(base_url, key)
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed


def _cancels(sandbox: Sandbox) -> int:
    """How many renders the fal simulator was asked to cancel (PUT …/requests/{id}/cancel)."""
    return sum(1 for seen in sandbox.requests("fal") if seen["path"].endswith("/cancel"))


async def _bring_deadline_forward(stack: Stack, task_id: str) -> None:
    """Moves the task's deadline to now in the control DB, as if its render had run for the
    model's whole deadline (veo-3.1's is 30 minutes); the follower re-reads the task on
    every poll."""
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as connection:
            moved = await connection.execute(
                text("UPDATE tasks SET deadline_ms = :now WHERE id = :id"),
                {"now": now_ms(), "id": task_id},
            )
            assert moved.rowcount == 1
    finally:
        await engine.dispose()


def test_a_task_past_its_deadline_is_cancelled_upstream_and_costs_nothing(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    media_sandbox.http.post(
        "/_sandbox/config", json={"media_render_ms": 600_000}
    ).raise_for_status()
    key = create_key(admin, "jobs-deadline", credits_usd="10.00")["key"]
    with _client(stack, key) as client:
        task_id = _create(
            client, {"model": "veo-3.1", "input": {"prompt": "never ends", "duration": 4}}
        )
        wait_for_task(client, task_id, {"generating"})
        cancels_before = _cancels(media_sandbox)
        asyncio.run(_bring_deadline_forward(stack, task_id))
        record = wait_for_task(client, task_id, {"success", "fail"}, timeout_s=30)
    assert (record["state"], record["failCode"]) == ("fail", "timeout"), record
    assert record["resultJson"] == "" and record["costUsd"] == "0.00"
    assert _cancels(media_sandbox) == cancels_before + 1, "the render is cancelled at fal"
    me = wait_until_settled(base_url, key)  # the reservation is released
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD
    rows = wait_for_usage(base_url, key, 1)
    assert [(row["failed"], parse_usd(row["billed_cost_usd"])) for row in rows] == [(1, 0)]


def _followed(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "aig_jobs_tasks_followed"
    )


def test_a_task_whose_replica_is_gone_for_good_is_adopted_by_another(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    """A scale-down without a graceful stop: the replica following a task is killed and never
    comes back. The other replica adopts the task once its lease has run out, follows it to
    its end with the one submission there was, and it is billed once."""
    media_sandbox.http.post("/_sandbox/config", json={"media_render_ms": 8000}).raise_for_status()
    key = create_key(admin, "jobs-adopt", credits_usd="10.00")["key"]
    jobs = stack.service("jobs")
    port = free_port()
    standby = Service(
        "jobs-standby",
        "jobs",
        {**stack.replica_env(jobs.env, "jobs-standby"), "AIG_JOBS_PORT": str(port)},
        f"http://127.0.0.1:{port}/readyz",
        stack.var_dir / "logs" / "jobs-standby.log",
    )
    standby.start()
    replicas = {jobs.ready_url.removesuffix("/readyz"): jobs, f"http://127.0.0.1:{port}": standby}
    try:
        standby.wait_ready()
        with _client(stack, key) as client:
            task_id = _create(
                client, {"model": "veo-3.1", "input": {"prompt": "adopted", "duration": 4}}
            )
            wait_for_task(client, task_id, {"generating"})
            # Whichever replica took the TaskRequested follows it (both are in the group).
            (url,) = [url for url in replicas if _followed(url) >= 1]
            gone = replicas.pop(url)
            assert gone.process is not None
            gone.process.kill()
            gone.process.wait()
            record = wait_for_task(client, task_id, {"success", "fail"})
        assert record["state"] == "success", record
        (survivor,) = replicas
        # Adopted, followed to its end, let go (the follower ends just after the record).
        deadline = time.monotonic() + 10
        while _followed(survivor) != 0:
            assert time.monotonic() < deadline, "the survivor still follows the task"
            time.sleep(0.1)
        assert _submissions(media_sandbox, "adopted") == 1
        billed = apply_markup(4 * 400_000_000, STARTER_MARKUP_BP)
        me = wait_until_settled(base_url, key)
        assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed
    finally:
        # The module's stack gets its own jobs back; the standby goes.
        if not jobs.running():
            jobs.start()
            jobs.wait_ready()
        standby.stop()


def test_a_redelivered_task_requested_submits_and_bills_once(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    key = create_key(admin, "jobs-twice", credits_usd="10.00")["key"]
    with _client(stack, key) as client:
        task_id = _create(client, {"model": "qwen-image", "input": {"prompt": "twice"}})
        task = client.get("/jobs/recordInfo", params={"taskId": task_id}).json()["data"]
        account_id = client.get("/me").json()["account"]["id"]
        again = events.TaskRequested(
            event_id="redelivered", task_id=task_id, account_id=account_id, model=task["model"]
        )
        assert stack.kafka is not None
        asyncio.run(_produce(stack.kafka.bootstrap_servers, account_id, again, copies=2))
        record = wait_for_task(client, task_id, {"success", "fail"})
    assert record["state"] == "success", record
    time.sleep(1)  # room for a second submission, were there going to be one
    assert _submissions(media_sandbox, "twice") == 1
    billed = apply_markup(20_000_000, STARTER_MARKUP_BP)  # 1,024 x 768 is one megapixel
    me = wait_until_settled(base_url, key)
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed


async def _produce(servers: str, key: str, event: events.TaskRequested, copies: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for _ in range(copies):
            await producer.send_and_wait(
                "aig.tasks.v1", event.SerializeToString(), key=key.encode()
            )
    finally:
        await producer.stop()


def test_concurrent_tasks_never_bill_past_the_cap(
    stack: Stack, admin: httpx.Client, base_url: str, media_sandbox: Sandbox
) -> None:
    body = {"model": "flux-kontext-pro", "input": {"prompt": "capped"}}
    worst = apply_markup(40_000_000, STARTER_MARKUP_BP)
    cap = 10 * worst
    created = create_key(admin, "jobs-cap", credits_usd="10.00")
    admin.patch(
        f"/accounts/{created['account_id']}", json={"daily_cap_usd": usd(cap)}
    ).raise_for_status()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=f"{stack.edge_url}/v1",
            headers={"authorization": f"Bearer {created['key']}"},
            timeout=60,
        ) as client:
            responses = await asyncio.gather(
                *(client.post("/jobs/createTask", json=body) for _ in range(50))
            )
        return [response.status_code for response in responses]

    statuses = asyncio.run(burst())
    assert set(statuses) <= {200, 402}
    assert 1 <= statuses.count(200) <= 10
    me = wait_until_settled(base_url, created["key"], timeout_s=120)
    spent = parse_usd(me["account"]["caps"]["daily"]["spent_usd"])
    assert spent == statuses.count(200) * worst <= cap
