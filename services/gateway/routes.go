package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

// routes lists every route of the gateway, the suite's public face. inbound
// adds the tracing options of the edge's inbound trace policy (INBOUND_TRACE).
func (s *server) routes(inbound ...telemetry.HTTPOption) http.Handler {
	r := chi.NewRouter()
	// The tenant is known when the SERVER span starts: a priority tenant's
	// trace is always kept.
	tracing := append([]telemetry.HTTPOption{telemetry.WithStartAttributes(tenantAttributes), untraced}, inbound...)
	r.Use(s.tel.HTTPMiddleware(tracing...), httpx.TraceContext, httpx.Recover, trustedBaggage)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)

	r.Get("/healthz", httpx.Health)
	r.Get("/readyz", httpx.Ready(&s.ready, nil))
	r.Get("/api/products", s.listProducts())
	r.Post("/api/orders", s.placeOrder())
	r.Get("/api/orders/{id}", s.getOrder())
	return r
}

// untraced are the paths polled by orchestrators and scripts: traced, they
// would bury the real traffic.
var untraced = telemetry.WithUntraced("/healthz", "/readyz")
