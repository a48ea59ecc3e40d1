"""The path template of the route a request matched (`/v1/models/{model_id:path}`), for
span names and metric labels: bounded, and free of what a raw path may hold (a model id,
a dashboard link's signed token)."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

# Endpoint -> template (None: not among the app's routes), filled on first sight.
_templates: dict[Any, str | None] = {}


def route_template(scope: Scope) -> str | None:
    """FastAPI's routes leave themselves in the scope; plain Starlette routes (the /v1
    calls) only their endpoint, which is looked up once among the app's routes."""
    template = getattr(scope.get("route"), "path_format", None)
    if isinstance(template, str):
        return template
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    if endpoint in _templates:
        return _templates[endpoint]
    found: str | None = None
    for route in getattr(scope.get("app"), "routes", ()):
        if getattr(route, "endpoint", None) == endpoint:
            found = getattr(route, "path_format", None)
            break
    _templates[endpoint] = found
    return found
