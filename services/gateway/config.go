package main

import (
	"context"
	"errors"
	"time"

	"github.com/ordertrace/ordertrace/pkg/config"
	"github.com/sethvargo/go-envconfig"
)

// Config is everything the gateway reads from its environment, once, at
// start. OTEL_* variables are read by the OpenTelemetry SDK itself.
type Config struct {
	HTTPAddr  string          `env:"HTTP_ADDR, default=:8080"`
	OrdersURL string          `env:"ORDERS_URL, default=http://localhost:8081"`
	LogLevel  config.LogLevel `env:"LOG_LEVEL, default=info"`

	// How long a call to the orders service may take, and how long shutdown
	// waits for requests in flight.
	OrdersTimeout   time.Duration `env:"ORDERS_TIMEOUT, default=10s"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT, default=10s"`
}

// loadConfig reads and validates the configuration; every error names the
// variable at fault.
func loadConfig(ctx context.Context, env envconfig.Lookuper) (Config, error) {
	var cfg Config
	if err := config.Load(ctx, env, &cfg); err != nil {
		return cfg, err
	}
	errs := []error{config.CheckURL("ORDERS_URL", cfg.OrdersURL, "http", "https")}
	if cfg.OrdersTimeout <= 0 {
		errs = append(errs, errors.New("ORDERS_TIMEOUT: must be positive"))
	}
	if cfg.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	return cfg, errors.Join(errs...)
}
