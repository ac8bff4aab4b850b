#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ (with its management API, which
# the tests use to give each test its own virtual host) answer on localhost
# before the tests run. On a machine where they are installed as packages it
# starts them; on a machine with Docker it starts them from the compose file.
set -euo pipefail
cd "$(dirname "$0")/.."

compose_file=deploy/docker-compose.yml

up() { # host port
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() { # name host port seconds
	local i
	for ((i = 0; i < $4 * 2; i++)); do
		up "$2" "$3" && return 0
		sleep 0.5
	done
	echo "test-services: $1 is not answering on $2:$3" >&2
	return 1
}

have() { command -v "$1" >/dev/null 2>&1; }

docker_up() { # compose services...
	if have docker && docker info >/dev/null 2>&1 && [ -f "$compose_file" ]; then
		docker compose -f "$compose_file" up -d --wait "$@"
		return 0
	fi
	return 1
}

if ! up 127.0.0.1 5432; then
	echo "test-services: starting PostgreSQL" >&2
	if have pg_ctlcluster && [ -d /etc/postgresql ]; then
		pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
	else
		docker_up postgres || true
	fi
	wait_for PostgreSQL 127.0.0.1 5432 60
fi

if ! up 127.0.0.1 6379; then
	echo "test-services: starting Redis" >&2
	if have redis-server; then
		mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
			--dir /var/lib/redis --logfile /var/log/redis/ci.log
	else
		docker_up redis || true
	fi
	wait_for Redis 127.0.0.1 6379 30
fi

if ! up 127.0.0.1 5672; then
	echo "test-services: starting RabbitMQ" >&2
	if have rabbitmq-server; then
		# A node whose app was stopped only needs the app started again.
		rabbitmqctl start_app >/dev/null 2>&1 || rabbitmq-server -detached
	else
		docker_up rabbitmq || true
	fi
	wait_for RabbitMQ 127.0.0.1 5672 120
fi

# The management API (vhosts for the tests) and the Prometheus endpoint
# (the names the message-flow dashboard queries).
if ! up 127.0.0.1 15672 || ! up 127.0.0.1 15692; then
	if have rabbitmq-plugins; then
		echo "test-services: enabling the RabbitMQ management and Prometheus plugins" >&2
		rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus >/dev/null
	fi
	wait_for "RabbitMQ management API" 127.0.0.1 15672 60
	wait_for "RabbitMQ Prometheus endpoint" 127.0.0.1 15692 60
fi
echo "test-services: PostgreSQL, Redis and RabbitMQ are up" >&2
