"""Where clients reach aig: the base of result URLs and of provider callbacks."""

from __future__ import annotations

from collections.abc import Mapping

PUBLIC_URL_ENV = "AIG_PUBLIC_URL"


def public_url_from_env(env: Mapping[str, str]) -> str:
    """`AIG_PUBLIC_URL`, else the edge's own listener (right on one machine)."""
    explicit = env.get(PUBLIC_URL_ENV, "").strip()
    if explicit:
        return explicit.rstrip("/")
    host = env.get("AIG_EDGE_HOST", "127.0.0.1")
    return f"http://{host}:{env.get('AIG_EDGE_PORT', '8080')}"
