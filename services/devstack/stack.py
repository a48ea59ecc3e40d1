"""The local stack: sandbox (when a provider has no key), router and edge as processes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .processes import Service, free_port

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY")


@dataclass
class StackPorts:
    edge: int = 8080
    router: int = 50051
    router_ops: int = 9464
    sandbox: int = 8090

    @classmethod
    def free(cls) -> StackPorts:
        return cls(
            edge=free_port(), router=free_port(), router_ops=free_port(), sandbox=free_port()
        )


@dataclass
class Stack:
    """Everything `make up` runs; tests start one on free ports."""

    var_dir: Path
    ports: StackPorts
    admin_token: str
    key_pepper: str
    database_url: str
    env: dict[str, str]
    with_sandbox: bool = True
    services: list[Service] = field(default_factory=list)

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.edge}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    def _service_env(self) -> dict[str, str]:
        return {
            **self.env,
            "AIG_SANDBOX_URL": self.sandbox_url,
            "AIG_SANDBOX_PORT": str(self.ports.sandbox),
            "AIG_ROUTER_PORT": str(self.ports.router),
            "AIG_ROUTER_METRICS_PORT": str(self.ports.router_ops),
            "AIG_ROUTER_ADDRESS": f"127.0.0.1:{self.ports.router}",
            "AIG_EDGE_PORT": str(self.ports.edge),
            "AIG_DATABASE_URL": self.database_url,
            "AIG_ADMIN_TOKEN": self.admin_token,
            "AIG_KEY_PEPPER": self.key_pepper,
        }

    def start(self) -> None:
        env = self._service_env()
        logs = self.var_dir / "logs"
        if self.with_sandbox:
            self.services.append(
                Service(
                    "sandbox", "sandbox", env, f"{self.sandbox_url}/healthz", logs / "sandbox.log"
                )
            )
        self.services.append(
            Service(
                "router",
                "router",
                env,
                f"http://127.0.0.1:{self.ports.router_ops}/healthz",
                logs / "router.log",
            )
        )
        self.services.append(
            Service("edge", "edge", env, f"{self.edge_url}/readyz", logs / "edge.log")
        )
        try:
            for service in self.services:
                service.start()
            for service in self.services:
                service.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)
