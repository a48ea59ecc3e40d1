#!/usr/bin/env bash
# Regenerates the Python code for proto/ into the directory given (default gen/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/gen}" && cd "${1:-$root/gen}" && pwd)
cd "$root/proto"
mapfile -t protos < <(find aig -name '*.proto' | sort)
PATH="$root/.venv/bin:$PATH" "$root/.venv/bin/python" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="quiet:$out" "${protos[@]}"
# Every generated directory becomes a regular package so imports resolve without magic.
find "$out/aig" -type d -exec touch {}/__init__.py \;
