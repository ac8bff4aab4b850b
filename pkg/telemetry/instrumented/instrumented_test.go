package instrumented

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/telemetry"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestPoolWaitIsASpan runs against the machine's PostgreSQL with a pool of
// one connection: taking the free connection leaves no span; waiting for it
// leaves a pool.acquire span as long as the wait.
func TestPoolWaitIsASpan(t *testing.T) {
	rec, tel, pool := recordedPool(t, "&pool_max_conns=1", SQLOptions{})
	defer pool.Close()

	acquires := func() (n int, longest time.Duration) {
		for _, s := range rec.Ended() {
			if s.Name() == "pool.acquire" {
				n++
				longest = max(longest, s.EndTime().Sub(s.StartTime()))
			}
		}
		return n, longest
	}

	ctx, root := tel.TracerProvider.Tracer("t").Start(t.Context(), "work")
	conn, err := pool.Acquire(ctx) // the free connection
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := acquires(); n != 0 {
		t.Errorf("taking a free connection left %d pool.acquire spans, want none", n)
	}

	const hold = 50 * time.Millisecond
	go func() {
		time.Sleep(hold)
		conn.Release()
	}()
	waited, err := pool.Acquire(ctx) // waits for the release
	if err != nil {
		t.Fatal(err)
	}
	waited.Release()
	if n, longest := acquires(); n != 1 || longest < hold/2 {
		t.Errorf("waiting for the connection left %d pool.acquire spans (longest %v), want 1 of about %v", n, longest, hold)
	}

	// A failed acquire is a span too, with the error.
	cctx, cancel := context.WithCancel(ctx)
	held, _ := pool.Acquire(cctx)
	cancel()
	if _, err := pool.Acquire(cctx); err == nil {
		t.Fatal("acquire with a cancelled context succeeded")
	}
	if held != nil {
		held.Release()
	}
	root.End()
	if n, _ := acquires(); n != 2 {
		t.Errorf("a failed acquire left %d pool.acquire spans in all, want 2", n)
	}
}

// TestTransactionSpans runs a transaction with a savepoint against the
// machine's PostgreSQL, with SQL_TRANSACTION_SPANS off and on: off, BEGIN,
// SAVEPOINT and RELEASE have no span, COMMIT and the statements keep theirs,
// and every span has the caller's span as parent; on, all of them have one.
// Every span names the database and the server, never the user.
func TestTransactionSpans(t *testing.T) {
	for _, on := range []bool{false, true} {
		rec, tel, pool := recordedPool(t, "", SQLOptions{TransactionSpans: on})
		ctx, root := tel.TracerProvider.Tracer("t").Start(t.Context(), "work")
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := tx.Begin(ctx) // a savepoint
		if err == nil {
			_, err = sp.Exec(ctx, "SELECT 1")
		}
		if err == nil {
			err = sp.Commit(ctx) // RELEASE SAVEPOINT
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		root.End()
		pool.Close()

		var names []string
		for _, s := range rec.Ended() {
			if s.Name() == "work" {
				continue
			}
			names = append(names, s.Name())
			// The connection's details, given once for the pool; no user.
			attrs := map[string]string{}
			for _, kv := range s.Attributes() {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			if attrs["db.system.name"] != "postgresql" || attrs["server.address"] == "" || attrs["server.port"] == "" || attrs["db.namespace"] == "" || attrs["user.name"] != "" {
				t.Errorf("span %s: attributes %v, want db.system.name, server.address, server.port and db.namespace, and no user.name", s.Name(), attrs)
			}
			if s.Parent().SpanID() != root.SpanContext().SpanID() {
				t.Errorf("span %s has parent %s, want the caller's span", s.Name(), s.Parent().SpanID())
			}
		}
		want := []string{"SELECT", "COMMIT"}
		if on {
			want = []string{"BEGIN", "SAVEPOINT", "SELECT", "RELEASE", "COMMIT"}
		}
		if !slices.Equal(names, want) {
			t.Errorf("SQL_TRANSACTION_SPANS=%v: spans %v, want %v", on, names, want)
		}
	}
}

func TestOpensTransaction(t *testing.T) {
	for sql, want := range map[string]bool{
		"begin": true, "BEGIN": true, "begin isolation level serializable": true,
		"savepoint sp_1": true, "release savepoint sp_1": true,
		"beginning": false, "commit": false, "rollback to savepoint sp_1": false, "SELECT 1": false, "": false,
	} {
		if got := opensTransaction(sql); got != want {
			t.Errorf("opensTransaction(%q) = %v, want %v", sql, got, want)
		}
	}
}

// recordedPool opens a pool on the machine's PostgreSQL (TEST_DATABASE_URL,
// with query suffixing it) whose spans go to the returned recorder.
func recordedPool(t *testing.T, query string, opts SQLOptions) (*tracetest.SpanRecorder, *telemetry.Telemetry, *Pool) {
	t.Helper()
	url := os.Getenv("TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	rec, tel := recordingTelemetry()
	pool, err := Postgres(t.Context(), url+query, tel, opts)
	if err == nil {
		err = pool.Ping(t.Context())
	}
	if err != nil {
		if os.Getenv("ORDERTRACE_REQUIRE_SERVICES") == "1" {
			t.Fatalf("PostgreSQL unavailable: %v", err)
		}
		t.Skipf("PostgreSQL unavailable (set ORDERTRACE_REQUIRE_SERVICES=1 to fail instead): %v", err)
	}
	return rec, tel, pool
}

// recordingTelemetry is telemetry whose spans a recorder keeps, and whose
// metrics go nowhere.
func recordingTelemetry() (*tracetest.SpanRecorder, *telemetry.Telemetry) {
	rec := tracetest.NewSpanRecorder()
	return rec, &telemetry.Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		MeterProvider:  metricnoop.NewMeterProvider(),
	}
}

// TestFailedStatementSpans: a statement PostgreSQL refuses has its span
// named by its summary, and carries the SQLSTATE as error.type and
// db.response.status_code, as the conventions ask of a failed operation.
func TestFailedStatementSpans(t *testing.T) {
	rec, tel, pool := recordedPool(t, "", SQLOptions{})
	defer pool.Close()
	ctx, root := tel.TracerProvider.Tracer("t").Start(t.Context(), "work")
	if _, err := pool.Exec(ctx, "SELECT 1 / 0 FROM pg_class LIMIT 1"); err == nil {
		t.Fatal("division by zero succeeded")
	}
	root.End()
	for _, s := range rec.Ended() {
		if s.Name() != "SELECT pg_class" {
			continue
		}
		got := map[string]string{}
		for _, kv := range s.Attributes() {
			got[string(kv.Key)] = kv.Value.String()
		}
		if got["error.type"] != "22012" || got["db.response.status_code"] != "22012" || got["db.query.summary"] != "SELECT pg_class" {
			t.Errorf("failed statement's span: %v; want error.type and db.response.status_code 22012, db.query.summary SELECT pg_class", got)
		}
		return
	}
	t.Errorf("no span named SELECT pg_class among %d", len(rec.Ended()))
}
