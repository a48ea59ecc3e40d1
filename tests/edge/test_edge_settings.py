"""Edge settings that must agree with a limit elsewhere are refused at start, not mid-call."""

from __future__ import annotations

import pytest

from aig_common.framing import MAX_MESSAGE_BYTES
from edge.settings import MESSAGE_HEADROOM_BYTES, EdgeSettings

BASE_ENV = {"AIG_ADMIN_TOKEN": "admin", "AIG_KEY_PEPPER": "pepper"}
LARGEST_BODY = (MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES) // 2


def test_the_largest_body_a_router_message_can_carry_is_accepted() -> None:
    env = {**BASE_ENV, "AIG_MAX_BODY_BYTES": str(LARGEST_BODY)}
    assert EdgeSettings.from_env(env).max_body_bytes == LARGEST_BODY


def test_a_body_limit_over_what_a_router_message_carries_is_refused() -> None:
    env = {**BASE_ENV, "AIG_MAX_BODY_BYTES": str(LARGEST_BODY + 1)}
    with pytest.raises(RuntimeError, match="AIG_MAX_BODY_BYTES"):
        EdgeSettings.from_env(env)
