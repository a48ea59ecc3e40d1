#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (an S3-compatible server) from the Go module proxy into
# .tools/bin, for the tests of the S3 result store (a no-op when it is current).
#
#   scripts/install_seaweedfs.sh        prints the path of the weed binary
#
# `make test` calls it, so a fresh clone and CI get the same pinned version. SeaweedFS tags
# its releases without a `v`, so the proxy only knows pseudo-versions: this one is the
# proxy's `latest` of 2026-11-09. Its go.mod has a `replace` directive, which
# `go install module@version` refuses, so the module is fetched with `go mod download` and
# built as the main module. It needs Go >= 1.26.6; an older Go fetches that toolchain as a
# module from the same proxy (golang.org/toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.0.0-20261109003541-7506e5f91cd6
GO_TOOLCHAIN=go1.26.8
tools="$PWD/.tools"
bin="$tools/bin/weed"
stamp="$tools/weed.version"

current() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; }
if current; then
  echo "$bin"
  exit 0
fi
mkdir -p "$tools/bin"
exec 9>"$tools/weed.lock"
flock 9
if current; then
  echo "$bin"
  exit 0
fi

go=$(command -v go || true)
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" ]]; then
  echo "install_seaweedfs: no Go toolchain (install Debian's golang-go or put go on PATH)" >&2
  exit 1
fi
export GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
minor=$("$go" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((minor < 26)); then
  arch=$("$go" env GOARCH)
  dir=$(cd "$tools" && "$go" mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch" |
    sed -n -E 's/^\s*"Dir": "(.*)",?$/\1/p')
  chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/* 2>/dev/null || true
  go="$dir/bin/go"
fi
source_dir=$(cd "$tools" && "$go" mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" |
  sed -n -E 's/^\s*"Dir": "(.*)",?$/\1/p')
echo "install_seaweedfs: building weed $VERSION with $("$go" env GOVERSION)" >&2
start=$SECONDS
(cd "$source_dir" && "$go" build -o "$bin" ./weed) >&2
echo "$VERSION" >"$stamp"
echo "install_seaweedfs: built in $((SECONDS - start)) s" >&2
echo "$bin"
