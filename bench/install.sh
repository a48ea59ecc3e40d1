#!/usr/bin/env bash
# Installs what `python -m bench` needs, idempotently, under bench/ (all gitignored):
#   bench/.tools/bin/oha   the load generator (crates.io, built with cargo)
#   bench/.tools/bin/aig-bench-upstream   the two-core phase's upstream (bench/upstream, Go's
#                          standard library only; bench/compiled_upstream.py)
#   bench/.venv-litellm    LiteLLM's proxy, pinned, in its own venv (its deps clash with ours)
#   bench/.venv-tools      matplotlib, py-spy and psutil for plots, profiles and /proc sampling
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The repo's own uv (scripts/bootstrap.sh puts it there; `make bench` runs that first), so a
# fresh clone needs no uv on PATH.
UV="${UV:-$here/../.tools/bin/uv}"
OHA_VERSION="${OHA_VERSION:-1.10.0}"
PYTHON="${PYTHON:-python3.11}"

if [[ ! -x "$here/.tools/bin/oha" ]] || ! "$here/.tools/bin/oha" --version | grep -q "$OHA_VERSION"; then
  echo "bench: building oha $OHA_VERSION with cargo (a few minutes, once)" >&2
  cargo install oha --version "$OHA_VERSION" --locked --root "$here/.tools" --quiet
fi

# Go's build cache makes this a second or two when nothing changed.
(cd "$here/upstream" && GOFLAGS=-buildvcs=false GOTOOLCHAIN=local go build -o "$here/.tools/bin/aig-bench-upstream" .)

# A venv is reused only when its requirements file has not changed since it was built.
make_venv() {
  local venv="$1" requirements="$2"
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "bench: installing $(basename "$requirements") into $(basename "$venv")" >&2
  UV_PYTHON_DOWNLOADS=never "$UV" venv --quiet --allow-existing --python "$PYTHON" "$venv"
  "$UV" pip install --quiet --python "$venv/bin/python" -r "$requirements"
  echo "$want" >"$stamp"
}

make_venv "$here/.venv-litellm" "$here/litellm-requirements.txt"
make_venv "$here/.venv-tools" "$here/tools-requirements.txt"
