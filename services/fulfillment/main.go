// Command fulfillment consumes order.created messages from RabbitMQ and
// fulfils the orders, continuing each order's trace across the broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/sethvargo/go-envconfig"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// telemetryFlushTimeout bounds the final flush of spans, metrics and logs.
const telemetryFlushTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, envconfig.OsLookuper(), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fulfillment:", err)
		os.Exit(1)
	}
}

// run wires the consumer and its health server by hand, and stops them in
// the suite's order: readiness off, HTTP server down, consumer drained,
// clients closed, telemetry flushed last.
func run(ctx context.Context, env envconfig.Lookuper, stdout io.Writer) (err error) {
	cfg, err := loadConfig(ctx, env)
	if err != nil {
		return err
	}
	tel, shutdownTelemetry, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "fulfillment", ServiceVersion: version, LogLevel: cfg.LogLevel, LogOutput: stdout,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetryFlushTimeout)
		defer cancel()
		err = errors.Join(err, shutdownTelemetry(fctx))
	}()
	log := tel.Logger
	log.InfoContext(ctx, "starting fulfillment", "version", version, "config", cfg)

	pool, err := openPool(ctx, cfg.DatabaseURL, tel)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := openRedis(cfg.RedisURL, tel)
	if err != nil {
		return err
	}
	defer rdb.Close()
	fulfiller := &Fulfiller{pool: pool, rdb: rdb, tracer: tel.Tracer("github.com/ordertrace/ordertrace/services/fulfillment")}
	consumer, err := openConsumer(cfg.AMQPURL, cfg, fulfiller, tel)
	if err != nil {
		return err
	}
	defer consumer.Close()

	// The consumer and the health server stop together: when either fails,
	// the other is told to stop too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Run(ctx)
		cancel()
	}()

	var ready atomic.Bool
	r := chi.NewRouter()
	r.Use(tel.HTTPMiddleware())
	r.Get("/healthz", httpx.Health)
	r.Get("/readyz", httpx.Ready(&ready, map[string]func(context.Context) error{
		"postgres": pool.Ping,
		"rabbitmq": func(context.Context) error {
			if !consumer.Ready() {
				return errors.New("consumer disconnected")
			}
			return nil
		},
	}))
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		cancel()
		<-consumed
		return fmt.Errorf("listen on HTTP_ADDR: %w", err)
	}
	serveErr := httpx.Serve(ctx, ln, r, &ready, cfg.ShutdownTimeout, log)
	cancel()
	err = errors.Join(serveErr, <-consumed)
	log.InfoContext(context.WithoutCancel(ctx), "fulfillment stopped", "error", err)
	return err
}

// openPool connects to PostgreSQL with otelpgx tracing; query parameters are
// never recorded.
func openPool(ctx context.Context, databaseURL string, tel *telemetry.Telemetry) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.Tracer = otelpgx.NewTracer(
		otelpgx.WithTracerProvider(tel.TracerProvider),
		otelpgx.WithMeterProvider(tel.MeterProvider),
	)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return pool, nil
}

// openRedis connects to Redis with tracing that names commands but never
// records their arguments or values.
func openRedis(redisURL string, tel *telemetry.Telemetry) (*redis.Client, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("parse REDIS_URL: %w", err)
	}
	// CLIENT SETINFO (Redis 7.2+) and CLIENT MAINT_NOTIFICATIONS (managed
	// Redis) fail on a plain older server on every new connection, leaving an
	// error span in the trace. The suite needs neither.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	rdb := redis.NewClient(opts)
	if err := redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(tel.TracerProvider), redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false)); err != nil {
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	return rdb, nil
}
