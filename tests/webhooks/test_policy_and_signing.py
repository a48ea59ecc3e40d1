"""The delivery rules and signatures, without a network: what each answer leads to, and
headers that the `standardwebhooks` library (the receivers' reference) accepts."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from aig.events.v1 import events_pb2 as pb
from controldb.webhooks import new_signing_secret
from webhooks.intake import deliveries_from
from webhooks.payload import callback_body
from webhooks.policy import Decision, decide, parse_retry_after
from webhooks.settings import DEFAULT_RETRY_SCHEDULE_S
from webhooks.signing import signature_headers

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _decide(status: int | None, index: int = 0, retry_after: float | None = None) -> Decision:
    return decide(
        status,
        retry_after_s=retry_after,
        schedule_index=index,
        schedule=DEFAULT_RETRY_SCHEDULE_S,
        jitter=0.2,
        max_retry_after_s=3600,
        now=NOW,
        rng=random.Random(7),
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (410, "disabled"), (500, "retry"), (301, "retry")],
)
def test_each_answer_has_one_outcome(status: int, outcome: str) -> None:
    assert _decide(status).outcome == outcome


def test_retries_follow_the_schedule_with_jitter_then_dead_letter() -> None:
    for index, delay in enumerate(DEFAULT_RETRY_SCHEDULE_S):
        decision = _decide(None, index)
        assert decision.next_attempt_at is not None
        waited = (decision.next_attempt_at - NOW).total_seconds()
        assert 0.8 * delay <= waited <= 1.2 * delay
    assert _decide(500, len(DEFAULT_RETRY_SCHEDULE_S)).outcome == "dead"


def test_retry_after_lengthens_the_wait_but_never_past_the_cap() -> None:
    longer = _decide(503, 0, retry_after=120)
    assert longer.next_attempt_at == NOW + timedelta(seconds=120)
    capped = _decide(429, 0, retry_after=10**9)
    assert capped.next_attempt_at == NOW + timedelta(seconds=3600)
    assert parse_retry_after("Thu, 03 Dec 2026 12:01:00 GMT", NOW) == 60
    assert parse_retry_after("soon", NOW) is None


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    current, previous = new_signing_secret(), new_signing_secret()
    body = b'{"code":200,"msg":"success","data":{"taskId":"t1"}}'
    headers = signature_headers(
        message_id="msg_1",
        task_id="t1",
        timestamp=int(time.time()),
        body=body,
        secrets=(current, previous),
        kie_hmac_key=None,
    )
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers)["data"]["taskId"] == "t1"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body.replace(b"t1", b"t2"), headers)


def test_the_body_is_kies_envelope_around_the_record_unchanged() -> None:
    record = b'{"taskId":"t1","state":"fail","failCode":"500","failMsg":"boom"}'
    event = pb.TaskEvent(
        task_id="t1", state=pb.TASK_STATE_FAIL, error_message="boom", record=record
    )
    body = callback_body(event)
    assert body.endswith(b',"data":' + record + b"}")
    assert orjson.loads(body)["code"] == 501 and orjson.loads(body)["msg"] == "boom"


def test_intake_keeps_terminal_events_with_a_url_and_skips_unreadable_ones() -> None:
    def event(
        task_id: str, state: pb.TaskState.ValueType, url: str = "https://example.com/cb"
    ) -> bytes:
        return pb.TaskEvent(
            event_id=f"e-{task_id}", task_id=task_id, account_id="a", state=state, callback_url=url
        ).SerializeToString()

    payloads = [
        event("done", pb.TASK_STATE_SUCCESS),
        event("failed", pb.TASK_STATE_FAIL),
        event("running", pb.TASK_STATE_GENERATING),
        event("no-url", pb.TASK_STATE_SUCCESS, url=""),
        b"\xff\xff not a protobuf",
    ]
    assert [d.task_id for d in deliveries_from(payloads)] == ["done", "failed"]
