// Package instrumented opens the suite's PostgreSQL and Redis clients with
// their OpenTelemetry instrumentation, in one place, so the rule of what is
// recorded (commands and SQL text) and what never is (query parameters,
// Redis keys and values) is written once.
package instrumented

import (
	"context"
	"fmt"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Postgres opens a connection pool whose queries become CLIENT spans (with
// the SQL text, never its parameters) and whose pool statistics become
// metrics. With sqlComments, each statement also carries its span's
// traceparent in a SQL comment (see Pool).
func Postgres(ctx context.Context, databaseURL string, tel *telemetry.Telemetry, sqlComments bool) (*Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if sqlComments {
		runCommented(cfg)
	}
	pool, err := openPostgres(ctx, cfg, tel)
	if err != nil {
		return nil, err
	}
	return &Pool{Pool: pool, comments: sqlComments}, nil
}

// openPostgres opens the pool of cfg, traced.
func openPostgres(ctx context.Context, cfg *pgxpool.Config, tel *telemetry.Telemetry) (*pgxpool.Pool, error) {
	cfg.ConnConfig.Tracer = &pgTracer{
		Tracer: otelpgx.NewTracer(
			otelpgx.WithTracerProvider(tel.TracerProvider),
			otelpgx.WithMeterProvider(tel.MeterProvider),
		),
		tracer: tel.Tracer("github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"),
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
type pgTracer struct {
	*otelpgx.Tracer // queries, batches, copies, connects, prepares
	tracer          trace.Tracer
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

// Redis opens a client whose commands become CLIENT spans named after the
// command, without its arguments or values, and whose pool becomes metrics.
// The suite uses Redis as a cache, so the client fails fast.
func Redis(redisURL string, tel *telemetry.Telemetry) (*redis.Client, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("parse REDIS_URL: %w", err)
	}
	// CLIENT SETINFO (Redis 7.2+) and CLIENT MAINT_NOTIFICATIONS (managed
	// Redis) fail on a plain older server on every new connection, leaving an
	// error span in the trace. The suite needs neither.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// When Redis is slow or gone, reading PostgreSQL is quicker than waiting
	// out go-redis's default 5 s dial and 3 s reads. A URL may still set its own.
	if opts.DialTimeout == 0 {
		opts.DialTimeout = time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 500 * time.Millisecond
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 500 * time.Millisecond
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = -1 // a cache miss is cheaper than retrying a dead Redis
	}
	rdb := redis.NewClient(opts)
	err = redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(tel.TracerProvider),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	)
	if err == nil {
		err = redisotel.InstrumentMetrics(rdb, redisotel.WithMeterProvider(tel.MeterProvider))
	}
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("instrument redis: %w", err)
	}
	return rdb, nil
}
