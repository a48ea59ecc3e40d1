#!/usr/bin/env bash
# Builds stripe-mock (Stripe's own API test server, which serves Stripe's OpenAPI spec) from
# the Go module proxy into .tools/bin, once per version. The dashboard's payment tests run
# the real `stripe` Python client against it; nothing here reaches Stripe itself.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.203.0
BIN=.tools/bin/stripe-mock
STAMP=.tools/stripe-mock.version
if [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
GO=$(command -v go || echo /usr/local/go/bin/go)
[[ -x "$GO" ]] || { echo "stripe-mock needs Go to build (apt-get install golang-go)" >&2; exit 1; }
mkdir -p .tools/bin
GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod "$GO" install "github.com/stripe/stripe-mock@${VERSION}"
echo "$VERSION" > "$STAMP"
