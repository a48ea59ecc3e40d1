"""Router configuration, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

ProviderName = Literal["openai", "anthropic", "google", "openrouter"]
PROVIDERS: tuple[ProviderName, ...] = ("openai", "anthropic", "google", "openrouter")

# (key variable, base-URL override variable, real base URL, sandbox path prefix)
_PROVIDER_ENV: dict[ProviderName, tuple[str, str, str, str]] = {
    "openai": ("OPENAI_API_KEY", "AIG_OPENAI_BASE_URL", "https://api.openai.com/v1", "/openai/v1"),
    "anthropic": (
        "ANTHROPIC_API_KEY",
        "AIG_ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
        "/anthropic",
    ),
    "google": (
        "GEMINI_API_KEY",
        "AIG_GEMINI_BASE_URL",
        "https://generativelanguage.googleapis.com",
        "/google",
    ),
    "openrouter": (
        "OPENROUTER_API_KEY",
        "AIG_OPENROUTER_BASE_URL",
        "https://openrouter.ai/api/v1",
        "/openrouter/api/v1",
    ),
}


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: ProviderName
    base_url: str
    api_key: str
    # True when no key is configured and the sandbox simulator stands in for the provider.
    sandboxed: bool


@dataclass(frozen=True, slots=True)
class RouterSettings:
    host: str
    port: int
    metrics_port: int
    providers: dict[ProviderName, ProviderSettings]
    connect_timeout_s: float
    read_timeout_s: float
    max_image_bytes: int
    kafka_bootstrap_servers: str
    spool_dir: str
    breaker_failures: int
    breaker_cooldown_s: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RouterSettings:
        env = dict(os.environ) if env is None else env
        sandbox_url = env.get("AIG_SANDBOX_URL", "http://127.0.0.1:8090").rstrip("/")
        providers: dict[ProviderName, ProviderSettings] = {}
        for name, (key_var, url_var, real_url, sandbox_prefix) in _PROVIDER_ENV.items():
            key = env.get(key_var, "")
            sandboxed = not key
            default_url = sandbox_url + sandbox_prefix if sandboxed else real_url
            providers[name] = ProviderSettings(
                name=name,
                base_url=env.get(url_var, default_url).rstrip("/"),
                api_key=key or "sandbox-key",
                sandboxed=sandboxed,
            )
        return cls(
            host=env.get("AIG_ROUTER_HOST", "127.0.0.1"),
            port=int(env.get("AIG_ROUTER_PORT", "50051")),
            metrics_port=int(env.get("AIG_ROUTER_METRICS_PORT", "9464")),
            providers=providers,
            connect_timeout_s=float(env.get("AIG_UPSTREAM_CONNECT_TIMEOUT_S", "5")),
            read_timeout_s=float(env.get("AIG_UPSTREAM_READ_TIMEOUT_S", "300")),
            max_image_bytes=int(env.get("AIG_MAX_IMAGE_BYTES", str(20 * 1024 * 1024))),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            spool_dir=env.get("AIG_SPOOL_DIR", "var/spool"),
            breaker_failures=int(env.get("AIG_BREAKER_FAILURES", "5")),
            breaker_cooldown_s=float(env.get("AIG_BREAKER_COOLDOWN_S", "30")),
        )
