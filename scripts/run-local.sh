#!/usr/bin/env bash
# Runs the suite on this machine, without Docker, until Ctrl-C or SIGTERM:
#
#   run-local.sh        the three services (make run); telemetry goes where
#                       OTEL_EXPORTER_OTLP_ENDPOINT says, or nowhere
#   run-local.sh demo   the native demo (make demo): the services, the suite's
#                       collector on deploy/otel-collector/config.yaml, and
#                       Jaeger v2 with a trace UI on :16686
#
# With SECURE=1 the demo's telemetry path is the secure profile's: every hop
# over TLS, the collector's OTLP ports TLS only and closed to a client
# without a certificate of the suite's CA and its own credential. The
# certificates and credentials are written (or kept) in CERTS_DIR (default
# deploy/certs, git-ignored) by deploy/cmd/certs, as make certs does.
#
# Backing services come from DATABASE_URL, REDIS_URL and AMQP_URL (the
# Makefile's defaults are the machine's own); the database is created if it
# is missing. The services watch SCENARIOS_FILE (default: the untracked
# deploy/scenarios/scenarios.json that make scenario edits).
#
# Stopping is ordered, whatever stops it: gateway, fulfillment, orders (each
# flushes its telemetry on SIGTERM), then the collector, then Jaeger. Each
# program runs in a process group of its own (set -m), so Ctrl-C reaches only
# this script, which then stops them in that order.
set -euo pipefail
cd "$(dirname "$0")/.."

# In a terminal, Ctrl-C would also reach make, which then reports an
# interrupt and fails although everything stopped cleanly. So the script
# re-runs itself as a foreground job of its own: set -m gives the job its own
# process group and the terminal, Ctrl-C reaches only the job, and make sees
# its clean exit. The job watches this outer script, in case make kills it.
if [ -t 0 ] && [ -z "${RUN_LOCAL_PARENT:-}" ]; then
	set -m
	RUN_LOCAL_PARENT=$$ bash "$0" "$@" && exit 0 || exit
fi
set -m

mode=${1:-services}
case $mode in
services | demo) ;;
*) echo "usage: run-local.sh [demo]" >&2 && exit 2 ;;
esac
: "${DATABASE_URL:?}" "${REDIS_URL:?}" "${AMQP_URL:?}"
export DATABASE_URL REDIS_URL AMQP_URL
export SCENARIOS_FILE=${SCENARIOS_FILE:-$PWD/deploy/scenarios/scenarios.json}
say() { echo "ordertrace: $*" >&2; }
case ${SECURE:-} in
'' | 0) secure= ;;
1) secure=1 ;;
*) echo "SECURE=$SECURE: use 1, or leave it unset" >&2 && exit 2 ;;
esac
if [ -n "$secure" ] && [ "$mode" != demo ]; then
	say "SECURE=1 is for make demo (and make up): make run exports where the OTEL_* variables say"
	secure=
fi

db=${DATABASE_URL##*/}
db=${db%%\?*}
admin=${DATABASE_URL%/*}/postgres
if command -v psql >/dev/null && ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
	psql "$admin" -qc "CREATE DATABASE \"$db\""
fi

names=() pids=()
# run NAME LOG CMD...: starts CMD in the background, its output in LOG.
run() {
	local name=$1 log=$2
	shift 2
	"$@" >"$log" 2>&1 &
	names+=("$name") pids+=($!)
}

# as_service NAME CMD...: runs CMD (in place of the shell) as the service
# NAME. In the secure demo, that gives it, and only it, its own client
# certificate and credential, through the SDK's standard variables; they are
# never written to a log or a command line.
as_service() {
	local name=$1
	shift
	if [ -n "$secure" ]; then
		OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=$CERTS_DIR/$name.crt OTEL_EXPORTER_OTLP_CLIENT_KEY=$CERTS_DIR/$name.key \
			OTEL_EXPORTER_OTLP_HEADERS=$(<"$CERTS_DIR/$name.headers") exec "$@"
	fi
	exec "$@"
}

# ready NAME URL: waits until URL answers 2xx, or fails if NAME has exited.
ready() {
	local name=$1 url=$2 i
	for ((i = 0; i < 600; i++)); do
		curl -fso /dev/null --max-time 2 "$url" && return 0
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			say "$name exited while starting"
			[ "$mode" = demo ] && tail -n 20 "$logs/$name.log" >&2
			return 1
		fi
		sleep 0.1
	done
	say "$name is not ready after 60 s ($url)"
	return 1
}

# stop: SIGTERM to each program, newest first, waiting (at most 30 s) for
# each to exit before the next, so the collector outlives the services'
# last flush and Jaeger outlives the collector's.
stopping=
stop() {
	[ -n "$stopping" ] && return
	stopping=1
	local i j
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM "${pids[i]}" 2>/dev/null || continue
		for ((j = 0; j < 300; j++)); do
			kill -0 "${pids[i]}" 2>/dev/null || break
			sleep 0.1
		done
		((j < 20)) || say "${names[i]} took $((j / 10)) s to stop"
		if kill -0 "${pids[i]}" 2>/dev/null; then
			say "${names[i]} ignored SIGTERM for 30 s; killing it"
			kill -KILL "${pids[i]}" 2>/dev/null || true
		fi
		wait "${pids[i]}" 2>/dev/null || true
	done
	# Only our own: a second run that failed to start leaves the first's.
	[ "$(cat bin/run-local.pid 2>/dev/null)" != $$ ] || rm -f bin/run-local.pid
}
trap 'say "stopping"; stop; say "stopped"; exit 0' INT TERM
trap 'stop' EXIT

if [ "$mode" = demo ]; then
	logs=bin/demo
	mkdir -p "$logs"
	scheme=http jaeger_secure=() collector_secure=()
	if [ -n "$secure" ]; then
		CERTS_DIR=${CERTS_DIR:-$PWD/deploy/certs}
		export CERTS_DIR # the secure overlays read their files from here
		# What it created or replaced; the files it kept go unsaid.
		go run ./deploy/cmd/certs -dir "$CERTS_DIR" | sed -n '/^kept /!s/^/ordertrace: certs: /p' >&2
		scheme=https jaeger_secure=(--config deploy/jaeger/secure.yaml) collector_secure=(--config deploy/otel-collector/secure.yaml)
	fi
	collector=$(bash scripts/build-collector.sh)
	jaeger=${JAEGER_BIN:-$(bash scripts/build-tool.sh jaeger)}
	# The Jaeger built from the Go module has no UI of its own (Jaeger's UI
	# is a separate JavaScript build): it serves deploy/jaeger/ui instead. A
	# Jaeger release binary with its UI: JAEGER_BIN=... JAEGER_UI_ASSETS= make demo.
	export JAEGER_UI_ASSETS=${JAEGER_UI_ASSETS-$PWD/deploy/jaeger/ui}
	# Traces in memory, gone when the demo stops; JAEGER_STORAGE=badger keeps
	# them on disk across runs (deploy/jaeger/badger.yaml).
	jaeger_storage=()
	case ${JAEGER_STORAGE:-memory} in
	memory) ;;
	badger)
		export JAEGER_BADGER_DIR=${JAEGER_BADGER_DIR:-$PWD/$logs/jaeger-badger}
		mkdir -p "$JAEGER_BADGER_DIR"
		jaeger_storage=(--config deploy/jaeger/badger.yaml)
		;;
	*) say "JAEGER_STORAGE=$JAEGER_STORAGE: use memory (the default) or badger" && exit 2 ;;
	esac
	run jaeger "$logs/jaeger.log" "$jaeger" --config deploy/jaeger/config.yaml "${jaeger_storage[@]}" "${jaeger_secure[@]}"
	ready jaeger http://127.0.0.1:13134/status
	# The stack's collector configuration, unchanged but for its addresses:
	# local only, and Jaeger where Tempo would be.
	TEMPO_OTLP_ENDPOINT=$scheme://127.0.0.1:14318 \
		COLLECTOR_OTLP_GRPC_ENDPOINT=127.0.0.1:4317 COLLECTOR_OTLP_HTTP_ENDPOINT=127.0.0.1:4318 \
		COLLECTOR_HEALTH_ENDPOINT=127.0.0.1:13133 COLLECTOR_METRICS_HOST=127.0.0.1 \
		DEPLOYMENT_ENVIRONMENT=demo TRACE_DECISION_WAIT=${TRACE_DECISION_WAIT:-2s} \
		run collector "$logs/collector.log" "$collector" \
		--config deploy/otel-collector/config.yaml --config deploy/otel-collector/demo.yaml "${collector_secure[@]}"
	ready collector http://127.0.0.1:13133/
	export OTEL_EXPORTER_OTLP_ENDPOINT=$scheme://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
	if [ -n "$secure" ]; then
		export OTEL_EXPORTER_OTLP_CERTIFICATE=$CERTS_DIR/ca.crt # the CA that signed the collector's certificate
		# The production profile compresses, as across a real network (docs/production-checklist.md, item 9).
		export OTEL_EXPORTER_OTLP_COMPRESSION=${OTEL_EXPORTER_OTLP_COMPRESSION:-gzip}
	fi
	# Quicker than production, for a person waiting on a trace: the services
	# export every second (the SDK's default: 5 s), and the collector above
	# decides on a trace 2 s after its first span (the stack's default: 5 s).
	export OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-1000} OTEL_BLRP_SCHEDULE_DELAY=${OTEL_BLRP_SCHEDULE_DELAY:-1000}
else
	logs=/dev/stdout
	if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
		say "OTEL_EXPORTER_OTLP_ENDPOINT is not set: telemetry export is off (make demo runs a collector and a trace UI)"
		export OTEL_TRACES_EXPORTER=${OTEL_TRACES_EXPORTER:-none} OTEL_METRICS_EXPORTER=${OTEL_METRICS_EXPORTER:-none} \
			OTEL_LOGS_EXPORTER=${OTEL_LOGS_EXPORTER:-none}
	fi
fi

logfile() { [ "$mode" = demo ] && echo "$logs/$1.log" || echo /dev/stdout; }
# orders migrates the schema that fulfillment uses, and the gateway calls
# orders: each starts once the one before is ready.
run orders "$(logfile orders)" as_service orders bin/orders
ready orders http://127.0.0.1:8081/readyz
run fulfillment "$(logfile fulfillment)" as_service fulfillment bin/fulfillment
ready fulfillment http://127.0.0.1:8082/readyz
run gateway "$(logfile gateway)" as_service gateway bin/gateway
ready gateway http://127.0.0.1:8080/readyz

echo $$ >bin/run-local.pid # kill -TERM $(cat bin/run-local.pid) stops it as Ctrl-C does
if [ "$mode" = demo ]; then
	cat >&2 <<EOF

  ordertrace runs natively (no Docker; Loki, Prometheus and Grafana are left out)
    Jaeger, the traces    http://localhost:16686
    gateway               http://localhost:8080    make order places an order and prints its trace link
    collector (OTLP)      localhost:4317 (gRPC), localhost:4318 (HTTP)${secure:+, TLS only}
    logs                  $logs/{gateway,orders,fulfillment,collector,jaeger}.log
    scenarios             make scenario NAME=payment-failures ON=1    (make scenarios lists them)
EOF
	if [ -n "$secure" ]; then
		cat >&2 <<EOF
    secure (SECURE=1)     the telemetry path is secure: services ─TLS─▶ collector ─TLS─▶ Jaeger; each service
                          shows a client certificate and its own credential; files in $CERTS_DIR
EOF
	fi
	printf '  Ctrl-C stops everything.\n\n' >&2
else
	say "gateway on :8080, orders on :8081, fulfillment on :8082; Ctrl-C stops them"
fi

# Until a signal, or until a program dies on its own (then stop the rest).
while :; do
	if [ -n "${RUN_LOCAL_PARENT:-}" ] && ! kill -0 "$RUN_LOCAL_PARENT" 2>/dev/null; then
		break # the outer script is gone: make was stopped
	fi
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			say "${names[i]} exited on its own; stopping the rest"
			exit 1
		fi
	done
	sleep 1 &
	wait $! || true
done
