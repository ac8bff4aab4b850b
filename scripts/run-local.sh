#!/usr/bin/env bash
# Runs the three services from bin/ against the PostgreSQL, Redis and RabbitMQ
# named by DATABASE_URL, REDIS_URL and AMQP_URL, until Ctrl-C. Creates the
# database if it is missing; orders applies the schema at start.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?}" "${REDIS_URL:?}" "${AMQP_URL:?}"

db=${DATABASE_URL##*/}
db=${db%%\?*}
admin=${DATABASE_URL%/*}/postgres
if command -v psql >/dev/null && ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
	psql "$admin" -qc "CREATE DATABASE \"$db\""
fi

trap 'kill $(jobs -p) 2>/dev/null; wait' INT TERM EXIT
bin/orders &
sleep 1 # orders migrates the schema that fulfillment uses
bin/fulfillment &
bin/gateway &
echo "gateway on :8080, orders on :8081, fulfillment on :8082; Ctrl-C stops them" >&2
wait
