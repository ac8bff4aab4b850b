// Command orders is the order API: it checks stock, prices and charges an
// order, stores it in PostgreSQL and publishes order.created to RabbitMQ,
// tracing each step.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/sethvargo/go-envconfig"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, envconfig.OsLookuper(), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// run wires the service by hand, in order, and undoes it in reverse: the
// HTTP server stops first, then the clients close, and telemetry is flushed last.
func run(ctx context.Context, env envconfig.Lookuper, stdout io.Writer) (err error) {
	cfg, err := loadConfig(ctx, env)
	if err != nil {
		return err
	}
	tel, shutdownTelemetry, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "orders", ServiceVersion: version, LogLevel: cfg.LogLevel, LogOutput: stdout,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer telemetry.Flush(ctx, shutdownTelemetry, &err) // last: after everything below has stopped
	log := tel.Logger
	log.InfoContext(ctx, "starting orders", "version", version, "config", cfg)

	store, err := openStore(ctx, cfg.DatabaseURL, tel, cfg.SQLOptions)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	cache, err := openCache(cfg.RedisURL, store.Database(), tel)
	if err != nil {
		return err
	}
	defer cache.Close()
	flags, stopFlags := scenario.Start(cfg.Scenarios, log)
	defer stopFlags()
	relay, err := newRelay(ctx, cfg.DatabaseURL, cfg.AMQPURL, tel, flags)
	if err != nil {
		return err
	}

	srv := &server{
		tel: tel,
		svc: &Service{
			store:    store,
			cache:    cache,
			payments: PaymentProvider{Latency: cfg.PaymentLatency, FailureRate: cfg.PaymentFailureRate},
			timeout:  cfg.PaymentTimeout,
			flags:    flags,
			prop:     tel.Propagator,
			tracer:   tel.Tracer("github.com/ordertrace/ordertrace/services/orders"),
			log:      log,
		},
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR: %w", err)
	}
	// The relay runs beside the HTTP server and stops after it: requests in
	// flight may still store messages, which the relay's last batch sends.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan struct{})
	go func() {
		relay.Run(relayCtx)
		close(relayDone)
	}()
	err = httpx.Serve(ctx, ln, srv.routes(), &srv.ready, cfg.ShutdownTimeout, log)
	stopRelay()
	<-relayDone
	log.InfoContext(context.WithoutCancel(ctx), "orders stopped", "error", err)
	return err
}
