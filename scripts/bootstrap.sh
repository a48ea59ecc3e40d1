#!/usr/bin/env bash
# Creates .venv from uv.lock (and the JS test client from its lock) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
if [[ ! -x .tools/bin/uv ]]; then
  python3.11 -m venv .tools
  .tools/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
UV_PYTHON_DOWNLOADS=never .tools/bin/uv sync --frozen --python python3.11 --quiet
touch .venv/.synced
