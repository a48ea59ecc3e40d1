"""The bench's own tools (oha, the compiled upstream, LiteLLM's and the plots' venvs), made
ready before a benchmark starts: `bench/install.sh` is idempotent and takes a second or two
once everything is there, so every entry point that drives load runs it first and a fresh
clone needs nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parent / "install.sh"


def ensure_installed() -> None:
    subprocess.run(["bash", str(SCRIPT)], check=True)
