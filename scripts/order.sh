#!/usr/bin/env bash
# Places one sample order through the gateway, prints the answer and a link
# to its trace in the trace UI that is running: Grafana under make up, Jaeger
# under make demo (or make up PROFILE=jaeger).
set -euo pipefail
gateway=${GATEWAY_URL:-http://localhost:8080}
grafana=${GRAFANA_URL:-http://localhost:3000}
jaeger=${JAEGER_URL:-http://localhost:16686}

answer=$(curl -sS -X POST "$gateway/api/orders" \
	-H 'Content-Type: application/json' -H 'X-Tenant-ID: acme' \
	-d '{"customer_id":"cust-1","items":[{"sku":"COFFEE-BEANS-1KG","quantity":1},{"sku":"MUG-CERAMIC","quantity":2}]}')
echo "$answer"
trace=$(printf '%s' "$answer" | sed -n 's/.*"trace_id":"\([0-9a-f]\{32\}\)".*/\1/p')
if [ -z "$trace" ]; then
	echo "no trace_id in the answer" >&2
	exit 1
fi
answers() { curl -fso /dev/null --max-time 2 "$1"; }

echo
if answers "$grafana/api/health"; then
	# Grafana Explore, one pane, the Tempo datasource, the trace by ID (URL-encoded JSON).
	panes='%7B%22trace%22%3A%7B%22datasource%22%3A%22tempo%22%2C%22queries%22%3A%5B%7B%22refId%22%3A%22A%22%2C%22datasource%22%3A%7B%22type%22%3A%22tempo%22%2C%22uid%22%3A%22tempo%22%7D%2C%22queryType%22%3A%22traceql%22%2C%22query%22%3A%22'"$trace"'%22%7D%5D%2C%22range%22%3A%7B%22from%22%3A%22now-1h%22%2C%22to%22%3A%22now%22%7D%7D%7D'
	echo "trace $trace in Grafana:"
	echo "  $grafana/explore?schemaVersion=1&panes=$panes"
elif answers "$jaeger/api/services"; then
	# The collector holds a trace for its sampling decision (a few seconds)
	# before Jaeger has it: wait for it, so the link opens a trace, not a 404.
	for ((i = 0; i < 60; i++)); do
		answers "$jaeger/api/traces/$trace" && break
		sleep 0.5
	done
	echo "trace $trace in Jaeger:"
	echo "  $jaeger/trace/$trace"
else
	echo "trace $trace: no trace UI answers (Grafana on $grafana, Jaeger on $jaeger); make demo or make up runs one"
fi
