"""Simulated media renders shared by the queue-style simulators (fal, Replicate).

A render's state follows the clock: queued for `media_queue_ms`, rendering for
`media_render_ms`, then done. Its files are real (PNG, WAV or MP4, see `media.py`), made
when first fetched. When it finishes, the simulator's `on_finish` hook runs (to send the
provider's webhook). Nothing here knows a provider's wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox import media

_MAX_RENDERS = 2000
_MAX_SECONDS = 20  # sandbox files stay small whatever duration is asked for


class MediaKind(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


_VIDEO_WORDS = ("video", "veo", "kling", "wan", "seedance", "sora", "runway", "aleph", "hailuo")
_AUDIO_WORDS = ("audio", "music", "suno", "tts", "speech", "elevenlabs", "mureka", "voice")


def kind_of(model: str) -> MediaKind:
    """What a model renders, guessed from its id (the sandbox accepts any model id)."""
    name = model.lower()
    if any(word in name for word in _VIDEO_WORDS):
        return MediaKind.VIDEO
    if any(word in name for word in _AUDIO_WORDS):
        return MediaKind.AUDIO
    return MediaKind.IMAGE


class Phase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RenderFailure:
    status: int  # the HTTP status the model answered (422 bad input, 500 crashed)
    message: str
    detail: Any = None  # the model's error body, when it has one


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str
    content_type: str
    kind: MediaKind
    seed: int
    seconds: float


@dataclass(slots=True)
class Render:
    id: str
    provider: str
    model: str
    input: dict[str, Any]
    owner: str  # who submitted it (a hash of the API key): only they may read it
    created_at: float
    queue_s: float
    render_s: float
    kind: MediaKind
    outputs: tuple[OutputFile, ...]
    failure: RenderFailure | None = None
    webhook: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the simulator's own fields
    cancelled_at: float | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # set when it ends

    @property
    def started_at(self) -> float:
        return self.created_at + self.queue_s

    @property
    def finished_natural(self) -> float:
        return self.created_at + self.queue_s + self.render_s

    def phase(self, now: float | None = None) -> Phase:
        now = time.time() if now is None else now
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return Phase.CANCELLED
        return self._live_phase(now)

    def _live_phase(self, now: float) -> Phase:
        if now < self.started_at:
            return Phase.QUEUED
        if now < self.finished_natural:
            return Phase.RUNNING
        return Phase.FAILED if self.failure is not None else Phase.SUCCEEDED

    def cancel(self, now: float) -> bool:
        """Stops the render; False when it had already finished."""
        if self.phase(now) not in (Phase.QUEUED, Phase.RUNNING):
            return False
        self.cancelled_at = now
        self._changed.set()
        return True


def new_render(
    render_id: str,
    provider: str,
    model: str,
    model_input: dict[str, Any],
    *,
    api_key: str,
    queue_ms: int,
    render_ms: int,
    failure: RenderFailure | None,
    webhook: str | None,
    extra: dict[str, Any],
) -> Render:
    """A render starting now, its files planned from the model and its input."""
    return Render(
        id=render_id,
        provider=provider,
        model=model,
        input=model_input,
        owner=owner_of(api_key),
        created_at=time.time(),
        queue_s=queue_ms / 1000,
        render_s=render_ms / 1000,
        kind=kind_of(model),
        outputs=plan_outputs(render_id, model, model_input),
        failure=failure,
        webhook=webhook,
        extra=extra,
    )


def owner_of(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def plan_outputs(render_id: str, model: str, body: dict[str, Any]) -> tuple[OutputFile, ...]:
    """The files a render will produce, from its input: how many images, how long a clip."""
    kind = kind_of(model)
    seed_source = body.get("seed")
    seed = seed_source if isinstance(seed_source, int) else int(render_id.encode().hex()[-6:], 16)
    if kind is MediaKind.IMAGE:
        count = body.get("num_images", body.get("num_outputs", body.get("n", 1)))
        count = count if isinstance(count, int) and 1 <= count <= 8 else 1
        return tuple(
            OutputFile(f"{render_id}-{index}.png", "image/png", kind, seed + index, 0)
            for index in range(count)
        )
    seconds = _seconds(body.get("duration"), default=5 if kind is MediaKind.VIDEO else 3)
    if kind is MediaKind.VIDEO:
        return (OutputFile(f"{render_id}-0.mp4", "video/mp4", kind, seed, seconds),)
    return (OutputFile(f"{render_id}-0.wav", "audio/wav", kind, seed, seconds),)


def _seconds(value: Any, *, default: float) -> float:
    if isinstance(value, str):
        value = value.strip().removesuffix("s")
        try:
            value = float(value)
        except ValueError:
            return default
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(min(value, _MAX_SECONDS))
    return default


def file_bytes(output: OutputFile) -> bytes:
    if output.kind is MediaKind.IMAGE:
        return media.png_image(output.seed)
    if output.kind is MediaKind.VIDEO:
        return media.mp4_video(output.seconds, output.seed)
    return media.wav_audio(output.seconds, output.seed)


FinishHook = Callable[[Render], Awaitable[None]]


async def post_webhook(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], attempts: int
) -> int:
    """POSTs a provider webhook, retrying on errors and non-2xx answers with a short
    doubling backoff (the real providers retry for up to hours); the last status or 0."""
    status = 0
    for attempt in range(max(1, attempts)):
        if attempt:
            await asyncio.sleep(0.2 * 2 ** (attempt - 1))
        try:
            response = await client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        if 200 <= status < 300:
            break
    return status


class RenderBook:
    """Every render the sandbox knows, newest last, bounded; and their finish hooks."""

    def __init__(self) -> None:
        self._renders: OrderedDict[str, Render] = OrderedDict()
        self._files: dict[str, tuple[str, OutputFile]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, render: Render, on_finish: FinishHook | None) -> None:
        self._renders[render.id] = render
        for output in render.outputs:
            self._files[output.name] = (render.id, output)
        while len(self._renders) > _MAX_RENDERS:
            _old_id, old = self._renders.popitem(last=False)
            for output in old.outputs:
                self._files.pop(output.name, None)
        task = asyncio.get_running_loop().create_task(self._finish(render, on_finish))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def get(self, render_id: str) -> Render | None:
        return self._renders.get(render_id)

    def file(self, name: str) -> tuple[bytes, str] | None:
        """A finished render's file; None while unknown or not (successfully) finished."""
        entry = self._files.get(name)
        if entry is None:
            return None
        render = self._renders.get(entry[0])
        if render is None or render.phase() is not Phase.SUCCEEDED:
            return None
        return file_bytes(entry[1]), entry[1].content_type

    @staticmethod
    async def _finish(render: Render, on_finish: FinishHook | None) -> None:
        delay = render.finished_natural - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(render._changed.wait(), delay)
        render.finished.set()
        if on_finish is not None:
            await on_finish(render)

    def clear(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._renders.clear()
        self._files.clear()
