"""Builds the sandbox ASGI app: every provider simulator and the control API on one port."""

from __future__ import annotations

from starlette.applications import Starlette

from sandbox import control
from sandbox.providers import (
    anthropic_api,
    fal_api,
    gemini_api,
    openai_api,
    openai_images_api,
    openai_responses_api,
    replicate_api,
)
from sandbox.settings import SandboxSettings
from sandbox.state import SandboxState
from sandbox.transport import hide_stream_cut_tracebacks


def create_app(settings: SandboxSettings | None = None) -> Starlette:
    """The sandbox app; settings default to the `AIG_SANDBOX_*` environment variables.

    Its state is reachable as `app.state.sandbox` (a `SandboxState`) for in-process use.
    """
    state = SandboxState(settings or SandboxSettings.from_env())
    hide_stream_cut_tracebacks()
    app = Starlette(
        routes=[
            *openai_api.routes(state),
            *openai_images_api.routes(state),
            *openai_responses_api.routes(state),
            *anthropic_api.routes(state),
            *gemini_api.routes(state),
            *fal_api.routes(state),
            *replicate_api.routes(state),
            *control.routes(state),
        ]
    )
    app.state.sandbox = state
    return app
