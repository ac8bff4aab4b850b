# The user's menu. `make help` lists every target.

SHELL       := bash
MODULES     := github.com/ordertrace/ordertrace/...
SERVICES    := gateway orders fulfillment
GO_MODULES  := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
GO_DIRS     := pkg services e2e deploy exercises
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
GOTEST_FLAGS ?= -race -shuffle=on -count=1 -timeout 12m

COMPOSE     := docker compose -f deploy/docker-compose.yml
# PROFILE=jaeger adds Jaeger v2, fed by the collector.
PROFILE     ?=
COMPOSE_ENV := COMPOSE_PROFILES=$(PROFILE) COLLECTOR_OVERLAY=$(if $(PROFILE),$(PROFILE),none)
# SECURE=1: every telemetry hop over TLS, each service with its own client
# certificate and credential (make certs writes them to deploy/certs, which
# git ignores); the compose override and the collector's overlays add it.
SECURE      ?=
CERTS_DIR   ?= deploy/certs
ifeq ($(SECURE),1)
COMPOSE     += -f deploy/docker-compose.secure.yml
COMPOSE_ENV += COLLECTOR_SECURE_OVERLAY=$(if $(PROFILE),$(PROFILE)-secure,none)
export CERTS_GID := $(shell id -g)
endif

# Where `make run` finds the backing services (the machine's own, by default).
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ordertrace?sslmode=disable
REDIS_URL    ?= redis://127.0.0.1:6379/0
AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672/
# The workshop's live scenarios file, untracked (deploy/scenarios/defaults.json
# is the tracked default), watched by make run, make demo and make up.
SCENARIOS_FILE ?= $(CURDIR)/deploy/scenarios/scenarios.json

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "; n = 0} /^[a-z0-9-]+:.*## / {name[n] = $$1; text[n++] = $$2; if (length($$1) > w) w = length($$1)} \
		END {for (i = 0; i < n; i++) printf "  make %-*s  %s\n", w, name[i], text[i]}' $(MAKEFILE_LIST)

# Docker needs both a running engine and the compose plugin; without them,
# `make up` says so in one line and runs the native demo instead.
HAVE_COMPOSE = docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1

.PHONY: up up-compose
up: $(if $(filter 1,$(SECURE)),certs) ## the whole stack in Docker, waits until every container is healthy, prints the URLs; without Docker: make demo (SECURE=1: over TLS)
	@if { $(HAVE_COMPOSE); }; then exec $(MAKE) --no-print-directory up-compose; fi; \
	echo "make up: no working Docker engine with the compose plugin here; running the native demo instead (make demo)"; \
	exec $(MAKE) --no-print-directory demo

up-compose:
	$(COMPOSE_ENV) VERSION=$(VERSION) $(COMPOSE) up -d --build --wait
	@echo
	@echo "  Grafana      http://localhost:3000   (dashboards; Explore for traces, logs, metrics)"
	@echo "  gateway      http://localhost:8080   (make order places an order)"
	@echo "  RabbitMQ     http://localhost:15672  (guest / guest)"
	@echo "  Prometheus   http://localhost:9090"
	@echo "  Pyroscope    http://localhost:4040   (the services' profiles; also in Grafana)"
	@if [ "$(PROFILE)" = jaeger ]; then echo "  Jaeger       http://localhost:16686"; fi
	@if [ "$(SECURE)" = 1 ]; then echo "  secure: telemetry over TLS with client certificates and per-service credentials ($(CERTS_DIR))"; fi

.PHONY: demo
demo: build test-services ## the native demo, no Docker: the services, the collector and Jaeger v2's trace UI on :16686 (Ctrl-C stops it); SECURE=1: over TLS
	@DATABASE_URL='$(DATABASE_URL)' REDIS_URL='$(REDIS_URL)' AMQP_URL='$(AMQP_URL)' SCENARIOS_FILE='$(SCENARIOS_FILE)' SECURE='$(SECURE)' bash scripts/run-local.sh demo

# The generator prints what it kept and what it created (deploy/cmd/certs).
.PHONY: certs
certs: ## the secure profile's CA, certificates and per-service credentials in deploy/certs (git-ignored; files still valid are kept)
	@go run ./deploy/cmd/certs -dir $(CERTS_DIR)

.PHONY: down
down: ## stop the stack, keeping its data
	$(COMPOSE_ENV) $(COMPOSE) --profile jaeger down

.PHONY: logs
logs: ## follow the logs of every container
	$(COMPOSE) logs -f --tail=50

.PHONY: ps
ps: ## list the stack's containers and their health
	$(COMPOSE) --profile jaeger ps

SCENARIO ?= smoke

.PHONY: load
load: ## run a k6 scenario against the stack (SCENARIO=smoke|average|stress|spike|soak; RATE= and DURATION= for average and soak)
	@test -f loadtest/k6/$(SCENARIO).js || { echo "no scenario $(SCENARIO): pick smoke, average, stress, spike or soak"; exit 2; }
	SCENARIO=$(SCENARIO) RATE=$(RATE) DURATION=$(DURATION) $(COMPOSE) --profile load run --rm -e RATE -e DURATION k6
	@echo "summary: loadtest/results/summary-$(SCENARIO).json; the run in Grafana: ordertrace · Load test (k6)"

.PHONY: test-k6
test-k6: ## parse the k6 scripts and unit-test their shared logic with node's test runner
	cd loadtest/k6 && node --test test/

.PHONY: test-stack
test-stack: stack-programs ## the deploy/ files run by the real programs: the walk (services, collector, Loki, Prometheus, Jaeger for Tempo, k6's smoke.js), the alert rules by promtool and Prometheus (one alert fired end to end), the secure profile's files, Jaeger's disk storage
	go test -tags stack -run '^TestStack' -count=1 -v -timeout 20m ./deploy ./e2e 2>&1 | tee bin/stack-test.log | grep -E '^(---|===|ok|FAIL|PASS)|_test.go'; exit $${PIPESTATUS[0]}

.PHONY: stack-memory
stack-memory: test-services stack-programs ## the walk of make test-stack under k6's average.js (RATE=20 journeys/s, DURATION=5m): each program's peak memory, for the limits of docker-compose.yml (writes bin/stack-memory-average.json)
	@# -tags bench: the services built as released, not under the race detector, which would swamp their figures.
	STACK_K6_SCENARIO=average RATE=$(RATE) DURATION=$(DURATION) go test -tags stack,bench -run '^TestStackWalk$$' -count=1 -v -timeout 30m ./e2e 2>&1 | tee bin/stack-memory.log | grep -E '^(---|ok|FAIL)|peak memory|k6 |stopped in'; exit $${PIPESTATUS[0]}

# The programs the stack's tests run, built first (minutes each when not
# cached), so the tests time themselves, not the builds.
.PHONY: stack-programs
stack-programs:
	@mkdir -p bin
	@began=$$(date +%s); for tool in "prometheus" "prometheus promtool" "loki" "k6" "jaeger"; do bash scripts/build-tool.sh $$tool >/dev/null || exit 1; done && \
		bash scripts/build-collector.sh >/dev/null && echo "stack: Prometheus, promtool, Loki, k6, Jaeger and the collector are ready ($$(($$(date +%s) - began)) s)"

.PHONY: build
build: $(addprefix bin/,$(SERVICES)) ## build bin/gateway, bin/orders and bin/fulfillment

bin/%: FORCE
	go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./services/$*

.PHONY: FORCE
FORCE:

.PHONY: test
test: test-services ## run every test (unit and end-to-end) against local PostgreSQL, Redis and RabbitMQ
	go test $(GOTEST_FLAGS) $(MODULES)
	@# The workshop's exercises: the solutions pass, and the exercises as handed out do not.
	go test $(GOTEST_FLAGS) -tags solution ./exercises/...
	@if go test -count=1 -tags exercise ./exercises/... >/dev/null 2>&1; then echo "an unsolved exercise in exercises/ passes its tests"; exit 1; fi

.PHONY: test-demo
test-demo: build test-services ## the native demo as a user meets it: make up (no Docker), make demo and make run in a terminal, the trace in headless Chromium, scenarios, Ctrl-C (uses the demo's ports: run it alone)
	@mkdir -p bin
	@# The collector and Jaeger first (minutes when not cached), so the test times the demo, not the builds.
	@began=$$(date +%s); bash scripts/build-collector.sh >/dev/null && bash scripts/build-tool.sh jaeger >/dev/null && \
		echo "test-demo: the collector and Jaeger are ready ($$(($$(date +%s) - began)) s)"
	go test -tags demo -run 'TestDemo|TestScenarioFileUntracked' -count=1 -v -timeout 25m ./e2e 2>&1 | tee bin/demo-test.log | grep -E '^(---|===|ok|FAIL|PASS)|demo_test.go'; exit $${PIPESTATUS[0]}

.PHONY: exercise
exercise: ## the workshop's exercises (docs/workshop): run their tests against your code
	go test -count=1 -v -tags exercise ./exercises/manualspan/...

.PHONY: test-chart
test-chart: ## the Helm chart rendered by the Helm SDK (four value sets), applied to a real kube-apiserver 1.34 and etcd (server-side, dry-run, strict), its collector tiers validated and run
	@mkdir -p bin
	@# etcd, kube-apiserver and the collector first (kube-apiserver takes 5 to 15 minutes when not cached), so the tests time themselves, not the builds.
	@began=$$(date +%s); bash scripts/build-tool.sh etcd >/dev/null && bash scripts/build-tool.sh kube-apiserver >/dev/null && bash scripts/build-collector.sh >/dev/null && \
		echo "test-chart: etcd, kube-apiserver and the collector are ready ($$(($$(date +%s) - began)) s)"
	cd deploy/chart && GOWORK=off go test -shuffle=on -count=1 -timeout 15m -v ./... 2>&1 | tee ../../bin/chart-test.log | grep -E '^(---|===|ok|FAIL|PASS)|_test.go'; exit $${PIPESTATUS[0]}

.PHONY: test-faults
test-faults: test-services ## the fault suite: real broker, database, cache and collector faults under load (stops the machine's RabbitMQ and Redis for a moment; run it alone)
	@mkdir -p bin
	ORDERTRACE_FAULT_TABLE=$(CURDIR)/bin/fault-table.md go test -tags faults -run TestFaults -count=1 -v -timeout 15m ./e2e 2>&1 | tee bin/fault-suite.log | grep -E '^(---|===|ok|FAIL|PASS)|faults_test.go|^ +\|'; exit $${PIPESTATUS[0]}
	@echo; cat bin/fault-table.md

.PHONY: test-replicas
test-replicas: test-services ## the replica suite: 2 orders and 3 fulfillment instances, one of each killed (-9) under load, nothing lost or doubled; throughput of 1+1 against 2+3
	@mkdir -p bin
	ORDERTRACE_REPLICA_TABLE=$(CURDIR)/bin/replica-table.md go test -tags faults -run TestReplicas -count=1 -v -timeout 10m ./e2e 2>&1 | tee bin/replica-suite.log | grep -E '^(---|===|ok|FAIL|PASS)|replicas_test.go|^ +\|'; exit $${PIPESTATUS[0]}
	@echo; cat bin/replica-table.md

.PHONY: bench
bench: test-services ## the suite's benchmark, tracing on at production settings vs every signal off: saturation, CPU per order, the SDK's floor per span (about 25 minutes; BENCH_QUICK=1: about 5, to check it works); writes bench/results/<date>.md and .json
	@mkdir -p bin
	go test -tags bench -run TestBench -count=1 -v -timeout 40m ./e2e 2>&1 | tee bin/bench.log | grep -E '^(---|ok|FAIL|PASS)|bench_test.go|^ {8}'; exit $${PIPESTATUS[0]}

.PHONY: bench-compare
bench-compare: test-services ## measure one change: CPU per order, tracing on, BASE=<commit> (its binaries; NEW=<commit> for the other side, else this tree) and/or BASE_VARS/VARS="K=V ..." in interleaved pairs (PAIRS=4, RATE=200); writes bin/bench-compare.md
	@mkdir -p bin
	@set -e; work=$$(mktemp -d); trap "for r in base new; do git worktree remove --force $$work/\$$r >/dev/null 2>&1; done; rm -rf $$work" EXIT; \
	build() { git worktree add -q --detach $$work/$$1 $$2; for s in $(SERVICES); do (cd $$work/$$1 && go build -trimpath -o $$work/bin-$$1/$$s ./services/$$s); done; }; \
	if [ -n "$(BASE)" ]; then build base $(BASE); export COMPARE_BASE_BIN=$$work/bin-base; fi; \
	if [ -n "$(NEW)" ]; then build new $(NEW); export COMPARE_NEW_BIN=$$work/bin-new; fi; \
	set +e; COMPARE_BASE_VARS="$(BASE_VARS)" COMPARE_NEW_VARS="$(VARS)" COMPARE_PAIRS=$(PAIRS) COMPARE_RATE=$(RATE) \
	go test -tags bench -run '^TestCompare$$' -count=1 -v -timeout 60m ./e2e 2>&1 | tee bin/bench-compare.log | grep -E '^(---|ok|FAIL|PASS)|bench_compare_test.go|^ {8}'; exit $${PIPESTATUS[0]}

.PHONY: bench-micro
bench-micro: test-services ## micro-benchmarks of the hot telemetry paths and of SQL comments against PostgreSQL (-benchmem, 6 runs: compare two files with benchstat)
	@mkdir -p bin
	go test -run '^$$' -bench . -benchmem -count 6 ./pkg/telemetry ./pkg/telemetry/instrumented ./pkg/scenario | tee bin/bench-micro.txt

.PHONY: fuzz
fuzz: ## fuzz the request decoder, the baggage filter, the AMQP carrier and the SQL summariser of span names (FUZZTIME=15s, or a count such as 20000x)
	go test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME) ./pkg/httpx
	go test -run '^$$' -fuzz '^FuzzFilterBaggage$$' -fuzztime $(FUZZTIME) ./pkg/telemetry
	go test -run '^$$' -fuzz '^FuzzExtractAMQP$$' -fuzztime $(FUZZTIME) ./pkg/telemetry
	go test -run '^$$' -fuzz '^FuzzQuerySummary$$' -fuzztime $(FUZZTIME) ./pkg/telemetry/instrumented

FUZZTIME ?= 15s

.PHONY: test-unit
test-unit: ## run the tests that need no PostgreSQL, Redis or RabbitMQ
	go test $(GOTEST_FLAGS) $(filter-out %/e2e,$(shell go list $(MODULES)))

.PHONY: test-services
test-services: ## make sure PostgreSQL, Redis and RabbitMQ answer on localhost (starting them if needed)
	@bash scripts/test-services.sh

.PHONY: lint
lint: bin/staticcheck ## gofmt, tidy go.mod files, go vet and staticcheck
	@unformatted=$$(gofmt -l $(GO_DIRS)); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	@for d in $(GO_MODULES); do (cd $$d && GOWORK=off go mod tidy -diff) || { echo "go.mod of $$d is not tidy: run 'go mod tidy' there"; exit 1; }; done
	go vet $(MODULES)
	go vet -tags faults ./e2e
	go vet -tags bench ./e2e
	go vet -tags demo ./e2e
	go vet -tags stack ./deploy ./e2e
	go vet -tags solution ./exercises/...
	bin/staticcheck $(MODULES)
	bin/staticcheck -tags faults ./e2e
	bin/staticcheck -tags bench ./e2e
	bin/staticcheck -tags demo ./e2e
	bin/staticcheck -tags stack ./deploy ./e2e
	bin/staticcheck -tags solution ./exercises/...
	@# The chart's tests are a module of their own, outside the workspace: the
	@# Helm SDK's Kubernetes dependencies never move the services' versions.
	cd deploy/chart && GOWORK=off go mod tidy -diff && GOWORK=off go vet ./... && GOWORK=off ../../bin/staticcheck ./...

.PHONY: fmt
fmt: ## format the code (every directory make lint checks)
	gofmt -w $(GO_DIRS)

.PHONY: vuln
vuln: ## check dependencies for known vulnerabilities (needs the Go vulnerability database online)
	cd tools && GOWORK=off go build -o ../bin/govulncheck golang.org/x/vuln/cmd/govulncheck
	bin/govulncheck $(MODULES)
	cd deploy/chart && GOWORK=off ../../bin/govulncheck ./...

# The linters are pinned in tools/go.mod, built outside the workspace so their
# dependencies never change the services' versions.
bin/staticcheck: tools/go.mod tools/go.sum
	cd tools && GOWORK=off go build -o ../bin/staticcheck honnef.co/go/tools/cmd/staticcheck

.PHONY: run
run: build test-services ## run the three services locally, logs on the terminal (Ctrl-C stops them); OTEL_* variables pass through
	@DATABASE_URL='$(DATABASE_URL)' REDIS_URL='$(REDIS_URL)' AMQP_URL='$(AMQP_URL)' SCENARIOS_FILE='$(SCENARIOS_FILE)' bash scripts/run-local.sh

.PHONY: order
order: ## place one sample order through the gateway and print the link to its trace (Jaeger under make demo, Grafana under make up)
	@bash scripts/order.sh

.PHONY: scenario scenarios scenario-reset
scenario: ## switch a workshop scenario at run time: make scenario NAME=payment-failures ON=1 (ON=0 switches it off)
	@test -n "$(NAME)" -a -n "$(ON)" || { go run ./pkg/scenario/cmd/scenario -file '$(SCENARIOS_FILE)' list; echo; echo "usage: make scenario NAME=<one of the above> ON=1 (or ON=0)"; exit 2; }
	@go run ./pkg/scenario/cmd/scenario -file '$(SCENARIOS_FILE)' set '$(NAME)' '$(ON)'

scenarios: ## list the workshop scenarios and which are on
	@go run ./pkg/scenario/cmd/scenario -file '$(SCENARIOS_FILE)' list

scenario-reset: ## switch every workshop scenario off
	@go run ./pkg/scenario/cmd/scenario -file '$(SCENARIOS_FILE)' reset && echo "every scenario is off"

# The answer reaches the grader through the environment (make exports
# command-line variables), so its quotes and braces pass untouched.
.PHONY: grade
grade: ## grade your answer to an incident: make grade LAB=10 Q='<your query>' (TraceQL, LogQL, PromQL, a Jaeger search or trace IDs; BACKEND= to choose, SINCE=15m)
	@mkdir -p bin && go build -o bin/grade ./pkg/scenario/cmd/grade
	@bin/grade -lab "$$LAB" -q "$${Q:-$$QUERY}" -backend "$$BACKEND" -since "$${SINCE:-15m}"

# make chaos: EVERY, HOLD, SCENARIOS, SEED and ROUNDS, each empty for its
# default (docs/workshop/instructor-guide.md). Each switch is annotated on
# the dashboards of the Grafana at GRAFANA_URL (GRAFANA_URL= for none), as
# the compose stack's admin. The command runs built, not under go run, so a
# SIGTERM to make reaches it and it can switch everything off.
GRAFANA_URL      ?= http://localhost:3000
GRAFANA_USER     ?= admin
GRAFANA_PASSWORD ?= admin
.PHONY: chaos
chaos: ## switch scenarios on and off at random for a class, one at a time: make chaos EVERY=2m-5m HOLD=3m-6m SEED=7 ROUNDS=10 SCENARIOS=a,b (Ctrl-C leaves every scenario off)
	@mkdir -p bin && go build -o bin/scenario ./pkg/scenario/cmd/scenario
	@GRAFANA_URL='$(GRAFANA_URL)' GRAFANA_USER='$(GRAFANA_USER)' GRAFANA_PASSWORD='$(GRAFANA_PASSWORD)' exec bin/scenario -file '$(SCENARIOS_FILE)' chaos \
		-every='$(EVERY)' -hold='$(HOLD)' -scenarios='$(SCENARIOS)' -seed='$(SEED)' -rounds='$(ROUNDS)'

.PHONY: clean
clean: ## stop the stack and delete its volumes (all its data), and remove bin/
	-$(COMPOSE) --profile jaeger down --volumes --remove-orphans
	rm -rf bin
