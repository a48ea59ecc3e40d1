"""AIG_TEST_BACKENDS: containers mode without a Docker engine stops the run with the reason.

The machines this project is developed on have no Docker engine, so this is what
`make test-containers` does here; the test points DOCKER_HOST at a socket that cannot
exist, so it proves the same on a machine that has Docker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from backends import BACKENDS_ENV, REPO_ROOT, BackendsUnavailable, mode


def _pytest_in_mode(value: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        BACKENDS_ENV: value,
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker-here.sock",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ledger"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_containers_mode_without_docker_stops_before_any_test(tmp_path: Path) -> None:
    result = _pytest_in_mode("containers", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "AIG_TEST_BACKENDS=containers runs Kafka, ClickHouse and PostgreSQL" in output
    assert f"no Docker engine answered at unix://{tmp_path}/no-docker-here.sock" in output
    assert "unset AIG_TEST_BACKENDS (make test)" in output
    # Nothing ran, nothing was skipped in its place.
    assert "passed" not in output and "skipped" not in output


def test_an_unknown_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKENDS_ENV, "docker")
    with pytest.raises(BackendsUnavailable, match="use one of local, containers"):
        mode()
    monkeypatch.delenv(BACKENDS_ENV)
    assert mode() == "local"
