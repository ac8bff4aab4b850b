package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ordertrace/ordertrace/pkg/config"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/sethvargo/go-envconfig"
)

// Config is everything the gateway reads from its environment, once, at
// start. OTEL_* variables are read by the OpenTelemetry SDK itself.
type Config struct {
	HTTPAddr  string          `env:"HTTP_ADDR, default=:8080"`
	OrdersURL string          `env:"ORDERS_URL, default=http://localhost:8081"`
	LogLevel  config.LogLevel `env:"LOG_LEVEL, default=info"`

	// Whether a caller's traceparent continues into the suite's trace.
	InboundTrace InboundTrace `env:"INBOUND_TRACE, default=trust"`

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
	if cfg.InboundTrace != InboundTrust && cfg.InboundTrace != InboundNewRoot {
		errs = append(errs, fmt.Errorf("INBOUND_TRACE: must be %q or %q, not %q", InboundTrust, InboundNewRoot, cfg.InboundTrace))
	}
	if cfg.OrdersTimeout <= 0 {
		errs = append(errs, errors.New("ORDERS_TIMEOUT: must be positive"))
	}
	if cfg.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	return cfg, errors.Join(errs...)
}

// InboundTrace is what the public edge does with a caller's trace context.
type InboundTrace string

const (
	// InboundTrust continues the caller's trace, flags and tracestate
	// included: the workshop's tools and k6 send their own traceparent.
	InboundTrust InboundTrace = "trust"
	// InboundNewRoot starts a new trace linked to the caller's span, so an
	// outside caller decides neither whether an order is traced nor what
	// tracestate it carries.
	InboundNewRoot InboundTrace = "new-root"
)

// httpOptions are the tracing middleware's options for this policy.
func (i InboundTrace) httpOptions() []telemetry.HTTPOption {
	if i == InboundNewRoot {
		return []telemetry.HTTPOption{telemetry.WithNewRoot()}
	}
	return nil
}
