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
	"syscall"
	"time"

	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
	"github.com/sethvargo/go-envconfig"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	defer telemetry.Flush(ctx, shutdownTelemetry, &err) // last: after everything below has stopped
	log := tel.Logger
	log.InfoContext(ctx, "starting fulfillment", "version", version, "config", cfg)

	pool, err := instrumented.Postgres(ctx, cfg.DatabaseURL, tel, cfg.SQLOptions)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Fulfillment only writes orders' cache: a slow Redis must not hold
	// up a message, so the client gives up as fast as orders' does.
	rdb, err := instrumented.Redis(cfg.RedisURL, tel, instrumented.RedisOptions{
		DialTimeout: time.Second, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1,
	})
	if err != nil {
		return err
	}
	defer rdb.Close()
	flags, stopFlags := scenario.Start(cfg.Scenarios, log)
	defer stopFlags()
	fulfiller, err := newFulfiller(pool, rdb, tel, flags)
	if err != nil {
		return err
	}
	consumer := newConsumer(cfg, fulfiller, tel)

	// The health server stops first, then the consumer drains: the suite's
	// shutdown order (docs/design.md, Shutdown). The consumer reconnects by
	// itself while the broker is away; readiness says whether it is subscribed.
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Run(consumeCtx)
		stopServing()
	}()

	srv := &server{tel: tel, pool: pool, consumer: consumer, flags: flags}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		stopConsuming()
		return errors.Join(fmt.Errorf("listen on HTTP_ADDR: %w", err), <-consumed)
	}
	err = httpx.Serve(serveCtx, ln, srv.routes(), &srv.ready, cfg.ShutdownTimeout, log)
	stopConsuming()
	err = errors.Join(err, <-consumed)
	log.InfoContext(context.WithoutCancel(ctx), "fulfillment stopped", "error", err)
	return err
}
