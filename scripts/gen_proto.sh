#!/usr/bin/env bash
# Regenerates the Python code for proto/ into the directory given (default gen/).
set -euo pipefail
out=${1:-gen}
cd "$(dirname "$0")/.."
mkdir -p "$out"
protos=$(cd proto && find aig -name '*.proto' | sort)
(cd proto && PATH="$PWD/../.venv/bin:$PATH" ../.venv/bin/python -m grpc_tools.protoc -I . \
  --python_out="../$out" --grpc_python_out="../$out" --mypy_out="../$out" $protos)
# Every generated directory becomes a regular package so imports resolve without magic.
find "$out/aig" -type d -exec touch {}/__init__.py \;
