#!/usr/bin/env bash
# Builds the OpenTelemetry Collector of deploy/otel-collector/builder.yaml
# (the components of the compose image's config, at its version) and prints
# the binary's path. The build takes minutes, so it is cached outside the work
# tree, keyed by the manifest (scripts/cache.sh): a second call returns at once.
#
# The builder's own `go mod tidy` fails on test-only modules of contrib, so
# the builder only writes the sources; this script fetches each component with
# `go get` and compiles them.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=deploy/otel-collector/builder.yaml

source scripts/cache.sh
if cached otelcol-ordertrace "$manifest"; then
	echo "$bin"
	exit 0
fi
echo "build-collector: building the collector of $manifest (once, some minutes; cached in $(dirname "$bin"))" >&2
work=$(mktemp -d "$cache/otelcol-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd tools && GOWORK=off go build -o "$work/builder" go.opentelemetry.io/collector/cmd/builder) >&2
"$work/builder" --config "$manifest" --skip-get-modules --skip-compilation --output-path "$work/src" >&2 2>/dev/null

version=$(sed -n 's/^  version: *//p' "$manifest")
cd "$work/src"
export GOWORK=off GOFLAGS=-mod=mod
go mod init otelcol-ordertrace >/dev/null 2>&1
# The components, then the core modules the generated main.go imports. The
# confmap providers are versioned 1.x; the builder names theirs in main.go.
mods=$(sed -n 's/^ *- gomod: *\([^ ]*\) \(v[^ ]*\).*/\1@\2/p' "$OLDPWD/$manifest")
providers=$(sed -n 's/.*"\(go.opentelemetry.io\/collector\/confmap\/provider\/[a-z]*\) \(v[0-9.]*\)".*/\1@\2/p' main.go | sort -u)
go get $mods $providers "go.opentelemetry.io/collector/otelcol@v$version" >&2 2>/dev/null || go get $mods $providers "go.opentelemetry.io/collector/otelcol@v$version" >&2
go build -trimpath -ldflags '-s -w' -o otelcol-ordertrace . >&2

mkdir -p "$(dirname "$bin")"
mv otelcol-ordertrace "$bin"
echo "$bin"
