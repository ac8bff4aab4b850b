package main

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
)

// server is fulfillment's health and admin HTTP server.
type server struct {
	tel      *telemetry.Telemetry
	pool     *instrumented.Pool
	consumer *Consumer
	flags    scenario.Switches
	ready    atomic.Bool
}

// routes lists every route of fulfillment's HTTP server.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.tel.HTTPMiddleware(untraced), httpx.TraceContext, httpx.Recover)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)

	r.Get("/healthz", httpx.Health)
	// Ready once the consumer has declared the topology and subscribed: only
	// then do published orders reach a queue, and get fulfilled.
	r.Get("/readyz", httpx.Ready(&s.ready, map[string]func(context.Context) error{
		"postgres": s.pool.Ping,
		"rabbitmq": func(context.Context) error {
			if !s.consumer.Ready() {
				return errors.New("consumer disconnected")
			}
			return nil
		},
	}))
	r.Get("/scenarios", s.flags.Handler()) // the workshop's switches as loaded; never traced
	return r
}

// untraced are the paths polled by orchestrators and scripts: traced, they
// would bury the real traffic.
var untraced = telemetry.WithUntraced("/healthz", "/readyz", "/scenarios")
