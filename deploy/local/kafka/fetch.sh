#!/usr/bin/env bash
# Download the jars of a single-node Apache Kafka broker from Maven Central.
#
#   deploy/local/kafka/fetch.sh [LIBS_DIR]     (default: <repo>/var/kafka/libs)
#
# A no-op when LIBS_DIR already holds the jars of the current pom.xml: a stamp named after
# the pom's hash marks a finished download, so an interrupted one is redone and a version
# bump in pom.xml fetches afresh. Maven's own cache (~/.m2) is left at its default so that
# a wiped var/ is refilled without the network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
libs="${1:-$repo/var/kafka/libs}"
pom="$here/pom.xml"
stamp=".fetched-$(sha256sum "$pom" | cut -c1-16)"

if [[ -f "$libs/$stamp" ]]; then
  exit 0
fi

mkdir -p "$(dirname "$libs")"
# Two starts at once (make up and a test run) must not interleave their downloads.
exec 9>"$libs.lock"
flock 9
if [[ -f "$libs/$stamp" ]]; then
  exit 0
fi

staging="$libs.partial"
rm -rf "$staging"
echo "fetching Kafka jars into $libs (Maven Central, cached in ~/.m2)" >&2
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$staging" >&2
touch "$staging/$stamp"
# Swap in the complete set at once, so the classpath never mixes two versions.
rm -rf "$libs"
mv "$staging" "$libs"
