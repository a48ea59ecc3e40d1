"""The /v1/jobs surface at the edge: Kie's envelope, validation, SSRF refusal, idempotency,
ownership and reservations, on the whole stack (real broker, real control DB)."""

from __future__ import annotations

from typing import Any

import httpx

from aig_common.money import apply_markup, usd
from catalog.media import load_media_catalog
from devstack.stack import Stack

from .conftest import create_key

IMAGE_TASK: dict[str, Any] = {
    "model": "flux-kontext-pro",
    "input": {"prompt": "a red fox in snow", "num_images": 2},
}


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/v1", headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def _both_envelopes(response: httpx.Response, status: int, param: str | None = None) -> None:
    body = response.json()
    assert response.status_code == status, response.text
    assert body["code"] == status and body["msg"] == body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param


def test_create_task_then_record_info_in_kies_shape(stack: Stack, admin: httpx.Client) -> None:
    with _client(stack, create_key(admin, "jobs-shape")["key"]) as client:
        created = client.post("/jobs/createTask", json=IMAGE_TASK)
        assert created.status_code == 200, created.text
        assert created.json()["code"] == 200 and created.json()["msg"] == "success"
        task_id = created.json()["data"]["taskId"]

        record = client.get("/jobs/recordInfo", params={"taskId": task_id}).json()["data"]
        assert record["taskId"] == task_id and record["model"] == "flux-kontext-pro"
        assert record["state"] in {"waiting", "queuing", "generating", "success", "fail"}
        # Kie encodes param as a JSON string; times are Unix milliseconds.
        assert isinstance(record["param"], str)
        assert '"prompt":"a red fox in snow"' in record["param"]
        assert record["createTime"] > 1_700_000_000_000
        assert record["callback"] is None

        listed = client.get("/jobs", params={"model": "flux-kontext-pro"}).json()["data"]
        assert [task["taskId"] for task in listed["tasks"]] == [task_id]


def test_input_is_validated_against_the_models_schema(stack: Stack, api_key: str) -> None:
    with _client(stack, api_key) as client:
        missing = client.post("/jobs/createTask", json={"model": "veo-3.1", "input": {}})
        _both_envelopes(missing, 422, "input.prompt")
        bad = client.post(
            "/jobs/createTask", json={"model": "veo-3.1", "input": {"prompt": "x", "duration": 7}}
        )
        _both_envelopes(bad, 422, "input.duration")
        unknown = client.post("/jobs/createTask", json={"model": "nope", "input": {}})
        _both_envelopes(unknown, 422, "model")
        _both_envelopes(client.get("/jobs/recordInfo"), 422, "taskId")


def test_a_private_callback_url_is_refused(stack: Stack, api_key: str) -> None:
    with _client(stack, api_key) as client:
        for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest", "ftp://x.example/"):
            refused = client.post("/jobs/createTask", json={**IMAGE_TASK, "callBackUrl": url})
            _both_envelopes(refused, 422, "callBackUrl")


def test_another_accounts_task_is_a_404(stack: Stack, admin: httpx.Client) -> None:
    with _client(stack, create_key(admin, "jobs-owner")["key"]) as owner:
        task_id = owner.post("/jobs/createTask", json=IMAGE_TASK).json()["data"]["taskId"]
    with _client(stack, create_key(admin, "jobs-stranger")["key"]) as stranger:
        seen = stranger.get("/jobs/recordInfo", params={"taskId": task_id})
        _both_envelopes(seen, 404, "taskId")
        assert task_id not in seen.text.replace(f"'{task_id}'", "")  # no data, only the id
        assert stranger.get("/jobs").json()["data"]["tasks"] == []


def test_idempotency_key_returns_the_same_task_or_409(stack: Stack, admin: httpx.Client) -> None:
    with _client(stack, create_key(admin, "jobs-idem")["key"]) as client:
        headers = {"idempotency-key": "order-42"}
        first = client.post("/jobs/createTask", json=IMAGE_TASK, headers=headers)
        again = client.post("/jobs/createTask", json=IMAGE_TASK, headers=headers)
        assert first.json()["data"]["taskId"] == again.json()["data"]["taskId"]
        other = {**IMAGE_TASK, "input": {"prompt": "a blue fox"}}
        _both_envelopes(client.post("/jobs/createTask", json=other, headers=headers), 409)
        assert len(client.get("/jobs").json()["data"]["tasks"]) == 1


def test_the_worst_case_must_fit_or_402(stack: Stack, admin: httpx.Client) -> None:
    model = load_media_catalog().model("veo-3.1")
    assert model is not None
    task_input = {"prompt": "waves", "duration": 8, "generate_audio": True}
    worst = apply_markup(model.cost_nano_usd(task_input), 4000)  # 8 s x $0.40 + 40 %
    assert worst == 4_480_000_000
    created = create_key(admin, "jobs-402", credits_usd=usd(worst - 1))
    with _client(stack, created["key"]) as client:
        refused = client.post("/jobs/createTask", json={"model": "veo-3.1", "input": task_input})
        _both_envelopes(refused, 402)
        assert refused.json()["error"]["code"] == "insufficient_credits"
        assert refused.json()["error"]["metadata"]["requested_usd"] == usd(worst)
        # Four seconds without audio cost a quarter of that, and fit.
        cheaper = {"prompt": "waves", "duration": 4, "generate_audio": False}
        admitted = client.post("/jobs/createTask", json={"model": "veo-3.1", "input": cheaper})
        assert admitted.status_code == 200, admitted.text


def test_models_list_media_with_their_modality(stack: Stack, api_key: str) -> None:
    with _client(stack, api_key) as client:
        models = {model["id"]: model for model in client.get("/models").json()["data"]}
    assert models["veo-3.1"]["modality"] == "video"
    assert models["flux-kontext-pro"]["modality"] == "image"
    assert models["elevenlabs-multilingual-v2"]["modality"] == "audio"
    assert models["gpt-4o-mini"]["modality"] == "text"
    assert models["veo-3.1"]["pricing"]["unit"] == "second"
