// Command gateway is the suite's public HTTP API. It checks what comes in
// (JSON, tenant, baggage) and calls the orders service, carrying the trace.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ordertrace/ordertrace/pkg/config"
	"github.com/ordertrace/ordertrace/pkg/httpx"
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
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// run wires the gateway by hand and undoes it in reverse; telemetry is
// flushed last.
func run(ctx context.Context, env envconfig.Lookuper, stdout io.Writer) (err error) {
	cfg, err := loadConfig(ctx, env)
	if err != nil {
		return err
	}
	tel, shutdownTelemetry, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "gateway", ServiceVersion: version, LogLevel: cfg.LogLevel, LogOutput: stdout,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer telemetry.Flush(ctx, shutdownTelemetry, &err) // last: after everything below has stopped
	log := tel.Logger
	log.InfoContext(ctx, "starting gateway", "version", version, "orders_url", config.Redact(cfg.OrdersURL))

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 // one upstream: keep enough warm connections to it
	srv := &server{
		tel:    tel,
		orders: &http.Client{Transport: tel.HTTPTransport(transport), Timeout: cfg.OrdersTimeout},
		base:   strings.TrimSuffix(cfg.OrdersURL, "/"),
	}
	defer transport.CloseIdleConnections()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR: %w", err)
	}
	err = httpx.Serve(ctx, ln, srv.routes(cfg.InboundTrace.httpOptions()...), &srv.ready, cfg.ShutdownTimeout, log)
	log.InfoContext(ctx, "gateway stopped", "error", err)
	return err
}
