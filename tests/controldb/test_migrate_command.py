"""`python -m controldb migrate`, the command the Kubernetes Job and compose's `migrate` run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from test_controldb_migrations import current_revision, head_revision


async def test_the_migrate_command_brings_the_database_to_head(database_url: str) -> None:
    assert await current_revision(database_url) is None
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controldb", "migrate"],
        env={**os.environ, "AIG_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert await current_revision(database_url) == head_revision()
    # The URL carries the password; the log names only the kind of database.
    assert database_url not in run.stderr


def test_the_migrate_command_refuses_anything_else(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "controldb", "upgrade"],
        env={**os.environ, "AIG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "usage: python -m controldb migrate" in run.stderr
    assert not (tmp_path / "x.db").exists()
