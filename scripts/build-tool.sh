#!/usr/bin/env bash
# Builds a program pinned in tools/NAME/go.mod (one of its `tool` lines, at the
# version its go.mod requires) and prints the binary's path:
#
#   scripts/build-tool.sh jaeger
#   scripts/build-tool.sh prometheus promtool   # the tool whose path ends in /promtool
#   scripts/build-tool.sh etcd                  # the module's only tool
#
# Each such module lives outside the workspace, so the program's dependencies
# never move the services' versions; the program is only ever run, never
# imported. A `// build-tags: a,b` line in the go.mod sets the build tags (part
# of the cache key, since it is in go.mod). The binary is cached outside the
# work tree (scripts/cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: build-tool.sh NAME [TOOL] (NAME a folder of tools/, TOOL the last element of one of its tool paths; NAME by default)}
tool=${2:-$name}
mod=tools/$name
source scripts/cache.sh
if cached "$tool" "$mod/go.mod" "$mod/go.sum"; then
	echo "$bin"
	exit 0
fi
tools=$(awk '/^tool \($/ {b = 1; next} b && /^\)/ {b = 0} b {print $1} /^tool [^(]/ {print $2}' "$mod/go.mod")
# A module's only tool needs no TOOL, whatever its path ends in (etcd's is
# go.etcd.io/etcd/server/v3).
if [ $# -lt 2 ] && [ "$(echo "$tools" | wc -l)" -eq 1 ]; then
	pkg=$tools
else
	pkg=$(echo "$tools" | grep -E "(^|/)$tool\$" || true)
fi
[ -n "$pkg" ] || { echo "build-tool: $mod/go.mod has no tool ending in /$tool" >&2; exit 2; }
tags=$(sed -n 's,^// build-tags: *,,p' "$mod/go.mod")
echo "build-tool: building $pkg (once; cached in $(dirname "$bin"))" >&2
tmp=$bin.tmp.$$
mkdir -p "$(dirname "$bin")"
trap 'rm -f "$tmp"' EXIT
(cd "$mod" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -tags "$tags" -ldflags '-s -w' -o "$tmp" "$pkg") >&2
mv "$tmp" "$bin"
echo "$bin"
