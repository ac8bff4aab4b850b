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

// Config is everything the orders service reads from its environment, once,
// at start. OTEL_* variables are read by the OpenTelemetry SDK itself.
type Config struct {
	HTTPAddr        string          `env:"HTTP_ADDR, default=:8081"`
	config.Backends                 // DATABASE_URL, REDIS_URL, AMQP_URL
	LogLevel        config.LogLevel `env:"LOG_LEVEL, default=info"`
	// SQL_COMMENTS, SQL_TRANSACTION_SPANS: what the PostgreSQL
	// instrumentation adds.
	instrumented.SQLOptions

	// The simulated payment provider: how long a charge takes, and the share
	// of charges it declines (0 to 1).
	PaymentLatency     time.Duration `env:"PAYMENT_LATENCY, default=25ms"`
	PaymentFailureRate float64       `env:"PAYMENT_FAILURE_RATE, default=0"`
	// How long one charge may take before orders gives up on it and retries.
	PaymentTimeout time.Duration `env:"PAYMENT_TIMEOUT, default=2s"`

	// The workshop's scenarios (docs/workshop): SCENARIOS_FILE, SCENARIOS_POLL.
	Scenarios scenario.Config

	// How long shutdown waits for requests in flight.
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
	if cfg.PaymentFailureRate < 0 || cfg.PaymentFailureRate > 1 {
		errs = append(errs, errors.New("PAYMENT_FAILURE_RATE: must be between 0 and 1"))
	}
	if cfg.PaymentTimeout <= 0 {
		errs = append(errs, errors.New("PAYMENT_TIMEOUT: must be positive"))
	}
	if cfg.PaymentLatency < 0 {
		errs = append(errs, errors.New("PAYMENT_LATENCY: must not be negative"))
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
		slog.String("payment_latency", c.PaymentLatency.String()),
		slog.Float64("payment_failure_rate", c.PaymentFailureRate),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
	)...)
}
