package instrumented

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestAppendComment(t *testing.T) {
	sampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	unsampled := sampled.WithTraceFlags(0)
	const comment = "/*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/"
	tests := []struct {
		name, sql string
		sc        trace.SpanContext
		want      string
	}{
		{"appended", "SELECT 1", sampled, "SELECT 1 " + comment},
		{"before a trailing semicolon", "SELECT 1;\n", sampled, "SELECT 1 " + comment + ";\n"},
		{"unsampled flags", "SELECT 1", unsampled, "SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'*/"},
		{"no span context", "SELECT 1", trace.SpanContext{}, "SELECT 1"},
		{"a block comment already", "SELECT /* mine */ 1", sampled, "SELECT /* mine */ 1"},
		{"a line comment already", "SELECT 1 -- mine", sampled, "SELECT 1 -- mine"},
		{"empty", " ; ", sampled, " ; "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := appendComment(tt.sql, tt.sc); got != tt.want {
				t.Errorf("appendComment(%q) = %q, want %q", tt.sql, got, tt.want)
			}
		})
	}
}

func TestCommentPair(t *testing.T) {
	tests := []struct{ key, value, want string }{
		{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'"},
		{"route parameter", "/param first", "route%20parameter='%2Fparam%20first'"},
		{"k", "it's */ done", "k='it%27s%20%2A%2F%20done'"}, // neither a quote nor */ survives
		{"tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", "tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'"},
	}
	for _, tt := range tests {
		if got := commentPair(tt.key, tt.value); got != tt.want {
			t.Errorf("commentPair(%q, %q) = %q, want %q", tt.key, tt.value, got, tt.want)
		}
	}
}

// TestPgStatActivityShowsTraceparent runs a slow statement and reads it in
// pg_stat_activity while it runs: with comments on, it ends with the
// traceparent of its own CLIENT span (child of the caller's span); with
// comments off, or outside any span, it carries none.
func TestPgStatActivityShowsTraceparent(t *testing.T) {
	dbURL := testDatabase(t)
	observer, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(context.Background())

	const slow = "SELECT pg_sleep($1)"
	tests := []struct {
		name                   string
		comments, inSpan, inTx bool
	}{
		{"on, in a span", true, true, false},
		{"on, in a transaction", true, true, true},
		{"on, outside any span", true, false, false},
		{"off", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tel := &telemetry.Telemetry{
				TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
				MeterProvider:  metricnoop.NewMeterProvider(),
			}
			pool, err := Postgres(t.Context(), dbURL, tel, SQLOptions{Comments: tt.comments})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()

			ctx := t.Context()
			var request trace.Span
			if tt.inSpan {
				ctx, request = tel.TracerProvider.Tracer("test").Start(ctx, "request")
			}
			done := make(chan error, 1)
			go func() {
				sleep := func(db interface {
					Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
				}) error {
					_, err := db.Exec(ctx, slow, 60) // cancelled below, once seen
					return err
				}
				if tt.inTx {
					done <- pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return sleep(tx) })
					return
				}
				done <- sleep(pool)
			}()

			pid, query := waitForStatement(t, observer, slow)
			if _, err := observer.Exec(t.Context(), "SELECT pg_cancel_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			if err := <-done; !isCancelled(err) {
				t.Fatalf("the slow statement ended with %v, want it cancelled", err)
			}
			if request != nil {
				request.End()
			}

			if !tt.comments || !tt.inSpan {
				if strings.Contains(query, "traceparent") {
					t.Errorf("pg_stat_activity.query = %q, want no traceparent", query)
				}
				return
			}
			client := statementSpan(rec.Ended(), slow)
			if client == nil {
				t.Fatalf("no CLIENT span for %q", slow)
			}
			if client.Parent().SpanID() != request.SpanContext().SpanID() || client.SpanContext().TraceID() != request.SpanContext().TraceID() {
				t.Errorf("the statement's span is not a child of the request's span")
			}
			want := fmt.Sprintf("%s /*traceparent='00-%s-%s-01'*/", slow, client.SpanContext().TraceID(), client.SpanContext().SpanID())
			if query != want {
				t.Errorf("pg_stat_activity.query = %q, want %q", query, want)
			}
		})
	}
}

// TestCommentedPoolRunsTheSuitesStatements checks that, in the exec mode
// comments use, the kinds of statement and argument the services send still
// work: a jsonb map, bytea, arrays, a text cast to interval, COPY, a
// savepoint and a batch.
func TestCommentedPoolRunsTheSuitesStatements(t *testing.T) {
	tel := &telemetry.Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
	}
	pool, err := Postgres(t.Context(), testDatabase(t), tel, SQLOptions{Comments: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "request")
	defer span.End()

	if _, err := pool.Exec(ctx, `CREATE TABLE outbox (id bigint PRIMARY KEY, headers jsonb NOT NULL, body bytea NOT NULL,
		due timestamptz NOT NULL, sent boolean NOT NULL DEFAULT false)`); err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO outbox (id, headers, body, due) VALUES ($1, $2, $3, now() + $4::interval)",
			1, headers, []byte(`{"order":1}`), "30s"); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, []string{"id", "headers", "body", "due"},
			pgx.CopyFromRows([][]any{{2, headers, []byte("b"), time.Now()}})); err != nil {
			return err
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, "UPDATE outbox SET sent = true WHERE id = ANY($1)", []int64{1, 2}); err != nil {
			return err
		}
		return sp.Commit(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	var b pgx.Batch
	b.Queue("SELECT count(*) FROM outbox WHERE sent")
	b.Queue("SELECT headers, body FROM outbox WHERE id = $1", 1)
	results := pool.SendBatch(ctx, &b)
	var sent int
	var gotHeaders map[string]string
	var body []byte
	if err := results.QueryRow().Scan(&sent); err != nil {
		t.Fatal(err)
	}
	if err := results.QueryRow().Scan(&gotHeaders, &body); err != nil {
		t.Fatal(err)
	}
	if err := results.Close(); err != nil {
		t.Fatal(err)
	}
	if sent != 2 || gotHeaders["traceparent"] != headers["traceparent"] || string(body) != `{"order":1}` {
		t.Errorf("read back %d sent, headers %v, body %q; want 2, %v, %q", sent, gotHeaders, body, headers, `{"order":1}`)
	}
}

// BenchmarkSQLComments measures what comments cost per statement against
// the machine's PostgreSQL, for an indexed SELECT and an INSERT, inside a
// sampled span (the comment names a real CLIENT span): comments off in
// pgx's default mode, comments on in the mode Postgres chooses, and on in
// two other modes. Each variant alone gives its ns/op, B/op and allocs/op;
// "side-by-side" runs the four in turn, statement after statement, so that
// a shared machine's changing load weighs on each alike: its "x-off"
// figures are the ratios to comments off.
func BenchmarkSQLComments(b *testing.B) {
	// Without waiting for each INSERT's WAL flush: the variants differ in
	// the statement's cost, which a disk's flush time would drown.
	dbURL := testDatabase(b) + "&synchronous_commit=off"
	setup, err := pgx.Connect(b.Context(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	_, err = setup.Exec(b.Context(), `CREATE TABLE products (sku text PRIMARY KEY, price_cents bigint NOT NULL);
		INSERT INTO products SELECT 'SKU-' || i, i FROM generate_series(1, 1000) i;
		CREATE TABLE outbox (id bigserial PRIMARY KEY, routing_key text NOT NULL, headers jsonb NOT NULL, body bytea NOT NULL)`)
	setup.Close(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	tel := &telemetry.Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(), // records spans, exports none
		MeterProvider:  metricnoop.NewMeterProvider(),
	}
	ctx, span := tel.TracerProvider.Tracer("bench").Start(b.Context(), "request")
	defer span.End()

	variants := []struct {
		name     string
		comments bool
		mode     pgx.QueryExecMode
	}{
		{"off-cache_statement", false, pgx.QueryExecModeCacheStatement},
		{"on-exec", true, pgx.QueryExecModeExec}, // what Postgres chooses
		{"on-describe_exec", true, pgx.QueryExecModeDescribeExec},
		{"on-cache_statement", true, pgx.QueryExecModeCacheStatement},
	}
	pools := make([]*Pool, len(variants))
	for i, v := range variants {
		cfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			b.Fatal(err)
		}
		if v.comments {
			runCommented(cfg)
		}
		cfg.ConnConfig.DefaultQueryExecMode = v.mode
		pool, err := openPostgres(b.Context(), cfg, tel, false)
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		pools[i] = &Pool{Pool: pool, comments: v.comments}
	}

	headers := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	statements := []struct {
		name string
		run  func(p *Pool, i int) error
	}{
		{"select", func(p *Pool, i int) error {
			var price int64
			return p.QueryRow(ctx, "SELECT price_cents FROM products WHERE sku = $1", fmt.Sprintf("SKU-%d", i%1000+1)).Scan(&price)
		}},
		{"insert", func(p *Pool, _ int) error {
			_, err := p.Exec(ctx, "INSERT INTO outbox (routing_key, headers, body) VALUES ($1, $2, $3)", "order.created", headers, []byte(`{"order_id":1}`))
			return err
		}},
	}
	for _, st := range statements {
		for i, v := range variants {
			b.Run(st.name+"/"+v.name, func(b *testing.B) {
				n := 0
				for b.Loop() {
					if err := st.run(pools[i], n); err != nil {
						b.Fatal(err)
					}
					n++
				}
			})
		}
		b.Run(st.name+"/side-by-side", func(b *testing.B) {
			spent := make([]time.Duration, len(variants))
			n := 0
			for b.Loop() {
				for k := range variants {
					i := (n + k) % len(variants) // each variant first in turn: no place in the round is favoured
					began := time.Now()
					if err := st.run(pools[i], n); err != nil {
						b.Fatal(err)
					}
					spent[i] += time.Since(began)
				}
				n++
			}
			for i, v := range variants[1:] {
				b.ReportMetric(float64(spent[i+1])/float64(spent[0]), v.name+"-x-off")
			}
		})
	}
}

// testDatabase creates a database of the test's own on the machine's
// PostgreSQL and drops it when the test ends.
func testDatabase(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	conn, err := pgx.Connect(tb.Context(), admin)
	if err != nil {
		tb.Fatalf("PostgreSQL: %v", err)
	}
	name := fmt.Sprintf("instrumented_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := conn.Exec(tb.Context(), "CREATE DATABASE "+name); err != nil {
		conn.Close(context.Background())
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop the test database: %v", err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// waitForStatement waits until a statement starting with sql sleeps in the
// test's database, and returns its backend's pid and its text. It waits for
// the PgSleep wait event, not just state 'active': the extended protocol
// marks a backend active at Parse, and a cancel that lands while it reads
// the Bind that follows is dropped by PostgreSQL, leaving the sleep to run.
func waitForStatement(t *testing.T, observer *pgx.Conn, sql string) (pid int, query string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := observer.QueryRow(t.Context(), `SELECT pid, query FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' AND wait_event = 'PgSleep' AND starts_with(query, $1)`,
			sql).Scan(&pid, &query)
		if err == nil {
			return pid, query
		}
		if !errors.Is(err, pgx.ErrNoRows) || time.Now().After(deadline) {
			t.Fatalf("waiting for %q in pg_stat_activity: %v", sql, err)
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a guess at a duration
	}
}

// isCancelled says whether err is PostgreSQL's "canceling statement due to user request".
func isCancelled(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// statementSpan finds the CLIENT span otelpgx recorded for a statement.
func statementSpan(spans []sdktrace.ReadOnlySpan, sql string) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.SpanKind() != trace.SpanKindClient {
			continue
		}
		for _, a := range s.Attributes() {
			if a.Key == attribute.Key("db.query.text") && a.Value.AsString() == sql {
				return s
			}
		}
	}
	return nil
}
