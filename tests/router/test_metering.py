"""Usage events carry the canonical model and the prices the call was priced at."""

from __future__ import annotations

import time
from typing import Any

from aig.router.v1 import router_pb2 as pb
from aig_common.usage import TokenUsage
from catalog.live import LiveCatalog
from catalog.models import load_catalog
from router.config import RouterConfig
from router.metering import Meter


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, key: str, value: bytes, headers: Any) -> None:
        self.sent.append((topic, value))


def _meter() -> tuple[Meter, _Publisher]:
    config = RouterConfig.build(load_catalog(), {}, "http://127.0.0.1:1")
    publisher = _Publisher()
    return Meter(LiveCatalog.fixed(config), publisher), publisher  # type: ignore[arg-type]


def _record(meter: Meter, model_id: str, usage: TokenUsage | None, status: int = 200) -> Any:
    return meter.record(
        pb.CallContext(account_id="acct", markup_basis_points=0),
        endpoint="chat.completions",
        model_id=model_id,
        provider="google",
        status=status,
        usage=usage,
        streamed=False,
        started_at=time.monotonic(),
    )


def test_the_prices_in_force_are_stamped_on_the_event() -> None:
    meter, publisher = _meter()
    event = _record(
        meter, "gemini-3-pro-preview", TokenUsage(prompt_tokens=10, completion_tokens=5)
    )
    assert (event.prices.input_nano_usd_per_token, event.prices.output_nano_usd_per_token) == (
        2000,
        12000,
    )
    assert event.upstream_cost_nano_usd == 10 * 2000 + 5 * 12000
    assert publisher.sent[0][0] == "aig.usage.v1"


def test_the_long_context_tier_is_what_gets_stamped_past_its_threshold() -> None:
    meter, _ = _meter()
    event = _record(meter, "gemini-3-pro-preview", TokenUsage(prompt_tokens=200_001))
    assert event.prices.input_nano_usd_per_token == 4000


def test_a_failed_call_carries_no_prices() -> None:
    meter, _ = _meter()
    event = _record(meter, "gpt-4o", None, status=502)
    assert not event.HasField("prices") and event.upstream_cost_nano_usd == 0
