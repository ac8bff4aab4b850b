package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

// routes lists every route of the gateway, the suite's public face.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	// The tenant is known when the SERVER span starts: a priority tenant's
	// trace is always kept.
	r.Use(s.tel.HTTPMiddleware(telemetry.WithStartAttributes(tenantAttributes)), httpx.TraceContext, httpx.Recover, trustedBaggage)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)

	r.Get("/healthz", httpx.Health)
	r.Get("/readyz", httpx.Ready(&s.ready, nil))
	r.Get("/api/products", s.listProducts())
	r.Post("/api/orders", s.placeOrder())
	r.Get("/api/orders/{id}", s.getOrder())
	return r
}
