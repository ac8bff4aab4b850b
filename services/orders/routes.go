package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

// routes lists every route of the orders service.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	// Orders' port can be reached without the gateway: the baggage it stores,
	// publishes and records passes the same trust policy here.
	r.Use(s.tel.HTTPMiddleware(untraced), telemetry.TrustBaggage, httpx.TraceContext, httpx.Recover)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)

	r.Get("/healthz", httpx.Health)
	r.Get("/readyz", s.readyz())
	r.Get("/products", s.listProducts())
	r.Post("/orders", s.placeOrder())
	r.Get("/orders/{id}", s.getOrder())
	r.Get("/scenarios", s.svc.Scenarios()) // the workshop's switches as loaded; never traced
	return r
}

// untraced are the paths polled by orchestrators and scripts: traced, they
// would bury the real traffic.
var untraced = telemetry.WithUntraced("/healthz", "/readyz", "/scenarios")
