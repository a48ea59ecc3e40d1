"""LiteLLM's proxy, pinned in bench/.venv-litellm, in front of the same sandbox endpoint.

Started the way its docs tell a new user to (`litellm --config config.yaml`), one worker
(`--num_workers 2` for the two-core scale-out).
With a database it needs Prisma's engines; `prisma_ready()` says whether they can be had.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.processes import free_port, wait_for_http

from .procs import ProcessGroup

VENV = Path(__file__).parent / ".venv-litellm"
MODEL = "gpt-4o-mini"


def litellm_version() -> str:
    result = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def _schema() -> Path:
    found = sorted(VENV.glob("lib/python*/site-packages/litellm/proxy/schema.prisma"))
    if not found:
        raise FileNotFoundError(f"no litellm/proxy/schema.prisma under {VENV}")
    return found[0]


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        # Its prisma CLI and the generated client live in its venv.
        "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        # Otherwise every start tries (and here fails, three times) to fetch prices from GitHub.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        **extra,
    }


def prisma_ready(timeout_s: float = 180) -> str | None:
    """None when LiteLLM's Prisma client can be generated here, else why not.

    `prisma generate` fetches Prisma's native engines from Prisma's own download host; no
    package registry serves them, so on a machine that only reaches registries this fails.
    """
    try:
        result = subprocess.run(
            [str(VENV / "bin" / "prisma"), "generate", "--schema", str(_schema())],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_env({}),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"prisma generate: {exc}"
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return "prisma generate failed: " + (lines[-1] if lines else f"exit {result.returncode}")


@dataclass
class LiteLLMProxy:
    upstream_base_url: str
    work_dir: Path
    database_url: str | None = None
    workers: int = 1
    port: int = field(default_factory=free_port)
    # LiteLLM refuses short master keys; it must start with sk-.
    master_key: str = field(default_factory=lambda: "sk-" + secrets.token_hex(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "litellm.log"

    def write_config(self) -> Path:
        general: dict[str, str] = {"master_key": self.master_key}
        if self.database_url:
            general["database_url"] = self.database_url
        config = {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": self.upstream_base_url,
                        "api_key": "sandbox-key",
                    },
                }
            ],
            "general_settings": general,
        }
        path = self.work_dir / "config.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def start(self, timeout_s: float = 180) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        extra = {"DATABASE_URL": self.database_url} if self.database_url else {}
        command = [
            str(VENV / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            str(self.workers),
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            env=_env(extra),
            cwd=self.work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_http(f"{self.url}/health/liveliness", self.process, timeout_s)
        except Exception as exc:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"LiteLLM did not start: {exc}\n--- log ---\n{tail}") from exc

    def processes(self) -> ProcessGroup:
        assert self.process is not None
        return ProcessGroup({"litellm": self.process.pid})

    def create_virtual_key(self) -> str:
        """A virtual key with a budget, so every call runs its key lookup and budget check."""
        response = httpx.post(
            f"{self.url}/key/generate",
            headers={"authorization": f"Bearer {self.master_key}"},
            json={"models": [MODEL], "max_budget": 1_000_000, "key_alias": "bench"},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["key"])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Its session may hold workers or a prisma query engine: end the whole group.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
