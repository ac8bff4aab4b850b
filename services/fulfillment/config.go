package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ordertrace/ordertrace/pkg/config"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
	"github.com/sethvargo/go-envconfig"
)

// Config is everything fulfillment reads from its environment, once, at
// start. OTEL_* variables are read by the OpenTelemetry SDK itself.
type Config struct {
	HTTPAddr        string          `env:"HTTP_ADDR, default=:8082"`
	config.Backends                 // DATABASE_URL, REDIS_URL, AMQP_URL
	LogLevel        config.LogLevel `env:"LOG_LEVEL, default=info"`
	// SQL_COMMENTS, SQL_TRANSACTION_SPANS: what the PostgreSQL
	// instrumentation adds.
	instrumented.SQLOptions

	// The workshop's scenarios (docs/workshop): SCENARIOS_FILE, SCENARIOS_POLL.
	Scenarios scenario.Config

	// Prefetch is how many unacknowledged messages the broker hands over at
	// once; Workers is how many are processed at the same time.
	Prefetch int `env:"FULFILLMENT_PREFETCH, default=16"`
	Workers  int `env:"FULFILLMENT_WORKERS, default=4"`
	// A message is tried MaxAttempts times, waiting RetryBackoff, then twice
	// as long, between tries, then dead-lettered.
	MaxAttempts  int           `env:"FULFILLMENT_MAX_ATTEMPTS, default=3"`
	RetryBackoff time.Duration `env:"FULFILLMENT_RETRY_BACKOFF, default=200ms"`

	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT, default=10s"`
}

// loadConfig reads and validates the configuration; every error names the
// variable at fault.
func loadConfig(ctx context.Context, env envconfig.Lookuper) (Config, error) {
	var cfg Config
	if err := config.Load(ctx, env, &cfg); err != nil {
		return cfg, err
	}
	errs := []error{cfg.Backends.Check()}
	if cfg.Prefetch < 1 || cfg.Prefetch > 1000 {
		errs = append(errs, errors.New("FULFILLMENT_PREFETCH: must be between 1 and 1000"))
	}
	if cfg.Workers < 1 || cfg.Workers > cfg.Prefetch {
		errs = append(errs, errors.New("FULFILLMENT_WORKERS: must be between 1 and FULFILLMENT_PREFETCH"))
	}
	if cfg.MaxAttempts < 1 || cfg.MaxAttempts > 10 {
		errs = append(errs, errors.New("FULFILLMENT_MAX_ATTEMPTS: must be between 1 and 10"))
	}
	if cfg.RetryBackoff < 0 {
		errs = append(errs, errors.New("FULFILLMENT_RETRY_BACKOFF: must not be negative"))
	}
	if cfg.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	return cfg, errors.Join(errs...)
}

// LogValue masks the secrets of the connection URLs (config.Redact).
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(append(c.Backends.LogAttrs(),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("log_level", c.LogLevel.Level().String()),
		slog.Bool("sql_comments", c.Comments),
		slog.Bool("sql_transaction_spans", c.TransactionSpans),
		slog.Int("prefetch", c.Prefetch),
		slog.Int("workers", c.Workers),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.String("retry_backoff", c.RetryBackoff.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
	)...)
}
