package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
)

// routes lists every route of the orders service.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.tel.HTTPMiddleware(), httpx.Recover)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)

	r.Get("/healthz", httpx.Health)
	r.Get("/readyz", s.readyz())
	r.Get("/products", s.listProducts())
	r.Post("/orders", s.placeOrder())
	r.Get("/orders/{id}", s.getOrder())
	return withScenarios(s.svc.flags, r)
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
