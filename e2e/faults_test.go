//go:build faults

package e2e

// The fault suite: `make test-faults` (run by .ci/run after `make test`, on
// its own, because some faults stop the machine's RabbitMQ and Redis for
// everyone). Each fault runs the real services under a fixed arrival rate,
// injects the fault for real, drains, reconciles what was promised against
// what happened, and prints one row of the table in docs/reliability.md.

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
)

const (
	faultRate     = 20 // orders per second, an open model: arrivals do not wait for answers
	faultDuration = 8 * time.Second
	faultStart    = 2 * time.Second // into the load
	faultLength   = 3 * time.Second
	drainTimeout  = 60 * time.Second
)

// load posts orders (one mug each, so the stock tells how often each was
// applied) at faultRate for faultDuration, calling inject at faultStart and
// restore faultLength later.
func load(s *stack, inject, restore func()) (shots []shot, faultFrom, faultTo time.Time) {
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		time.Sleep(faultStart)
		faultFrom = time.Now()
		inject()
		time.Sleep(faultLength)
		restore()
		faultTo = time.Now()
	}()
	shots = drive(s, faultRate, faultDuration, func(i int) string {
		return fmt.Sprintf(`{"customer_id":"load-%d","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, i)
	})
	<-faultDone
	return shots, faultFrom, faultTo
}

// row is one line of the fault table.
type row struct {
	fault                                     string
	sent, created, committed, published       int
	fulfilled, duplicates, deadLettered, lost int
	maxOutboxLag, drain, p99                  time.Duration
	completeTraces                            string
	shipped                                   int // fulfilled, not failed: the mugs taken
}

func (r row) String() string {
	return fmt.Sprintf("| %-28s | %4d | %4d | %9d | %9d | %9d | %10d | %13d | %4d | %7s | %7s | %7s | %15s |",
		r.fault, r.sent, r.created, r.committed, r.published, r.fulfilled, r.duplicates, r.deadLettered, r.lost,
		r.maxOutboxLag.Round(time.Millisecond), r.drain.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.completeTraces)
}

const tableHeader = "| fault                        | sent |  201 | committed | published | fulfilled | duplicates | dead-lettered | lost | max lag |   drain |     p99 | complete traces |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|"

var (
	tableMu sync.Mutex
	table   []string
)

// reconcile drains the stack and accounts for every order (account), then,
// with traces, stops the services and counts the fulfilled orders whose
// trace is whole; it adds the row to the fault table.
func reconcile(t *testing.T, s *stack, name string, results []shot, from, to time.Time, traces bool) row {
	t.Helper()
	r := account(t, s, name, results, from, to)
	r.completeTraces = "n/a (no backend)"
	if traces {
		s.stop(t) // stopped, the services have exported every span they made
		fulfilled := fulfilledOrders(t, s.env)
		complete := 0
		for _, res := range results {
			if _, ok := fulfilled[res.orderID]; ok && res.ok() && whole(s.otlp.Trace(res.traceID)) {
				complete++
			}
		}
		r.completeTraces = fmt.Sprintf("%d/%d", complete, r.shipped)
	}
	tableMu.Lock()
	table = append(table, r.String())
	tableMu.Unlock()
	t.Logf("\n%s\n%s", tableHeader, r)
	return r
}

// account drains the stack (every committed order fulfilled, failed or
// dead-lettered), then compares what was promised with what happened: it
// fails t if an order is lost or applied twice, or a 201 names no order.
func account(t *testing.T, s *stack, name string, results []shot, from, to time.Time) row {
	t.Helper()
	r := row{fault: name, sent: len(results)}
	var during []shot
	created := map[string]shot{}
	for _, res := range results {
		if res.ok() {
			r.created++
			created[res.orderID] = res
		}
		if !res.start.Before(from) && res.start.Before(to.Add(time.Second)) {
			during = append(during, res)
		}
	}
	r.p99 = quantile(during, 0.99)

	drainFrom := time.Now()
	pending, read := 0, false
	drained := poll(drainTimeout, func() (bool, error) {
		p, err := s.env.tryQueryInt("SELECT count(*) FROM orders WHERE status = 'pending'")
		if err != nil {
			return false, err
		}
		dead, err := s.env.tryQueueDepth(orderevents.DeadLetterQueue)
		if err != nil {
			return false, err
		}
		pending, r.deadLettered, read = p, dead, true
		return pending <= dead, nil
	})
	r.drain = time.Since(drainFrom)
	if !read {
		t.Fatalf("%s: could not count pending orders and dead letters: %v", name, drained)
	} else if drained != nil {
		t.Logf("%s: not drained after %s: %v", name, drainTimeout, drained)
	}
	r.committed = s.env.queryInt(t, "SELECT count(*) FROM orders")
	r.published = s.env.queryInt(t, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
	r.fulfilled = s.env.queryInt(t, "SELECT count(*) FROM orders WHERE status IN ('fulfilled', 'failed')")
	r.lost = max(0, pending-r.deadLettered)
	// Stock taken more than once for an order is a duplicate applied.
	taken := s.env.queryInt(t, "SELECT 1000000 - stock FROM products WHERE sku = 'MUG-CERAMIC'")
	r.shipped = s.env.queryInt(t, "SELECT count(*) FROM orders WHERE status = 'fulfilled'")
	r.duplicates = taken - r.shipped
	r.maxOutboxLag = time.Duration(s.env.queryInt(t,
		"SELECT coalesce(max(extract(epoch FROM sent_at - created_at) * 1000), 0)::int FROM outbox")) * time.Millisecond

	// Every 201 names a committed order.
	for id := range created {
		if s.env.queryInt(t, "SELECT count(*) FROM orders WHERE id = $1", id) != 1 {
			t.Errorf("%s: order %s was answered 201 but is not committed", name, id)
		}
	}
	if r.lost > 0 {
		t.Errorf("%s: %d committed orders were neither fulfilled nor dead-lettered", name, r.lost)
	}
	if r.duplicates != 0 {
		t.Errorf("%s: %d duplicate fulfilments applied", name, r.duplicates)
	}
	if r.created == 0 {
		t.Errorf("%s: no order was accepted at all", name)
	}
	return r
}

// fulfilledOrders returns the fulfilled orders: their trace ID (as the
// gateway began it) and when fulfillment committed them, by order ID.
func fulfilledOrders(t *testing.T, e *env) map[string]fulfilment {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	rows, _ := c.Query(ctx, "SELECT id::text, trace_id, updated_at FROM orders WHERE status = 'fulfilled'")
	out := map[string]fulfilment{}
	var (
		id string
		f  fulfilment
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &f.traceID, &f.at}, func() error {
		out[id] = f
		return nil
	}); err != nil {
		t.Fatalf("fulfilled orders: %v", err)
	}
	return out
}

type fulfilment struct {
	traceID string
	at      time.Time // the fulfilling transaction's start, PostgreSQL's now()
}

// whole reports whether a trace holds the three spans of an order's journey:
// the gateway's SERVER span, the PRODUCER span orders made when it stored the
// message, and the CONSUMER span fulfillment made when it applied it.
func whole(trace []span) bool {
	seen := kinds(trace)
	return seen["gateway/SPAN_KIND_SERVER"] && seen["orders/SPAN_KIND_PRODUCER"] && seen["fulfillment/SPAN_KIND_CONSUMER"]
}

// kinds returns which service made spans of which kind in a trace, as
// "service/SPAN_KIND_...".
func kinds(trace []span) map[string]bool {
	seen := map[string]bool{}
	for _, sp := range trace {
		seen[sp.Service+"/"+sp.Kind.String()] = true
	}
	return seen
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// restart kills p with SIGKILL (no shutdown, no flush) and starts it again
// on the same address, with the same variables.
func restart(t *testing.T, s *stack, p *process, vars map[string]string) *process {
	t.Helper()
	kill(p)
	return startAgain(t, p, vars)
}

// kill sends p SIGKILL and returns once it is gone: the moment after which
// nothing it had not sent yet (an answer, a span) can leave it.
func kill(p *process) time.Time {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return time.Now()
}

// startAgain starts a killed service on its old address, as Kubernetes
// restarts a pod's container.
func startAgain(t *testing.T, p *process, vars map[string]string) *process {
	t.Helper()
	v := maps.Clone(vars)
	v["HTTP_ADDR"] = p.addr
	return start(t, p.name, v)
}

func TestFaults(t *testing.T) {
	needService(t, "rabbitmqctl", exec.Command("rabbitmqctl", "status").Run())
	faults := []struct {
		name            string
		extra           map[string]string
		inject, restore func(t *testing.T, s *stack)
		traces          bool
		check           func(t *testing.T, s *stack, results []shot)
	}{
		{
			name:    "RabbitMQ app stopped 3 s",
			inject:  func(t *testing.T, s *stack) { run(t, "rabbitmqctl", "stop_app") },
			restore: func(t *testing.T, s *stack) { run(t, "rabbitmqctl", "start_app") },
			traces:  true,
			check: func(t *testing.T, s *stack, results []shot) {
				// Orders went on being accepted while the broker was away; their
				// messages waited in the outbox, and their traces are whole.
				var lagged int
				for _, r := range results {
					if r.status == http.StatusCreated && s.env.queryInt(t,
						"SELECT count(*) FROM outbox WHERE convert_from(body, 'UTF8') LIKE '%' || $1 || '%' AND sent_at - created_at > interval '1 second'", r.orderID) == 1 {
						lagged++
					}
				}
				if lagged == 0 {
					t.Error("no message waited in the outbox: the broker outage did not happen")
				}
			},
		},
		{
			name:    "fulfillment killed (-9)",
			inject:  func(t *testing.T, s *stack) { s.fulfillment = restart(t, s, s.fulfillment, s.vars) },
			restore: func(t *testing.T, s *stack) {},
			traces:  true,
		},
		{
			name:    "orders and its relay killed (-9)",
			inject:  func(t *testing.T, s *stack) { kill(s.orders) },
			restore: func(t *testing.T, s *stack) { s.orders = startAgain(t, s.orders, s.vars) },
			traces:  true,
			check: func(t *testing.T, s *stack, results []shot) {
				if n := wantFailuresTraced(t, s, results); n == 0 {
					t.Error("no request was refused while orders was down")
				}
			},
		},
		{
			// The relay publishes and the broker confirms, then marking the
			// rows sent fails (a trigger refuses the UPDATE): the transaction
			// rolls back, the rows stay unsent, and the relay publishes them
			// again. Fulfillment must apply each message once.
			name: "relay fails between confirm and commit",
			inject: func(t *testing.T, s *stack) {
				s.env.exec(t, `CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS
					$$BEGIN RAISE EXCEPTION 'fault: commit refused after confirm'; END$$`)
				s.env.exec(t, `CREATE TRIGGER refuse_sent BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_sent()`)
			},
			restore: func(t *testing.T, s *stack) { s.env.exec(t, "DROP TRIGGER refuse_sent ON outbox") },
			traces:  true,
			check: func(t *testing.T, s *stack, _ []shot) {
				for _, sp := range s.otlp.Spans() {
					if sp.Kind == consumer && sp.Attrs["fulfillment.outcome"] == "duplicate" {
						return // a message published twice, applied once
					}
				}
				t.Error("no message was delivered twice: the fault did not happen")
			},
		},
		{
			name: "PostgreSQL backends terminated",
			inject: func(t *testing.T, s *stack) {
				c, err := pgx.Connect(context.Background(), adminDatabaseURL)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				_, err = c.Exec(context.Background(),
					"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", s.env.Database)
				if err != nil {
					t.Fatal(err)
				}
			},
			restore: func(t *testing.T, s *stack) {},
			traces:  true,
			check: func(t *testing.T, s *stack, results []shot) {
				t.Logf("%d requests refused when their connection was terminated", wantFailuresTraced(t, s, results))
			},
		},
		{
			name:    "Redis stopped 3 s",
			inject:  func(t *testing.T, s *stack) { run(t, "redis-cli", "shutdown", "nosave") },
			restore: func(t *testing.T, s *stack) { run(t, "bash", "../scripts/test-services.sh") },
			traces:  true,
			check: func(t *testing.T, s *stack, _ []shot) {
				for _, line := range s.orders.Lines() {
					if strings.Contains(line, "reading the database for a while") {
						return // degraded to PostgreSQL reads, orders went on
					}
				}
				t.Error("orders never noticed Redis was gone")
			},
		},
		{
			name:    "collector unreachable",
			extra:   map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + blackhole(t)},
			inject:  func(t *testing.T, s *stack) {},
			restore: func(t *testing.T, s *stack) {},
			traces:  false,
			check: func(t *testing.T, s *stack, _ []shot) {
				for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
					rss := processUsage(p).PeakKB
					took := p.Stop(t)
					t.Logf("%s: peak RSS %d KiB under load with a dead collector, stopped %s after SIGTERM", p.name, rss, took.Round(time.Millisecond))
					if took > 15*time.Second {
						t.Errorf("%s took %s to stop with a dead collector", p.name, took)
					}
					if rss > 256<<10 {
						t.Errorf("%s RSS %d KiB: telemetry is queueing without bound", p.name, rss)
					}
				}
			},
		},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			s := startStack(t, f.extra)
			results, from, to := load(s, func() { f.inject(t, s) }, func() { f.restore(t, s) })
			reconcile(t, s, f.name, results, from, to, f.traces)
			if f.check != nil {
				f.check(t, s, results)
			}
		})
	}
	t.Logf("fault table:\n%s\n%s", tableHeader, strings.Join(table, "\n"))
	if path := os.Getenv("ORDERTRACE_FAULT_TABLE"); path != "" {
		_ = os.WriteFile(path, []byte(tableHeader+"\n"+strings.Join(table, "\n")+"\n"), 0o644)
	}
}

// blackhole returns the address of a listener that accepts connections and
// never answers: a collector that hangs.
func blackhole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

// exec runs a statement against the test's database.
func (e *env) exec(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// wantFailuresTraced checks that every 503 of the load shows in its trace:
// ERROR on each gateway span, and the exception on the SERVER span. It
// returns how many there were.
func wantFailuresTraced(t *testing.T, s *stack, results []shot) int {
	t.Helper()
	s.stop(t) // stopped, the services have exported every span they made
	failed := 0
	for _, r := range results {
		if r.status != http.StatusServiceUnavailable {
			continue
		}
		failed++
		spans := s.otlp.Trace(r.traceID)
		if len(spans) == 0 {
			t.Errorf("503 trace %s was not exported", r.traceID)
		}
		for _, sp := range spans {
			if sp.Service == "gateway" && (sp.Status != statusError || (sp.Kind == server && !hasException(sp, ""))) {
				t.Errorf("503 trace %s: gateway %s span %q: status %v; want ERROR, with the exception on the SERVER span",
					r.traceID, sp.Kind, sp.Name, sp.Status)
			}
		}
	}
	return failed
}
