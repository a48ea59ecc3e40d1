"""Length-prefixed protobuf messages (aig_common/framing.py), as the call socket sends them:
whole messages come out however the bytes were cut on the way."""

from __future__ import annotations

import random

import pytest

from aig.router.v1 import router_pb2 as pb
from aig_common import framing
from aig_common.framing import FrameTooLarge, MessageBuffer, encode


def _batches() -> list[pb.CallFrames]:
    return [
        pb.CallFrames(
            frames=[
                pb.CallFrame(call_id=n * 10 + i, chat=pb.ChatRequest(body=b"x" * (n * 37 + i)))
                for i in range(n % 3 + 1)
            ]
        )
        for n in range(40)
    ] + [pb.CallFrames()]  # the empty batch, which ends an edge's side


@pytest.mark.parametrize("seed", range(5))
def test_messages_come_out_whole_however_the_bytes_are_cut(seed: int) -> None:
    sent = _batches()
    data = b"".join(encode(batch) for batch in sent)
    cuts = random.Random(seed)
    buffer, received, at = MessageBuffer(), [], 0
    while at < len(data):
        step = cuts.choice([1, 2, 3, 5, 64, 1000])
        received += [pb.CallFrames.FromString(m) for m in buffer.feed(data[at : at + step])]
        at += step
    assert received == sent
    assert buffer.feed(b"") == []  # nothing left over


def test_a_length_over_the_limit_is_refused_before_its_bytes_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(framing, "MAX_MESSAGE_BYTES", 16)
    with pytest.raises(FrameTooLarge):
        MessageBuffer().feed((17).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):
        encode(pb.ChatRequest(body=b"x" * 32))
