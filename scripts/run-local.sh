#!/usr/bin/env bash
# Runs the suite on this machine, without Docker, until Ctrl-C or SIGTERM:
#
#   run-local.sh        the three services (make run); telemetry goes where
#                       OTEL_EXPORTER_OTLP_ENDPOINT says, or nowhere
#   run-local.sh demo   the native demo (make demo): the services, the suite's
#                       collector on deploy/otel-collector/config.yaml, and
#                       Jaeger v2 with a trace UI on :16686
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
	rm -f bin/run-local.pid
}
trap 'say "stopping"; stop; say "stopped"; exit 0' INT TERM
trap 'stop' EXIT

if [ "$mode" = demo ]; then
	logs=bin/demo
	mkdir -p "$logs"
	collector=$(bash scripts/build-collector.sh)
	jaeger=${JAEGER_BIN:-$(bash scripts/build-tool.sh jaeger)}
	# The Jaeger built from the Go module has no UI of its own (Jaeger's UI
	# is a separate JavaScript build): it serves deploy/jaeger/ui instead. A
	# Jaeger release binary with its UI: JAEGER_BIN=... JAEGER_UI_ASSETS= make demo.
	export JAEGER_UI_ASSETS=${JAEGER_UI_ASSETS-$PWD/deploy/jaeger/ui}
	run jaeger "$logs/jaeger.log" "$jaeger" --config deploy/jaeger/config.yaml
	ready jaeger http://127.0.0.1:13134/status
	# The stack's collector configuration, unchanged but for its addresses:
	# local only, and Jaeger where Tempo would be.
	TEMPO_OTLP_ENDPOINT=http://127.0.0.1:14318 \
		COLLECTOR_OTLP_GRPC_ENDPOINT=127.0.0.1:4317 COLLECTOR_OTLP_HTTP_ENDPOINT=127.0.0.1:4318 \
		COLLECTOR_HEALTH_ENDPOINT=127.0.0.1:13133 COLLECTOR_METRICS_HOST=127.0.0.1 \
		DEPLOYMENT_ENVIRONMENT=demo TRACE_DECISION_WAIT=${TRACE_DECISION_WAIT:-2s} \
		run collector "$logs/collector.log" "$collector" \
		--config deploy/otel-collector/config.yaml --config deploy/otel-collector/demo.yaml
	ready collector http://127.0.0.1:13133/
	export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
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
run orders "$(logfile orders)" bin/orders
ready orders http://127.0.0.1:8081/readyz
run fulfillment "$(logfile fulfillment)" bin/fulfillment
ready fulfillment http://127.0.0.1:8082/readyz
run gateway "$(logfile gateway)" bin/gateway
ready gateway http://127.0.0.1:8080/readyz

echo $$ >bin/run-local.pid # kill -TERM $(cat bin/run-local.pid) stops it as Ctrl-C does
if [ "$mode" = demo ]; then
	cat >&2 <<EOF

  ordertrace runs natively (no Docker; Loki, Prometheus and Grafana are left out)
    Jaeger, the traces    http://localhost:16686
    gateway               http://localhost:8080    make order places an order and prints its trace link
    collector (OTLP)      localhost:4317 (gRPC), localhost:4318 (HTTP)
    logs                  $logs/{gateway,orders,fulfillment,collector,jaeger}.log
    scenarios             make scenario NAME=payment-failures ON=1    (make scenarios lists them)
  Ctrl-C stops everything.

EOF
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
