#!/usr/bin/env bash
# Builds a program pinned in tools/NAME/go.mod (its `tool` line, at the version
# its go.mod requires) and prints the binary's path:
#
#   scripts/build-tool.sh jaeger
#
# Each such module lives outside the workspace, so the program's dependencies
# never move the services' versions; the program is only ever run, never
# imported. The binary is cached outside the work tree (scripts/cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: build-tool.sh NAME (a folder of tools/)}
mod=tools/$name
source scripts/cache.sh
if cached "$name" "$mod/go.mod" "$mod/go.sum"; then
	echo "$bin"
	exit 0
fi
pkg=$(sed -n 's/^tool \(.*\)/\1/p' "$mod/go.mod")
echo "build-tool: building $pkg (once; cached in $(dirname "$bin"))" >&2
tmp=$bin.tmp.$$
mkdir -p "$(dirname "$bin")"
trap 'rm -f "$tmp"' EXIT
(cd "$mod" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -ldflags '-s -w' -o "$tmp" "$pkg") >&2
mv "$tmp" "$bin"
echo "$bin"
