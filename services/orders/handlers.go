package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// server holds what the handlers need.
type server struct {
	svc   *Service
	tel   *telemetry.Telemetry
	ready atomic.Bool
}

// PlaceOrderResponse is the answer to a placed order.
type PlaceOrderResponse struct {
	OrderID    string `json:"order_id"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	TraceID    string `json:"trace_id"`
}

func (s *server) readyz() http.HandlerFunc {
	return httpx.Ready(&s.ready, map[string]func(context.Context) error{
		"postgres": s.svc.store.Ping,
		"rabbitmq": func(context.Context) error {
			if !s.svc.publisher.Ready() {
				return errors.New("publisher closed")
			}
			return nil
		},
	})
}

func (s *server) listProducts() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		products, err := s.svc.store.Products(r.Context())
		if err != nil {
			s.fail(w, r, fmt.Errorf("%w: %w", ErrUnavailable, err))
			return
		}
		httpx.WriteJSON(w, http.StatusOK, products)
	}
}

func (s *server) placeOrder() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req PlaceOrderRequest
		if err := httpx.DecodeJSON(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := req.Validate(); err != nil {
			s.fail(w, r, err)
			return
		}
		order, err := s.svc.PlaceOrder(r.Context(), req)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusCreated, PlaceOrderResponse{
			OrderID: order.ID, Status: order.Status, TotalCents: order.TotalCents, TraceID: order.TraceID,
		})
	}
}

func (s *server) getOrder() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		if _, err := uuid.Parse(id); err != nil {
			s.fail(w, r, httpx.Invalid(httpx.FieldError{Field: "id", Reason: "must be a UUID"}))
			return
		}
		order, err := s.svc.store.GetOrder(r.Context(), id)
		if err != nil && !errors.Is(err, ErrOrderNotFound) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, order)
	}
}

// fail answers with the problem that fits err. Internal error text is logged
// with the trace, never sent to the client.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	if p.Status >= 500 || p.Status == http.StatusPaymentRequired {
		// The failure passed through this span on its way to the client.
		trace.SpanFromContext(r.Context()).RecordError(err)
	}
	if p.Status >= 500 {
		s.tel.Logger.ErrorContext(r.Context(), "request failed", "status", p.Status, "error", err)
	}
	httpx.WriteProblem(w, r, p)
}

// problemFor maps the service's errors to HTTP problems.
func problemFor(err error) *httpx.Problem {
	var (
		p     *httpx.Problem
		item  *itemError
		field string
	)
	if errors.As(err, &p) {
		return p
	}
	if errors.As(err, &item) {
		field = item.Field
	}
	switch {
	case errors.Is(err, ErrUnknownSKU):
		return httpx.Invalid(httpx.FieldError{Field: field, Reason: "no product has this sku"})
	case errors.Is(err, ErrOutOfStock):
		return httpx.NewProblem(http.StatusConflict, "Out of stock", "there is not enough stock for this order",
			httpx.FieldError{Field: field, Reason: "more than is in stock"})
	case errors.Is(err, ErrPaymentDeclined):
		return httpx.NewProblem(http.StatusPaymentRequired, "Payment declined", "the payment provider declined the charge")
	case errors.Is(err, ErrPaymentUnavailable):
		return httpx.NewProblem(http.StatusBadGateway, "Payment provider unavailable", "the payment provider did not answer in time")
	case errors.Is(err, ErrOrderNotFound):
		return httpx.NewProblem(http.StatusNotFound, "Order not found", "no order has this id")
	case errors.Is(err, ErrUnavailable):
		return httpx.NewProblem(http.StatusServiceUnavailable, "Service unavailable", "a dependency is unavailable; retry later")
	default:
		return httpx.NewProblem(http.StatusInternalServerError, "Internal error", "the server failed; the trace ID identifies this request")
	}
}
