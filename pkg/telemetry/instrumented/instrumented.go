// Package instrumented opens the suite's PostgreSQL and Redis clients with
// their OpenTelemetry instrumentation, in one place, so the rule of what is
// recorded (commands and SQL text) and what never is (query parameters,
// Redis keys and values) is written once.
package instrumented

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// SQLOptions are the PostgreSQL instrumentation's switches. Each service's
// Config embeds them, so they are read from the same variables everywhere.
type SQLOptions struct {
	// Comments appends each statement's traceparent to its SQL text, so
	// pg_stat_activity and PostgreSQL's log point at the trace (SQL_COMMENTS).
	Comments bool `env:"SQL_COMMENTS, default=false"`
	// TransactionSpans makes a span of BEGIN, SAVEPOINT and RELEASE SAVEPOINT
	// too (SQL_TRANSACTION_SPANS). Off, they have none: each takes
	// microseconds, and the transaction shows where its first statement
	// starts. COMMIT and ROLLBACK always have their spans: the outcome, and
	// the cost of making it durable.
	TransactionSpans bool `env:"SQL_TRANSACTION_SPANS, default=false"`
}

// Postgres opens a connection pool whose queries become CLIENT spans (with
// the SQL text, never its parameters) and whose pool statistics become
// metrics. With opts.Comments, each statement also carries its span's
// traceparent in a SQL comment (see Pool).
func Postgres(ctx context.Context, databaseURL string, tel *telemetry.Telemetry, opts SQLOptions) (*Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if opts.Comments {
		runCommented(cfg)
	}
	pool, err := openPostgres(ctx, cfg, tel, opts.TransactionSpans)
	if err != nil {
		return nil, err
	}
	return &Pool{Pool: pool, comments: opts.Comments}, nil
}

// openPostgres opens the pool of cfg, traced.
func openPostgres(ctx context.Context, cfg *pgxpool.Config, tel *telemetry.Telemetry, transactionSpans bool) (*pgxpool.Pool, error) {
	// otelpgx reads the connection's details on every statement through
	// pgx's Conn.Config, which copies the whole configuration each time; they
	// are the pool's, so they are given once here. The database user is left
	// out: no span needs it.
	conn := cfg.ConnConfig
	cfg.ConnConfig.Tracer = &pgTracer{
		Tracer: otelpgx.NewTracer(
			otelpgx.WithTracerProvider(tel.TracerProvider),
			otelpgx.WithMeterProvider(tel.MeterProvider),
			otelpgx.WithDisableConnectionDetailsInAttributes(),
			otelpgx.WithTracerAttributes(semconv.DBSystemNamePostgreSQL, semconv.ServerAddress(conn.Host),
				semconv.ServerPort(int(conn.Port)), semconv.DBNamespace(conn.Database)),
		),
		tracer:           tel.Tracer("github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"),
		transactionSpans: transactionSpans,
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := otelpgx.RecordStats(pool, otelpgx.WithStatsMeterProvider(tel.MeterProvider)); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres pool metrics: %w", err)
	}
	return pool, nil
}

// PoolWaitThreshold is how long taking a connection from the pool must take
// to be worth a span.
const PoolWaitThreshold = time.Millisecond

// pgTracer is otelpgx's tracer, except that taking a connection from the pool
// becomes a "pool.acquire" span only when it waited (PoolWaitThreshold or
// longer) or failed. A free connection takes microseconds; a span for each
// was three or four of the thirty-odd spans of every order, telling nothing.
// A pool that is too small still shows: its waits are spans.
//
// It also leaves BEGIN, SAVEPOINT and RELEASE SAVEPOINT without a span
// unless transactionSpans (SQLOptions.TransactionSpans).
type pgTracer struct {
	*otelpgx.Tracer  // queries, batches, copies, connects, prepares
	tracer           trace.Tracer
	transactionSpans bool
}

type untracedKey struct{}

// TraceQueryStart starts the statement's span, unless it only opens a
// transaction or a savepoint and those go without.
func (t *pgTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !t.transactionSpans && opensTransaction(data.SQL) {
		return context.WithValue(ctx, untracedKey{}, true)
	}
	parent := trace.SpanFromContext(ctx)
	ctx = t.Tracer.TraceQueryStart(ctx, conn, data)
	// otelpgx names the span after the operation alone ("SELECT"); the
	// conventions name it by its query summary ("SELECT products").
	summary := querySummary(data.SQL)
	rename(ctx, parent, summary, semconv.DBQuerySummary(summary))
	return ctx
}

// TracePrepareStart starts the span of preparing a statement (once per
// statement and connection), named "PREPARE" and the statement's summary, so
// it is not mistaken for the statement's own run.
func (t *pgTracer) TracePrepareStart(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareStartData) context.Context {
	parent := trace.SpanFromContext(ctx)
	ctx = t.Tracer.TracePrepareStart(ctx, conn, data)
	summary := querySummary(data.SQL)
	rename(ctx, parent, "PREPARE "+summary, semconv.DBQuerySummary(summary))
	return ctx
}

// TraceCopyFromStart starts CopyFrom's span, named in the conventions
// ("COPY order_items", operation COPY) rather than otelpgx's "copy_from".
func (t *pgTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	parent := trace.SpanFromContext(ctx)
	ctx = t.Tracer.TraceCopyFromStart(ctx, conn, data)
	summary := "COPY " + strings.Join(data.TableName, ".")
	rename(ctx, parent, summary, semconv.DBOperationName("COPY"), semconv.DBQuerySummary(summary))
	return ctx
}

// rename names the span otelpgx started in ctx, if it started one (a child of
// parent that records), and adds attrs.
func rename(ctx context.Context, parent trace.Span, name string, attrs ...attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() && span.SpanContext().SpanID() != parent.SpanContext().SpanID() {
		span.SetName(name)
		span.SetAttributes(attrs...)
	}
}

// TraceQueryEnd ends the span TraceQueryStart started, if it did.
func (t *pgTracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	if ctx.Value(untracedKey{}) != nil {
		return
	}
	classify(ctx, data.Err)
	t.Tracer.TraceQueryEnd(ctx, conn, data)
}

// TraceCopyFromEnd ends CopyFrom's span, its failure classified.
func (t *pgTracer) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	classify(ctx, data.Err)
	t.Tracer.TraceCopyFromEnd(ctx, conn, data)
}

// TracePrepareEnd ends the prepare span, its failure classified.
func (t *pgTracer) TracePrepareEnd(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareEndData) {
	classify(ctx, data.Err)
	t.Tracer.TracePrepareEnd(ctx, conn, data)
}

// classify gives a failed statement's span what otelpgx leaves out and the
// conventions require of a failed operation: error.type, and
// db.response.status_code, both PostgreSQL's SQLSTATE ("40P01", "57014")
// when the server answered; otherwise "timeout", "canceled" or _OTHER.
// otelpgx records the exception and the status as the span ends.
func classify(ctx context.Context, err error) {
	span := trace.SpanFromContext(ctx)
	if err == nil || errors.Is(err, pgx.ErrNoRows) || !span.IsRecording() {
		return
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		span.SetAttributes(semconv.DBResponseStatusCode(pgErr.Code), semconv.ErrorTypeKey.String(pgErr.Code))
	case errors.Is(err, context.DeadlineExceeded):
		span.SetAttributes(semconv.ErrorTypeKey.String("timeout"))
	case errors.Is(err, context.Canceled):
		span.SetAttributes(semconv.ErrorTypeKey.String("canceled"))
	default:
		span.SetAttributes(semconv.ErrorTypeOther)
	}
}

// opensTransaction reports whether sql is what pgx sends to begin a
// transaction ("begin", "begin isolation level ...") or a savepoint
// ("savepoint sp_1"), or to release one ("release savepoint sp_1"): its
// first word is BEGIN, SAVEPOINT or RELEASE.
func opensTransaction(sql string) bool {
	word, _, _ := strings.Cut(sql, " ")
	return strings.EqualFold(word, "begin") || strings.EqualFold(word, "savepoint") || strings.EqualFold(word, "release")
}

type acquireStartKey struct{}

// TraceAcquireStart notes when the wait began, if the caller is traced.
func (t *pgTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx
	}
	return context.WithValue(ctx, acquireStartKey{}, time.Now())
}

// TraceAcquireEnd records the wait as a span that began when it did.
func (t *pgTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	began, ok := ctx.Value(acquireStartKey{}).(time.Time)
	if !ok || (data.Err == nil && time.Since(began) < PoolWaitThreshold) {
		return
	}
	_, span := t.tracer.Start(ctx, "pool.acquire", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(began))
	if data.Err != nil {
		span.RecordError(data.Err)
		span.SetStatus(codes.Error, data.Err.Error())
	}
	span.End()
}
