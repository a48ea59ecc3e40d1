#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (an S3-compatible server) from the Go module proxy into
# .tools/go/bin, for the tests of the S3 result store. Idempotent: a current binary is kept.
# SeaweedFS tags releases without a `v`, so the module proxy only knows pseudo-versions;
# this one is the proxy's `latest` of 2026-11-09. Its go.mod has a `replace` directive, which
# `go install module@version` refuses, so the module is fetched from the proxy with
# `go mod download` and built as the main module (where the replace applies).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.0.0-20261109003541-7506e5f91cd6
BIN_DIR="$PWD/.tools/go/bin"
STAMP="$BIN_DIR/weed.version"
if [[ -x "$BIN_DIR/weed" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "install_seaweedfs: Go is required (golang-go)" >&2; exit 1; }
mkdir -p "$BIN_DIR"
start=$(date +%s)
source_dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@${VERSION}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
(cd "$source_dir" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -o "$BIN_DIR/weed" ./weed)
echo "$VERSION" >"$STAMP"
echo "install_seaweedfs: built weed ${VERSION} in $(($(date +%s) - start)) s" >&2
