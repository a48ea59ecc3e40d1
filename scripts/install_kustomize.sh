#!/usr/bin/env bash
# Builds kustomize from the Go module proxy into .tools/bin (a no-op when it is current).
#
#   scripts/install_kustomize.sh        prints the path of the kustomize binary
#
# `make test` (through the k8s tests) and `make k8s` call it, so a fresh clone and CI get the
# same pinned version. It needs a Go toolchain: `go` on PATH or /usr/local/go. A Go older than
# kustomize needs (Debian bookworm ships 1.19) fetches a newer toolchain as a module from the
# same proxy (golang.org/toolchain) instead of from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
KUSTOMIZE_VERSION=v5.8.1
GO_TOOLCHAIN=go1.24.13
tools="$PWD/.tools"
bin="$tools/bin/kustomize"
stamp="$tools/kustomize.version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$KUSTOMIZE_VERSION" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$tools/bin"
exec 9>"$tools/kustomize.lock"
flock 9
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$KUSTOMIZE_VERSION" ]]; then
  echo "$bin"
  exit 0
fi

go=$(command -v go || true)
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" ]]; then
  echo "install_kustomize: no Go toolchain (install Debian's golang-go or put go on PATH)" >&2
  exit 1
fi
export GOPATH="$tools/go" GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local
minor=$("$go" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((minor < 22)); then
  # `go mod download` of the toolchain module works on any Go with module support.
  arch=$("$go" env GOARCH)
  dir=$(cd "$tools" && "$go" mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch" |
    sed -n -E 's/^\s*"Dir": "(.*)",?$/\1/p')
  chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/* 2>/dev/null || true
  go="$dir/bin/go"
fi
echo "install_kustomize: building kustomize $KUSTOMIZE_VERSION with $("$go" env GOVERSION)" >&2
GOBIN="$tools/bin" "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
echo "$KUSTOMIZE_VERSION" >"$stamp"
echo "$bin"
