package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/sethvargo/go-envconfig"
)

// Config is everything the orders service reads from its environment, once,
// at start. OTEL_* variables are read by the OpenTelemetry SDK itself.
type Config struct {
	HTTPAddr    string     `env:"HTTP_ADDR, default=:8081"`
	DatabaseURL string     `env:"DATABASE_URL, default=postgres://postgres:postgres@localhost:5432/orders?sslmode=disable"`
	RedisURL    string     `env:"REDIS_URL, default=redis://localhost:6379/0"`
	AMQPURL     string     `env:"AMQP_URL, default=amqp://guest:guest@localhost:5672/"`
	LogLevel    slog.Level `env:"LOG_LEVEL, default=info"`

	// The simulated payment provider: how long a charge takes, and the share
	// of charges it declines (0 to 1).
	PaymentLatency     time.Duration `env:"PAYMENT_LATENCY, default=25ms"`
	PaymentFailureRate float64       `env:"PAYMENT_FAILURE_RATE, default=0"`

	// How long shutdown waits for in-flight requests before giving up.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT, default=10s"`
}

// loadConfig reads and validates the configuration; every error names the
// variable at fault.
func loadConfig(ctx context.Context, env envconfig.Lookuper) (Config, error) {
	var cfg Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: env}); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	var errs []error
	for name, raw := range map[string]string{"DATABASE_URL": cfg.DatabaseURL, "REDIS_URL": cfg.RedisURL, "AMQP_URL": cfg.AMQPURL} {
		if u, err := url.Parse(raw); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: must be a URL with a scheme and a host", name))
		}
	}
	if cfg.PaymentFailureRate < 0 || cfg.PaymentFailureRate > 1 {
		errs = append(errs, errors.New("PAYMENT_FAILURE_RATE: must be between 0 and 1"))
	}
	if cfg.PaymentLatency < 0 {
		errs = append(errs, errors.New("PAYMENT_LATENCY: must not be negative"))
	}
	if cfg.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// LogValue masks the passwords in the connection URLs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("http_addr", c.HTTPAddr),
		slog.String("database_url", telemetry.RedactURL(c.DatabaseURL)),
		slog.String("redis_url", telemetry.RedactURL(c.RedisURL)),
		slog.String("amqp_url", telemetry.RedactURL(c.AMQPURL)),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("payment_latency", c.PaymentLatency.String()),
		slog.Float64("payment_failure_rate", c.PaymentFailureRate),
	)
}
