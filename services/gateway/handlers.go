package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// server holds what the handlers need.
type server struct {
	tel    *telemetry.Telemetry
	orders *http.Client // traced by an otelhttp transport
	base   string       // ORDERS_URL
	ready  atomic.Bool
}

// placeOrderRequest is the public body of POST /api/orders. The gateway
// decodes it strictly, so what it forwards has only these fields.
type placeOrderRequest struct {
	CustomerID string `json:"customer_id"`
	Items      []struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	} `json:"items"`
}

// maxUpstreamBytes bounds what the gateway reads back from the orders service.
const maxUpstreamBytes = 1 << 20

func (s *server) listProducts() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.forward(w, r, http.MethodGet, "/products", nil)
	}
}

func (s *server) placeOrder() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req placeOrderRequest
		// The object as the client sent it goes on: strictly decoded, it
		// holds only these fields, and it is within the body limit orders
		// shares. A re-encoding could outgrow that limit (JSON's escapes)
		// and turn an accepted order into a 413 from orders.
		body, err := httpx.DecodeJSONBody(w, r, &req)
		if err != nil {
			var p *httpx.Problem
			errors.As(err, &p)
			// Refused here, it never reaches orders, which logs the rest.
			s.tel.Logger.WarnContext(r.Context(), "request refused", p.LogAttrs()...)
			httpx.WriteProblem(w, r, p)
			return
		}
		s.forward(w, r, http.MethodPost, "/orders", body)
	}
}

func (s *server) getOrder() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.forward(w, r, http.MethodGet, "/orders/"+url.PathEscape(chi.URLParam(r, "id")), nil)
	}
}

// forward calls the orders service and relays its answer: status, body and
// content type. A failure of the call itself becomes a 503 or 504 problem.
func (s *server) forward(w http.ResponseWriter, r *http.Request, method, path string, body []byte) {
	req, err := http.NewRequestWithContext(r.Context(), method, s.base+path, bytes.NewReader(body))
	if err != nil {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "Internal error", "the request could not be forwarded"))
		return
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.orders.Do(req)
	if err != nil {
		trace.SpanFromContext(r.Context()).RecordError(err)
		s.tel.Logger.ErrorContext(r.Context(), "orders service call failed", "error", err)
		p := httpx.NewProblem(http.StatusServiceUnavailable, "Service unavailable", "the orders service is unavailable; retry later")
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			p = httpx.NewProblem(http.StatusGatewayTimeout, "Gateway timeout", "the orders service did not answer in time")
		}
		httpx.WriteProblem(w, r, p)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBytes))
	if err != nil {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadGateway, "Bad gateway", "the orders service answer was cut short"))
		return
	}

	// A failure behind the gateway (a declined payment, a dependency down) is a
	// failure of this request too: record it on the gateway's SERVER span.
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusPaymentRequired {
		span := trace.SpanFromContext(r.Context())
		err := fmt.Errorf("orders service answered %d", resp.StatusCode)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	for _, h := range []string{"Content-Type", "Idempotent-Replayed"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if method == http.MethodPost && resp.StatusCode == http.StatusCreated {
		var created struct {
			OrderID string `json:"order_id"`
		}
		if json.Unmarshal(answer, &created) == nil && created.OrderID != "" {
			w.Header().Set("Location", "/api/orders/"+url.PathEscape(created.OrderID))
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}
