package main

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

// server is fulfillment's health and admin HTTP server.
type server struct {
	tel      *telemetry.Telemetry
	pool     *pgxpool.Pool
	consumer *Consumer
	flags    scenario.Switches
	ready    atomic.Bool
}

// routes lists every route of fulfillment's HTTP server.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.tel.HTTPMiddleware(), httpx.Recover)
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
	return withScenarios(s.flags, r)
}

// withScenarios answers GET /scenarios, the scenario values this process has
// loaded, ahead of next: polled like a health check (a test waits on it
// after switching a scenario), it must stay out of the traces.
func withScenarios(flags scenario.Switches, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/scenarios" {
			next.ServeHTTP(w, r)
			return
		}
		// Each scenario read as the code reads it, by the type of its "on" value.
		loaded := map[string]any{}
		for name, f := range scenario.Defaults().Flags {
			switch f.Variants["on"].(type) {
			case bool:
				loaded[name] = flags.On(r.Context(), name)
			case float64:
				loaded[name] = flags.Number(r.Context(), name)
			case string:
				loaded[name] = flags.Text(r.Context(), name)
			}
		}
		httpx.WriteJSON(w, http.StatusOK, loaded)
	})
}
