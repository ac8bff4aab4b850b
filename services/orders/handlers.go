package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// server holds what the handlers need.
type server struct {
	svc   *Service
	tel   *telemetry.Telemetry
	ready atomic.Bool
}

// PlaceOrderRequest is the body of POST /orders.
type PlaceOrderRequest struct {
	CustomerID string        `json:"customer_id"`
	Items      []RequestItem `json:"items"`
}

// RequestItem is one line of PlaceOrderRequest.
type RequestItem struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// PlaceOrderResponse is the answer to a placed order.
type PlaceOrderResponse struct {
	OrderID    string `json:"order_id"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	TraceID    string `json:"trace_id"`
}

// readyz needs PostgreSQL only: orders are stored with their messages, so
// the service takes orders while RabbitMQ is away and the relay catches up.
func (s *server) readyz() http.HandlerFunc {
	return httpx.Ready(&s.ready, map[string]func(context.Context) error{"postgres": s.svc.Ping})
}

func (s *server) listProducts() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		products, err := s.svc.Products(r.Context())
		if err != nil {
			s.fail(w, r, err)
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
		if err := validate(req); err != nil {
			s.fail(w, r, err)
			return
		}
		idem, answered := s.claimKey(w, r, req)
		if answered {
			return
		}
		order, err := s.svc.PlaceOrder(r.Context(), req, idem, placedAnswer)
		if err != nil {
			if idem != nil {
				s.releaseKey(r, *idem)
			}
			s.fail(w, r, err)
			return
		}
		// The very bytes an Idempotency-Key replays.
		answer := placedAnswer(order)
		httpx.WriteRaw(w, answer.Status, answer.Body)
	}
}

// idPattern is what a customer ID or a SKU may look like: identifiers, not
// free text, so nothing stored or logged can carry markup or a payload.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$`)

// The limits of an order, as the README's API section states them.
const (
	maxItems    = 50
	maxQuantity = 10_000
)

// Why a value is refused, in the words of the API's problems.
const (
	reasonRequired  = "is required"
	reasonID        = "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_', ':', '@' or '-', the first a letter or digit"
	reasonItems     = "must hold 1 to 50 items"
	reasonDuplicate = "appears more than once; order each sku once, with the total quantity"
	reasonQuantity  = "must be a whole number from 1 to 10000"
)

// validate checks req's values. More than maxItems items is one error,
// found before any item is looked at: the answer to thousands of invalid
// items is then no longer than the answer to one.
func validate(req PlaceOrderRequest) error {
	if len(req.Items) <= maxItems {
		return req.Validate()
	}
	var fields []httpx.FieldError
	if reason := checkID(req.CustomerID); reason != "" {
		fields = append(fields, httpx.FieldError{Field: "customer_id", Reason: reason})
	}
	return httpx.Invalid(append(fields, httpx.FieldError{Field: "items", Reason: reasonItems})...)
}

// Validate checks the values, naming every field that is wrong.
func (r PlaceOrderRequest) Validate() error {
	var fields []httpx.FieldError
	if reason := checkID(r.CustomerID); reason != "" {
		fields = append(fields, httpx.FieldError{Field: "customer_id", Reason: reason})
	}
	if len(r.Items) == 0 || len(r.Items) > maxItems {
		fields = append(fields, httpx.FieldError{Field: "items", Reason: reasonItems})
	}
	seen := map[string]bool{}
	for i, it := range r.Items {
		if reason := checkID(it.SKU); reason != "" {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "sku"), Reason: reason})
		} else if seen[it.SKU] {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "sku"), Reason: reasonDuplicate})
		}
		seen[it.SKU] = true
		if it.Quantity < 1 || it.Quantity > maxQuantity {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "quantity"), Reason: reasonQuantity})
		}
	}
	if len(fields) > 0 {
		return httpx.Invalid(fields...)
	}
	return nil
}

// checkID says why id is not a valid customer ID or SKU, "" when it is.
func checkID(id string) string {
	switch {
	case id == "":
		return reasonRequired
	case !idPattern.MatchString(id):
		return reasonID
	default:
		return ""
	}
}

// claimKey claims the request's Idempotency-Key, if it has one. It answers
// the request itself (and says so) when the key cannot be used, or when the
// same request was answered before: then it replays that answer, marked with
// an Idempotent-Replayed header.
func (s *server) claimKey(w http.ResponseWriter, r *http.Request, req PlaceOrderRequest) (idem *IdempotencyKey, answered bool) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return nil, false
	}
	if !validKey(key) {
		s.fail(w, r, httpx.NewProblem(http.StatusBadRequest, "Invalid header", "the idempotency key is malformed",
			httpx.FieldError{Field: "Idempotency-Key", Reason: "must be 1 to 255 visible ASCII characters (no spaces)"}))
		return nil, true
	}
	idem = newIdempotencyKey(r.Context(), req, key)
	answer, err := s.svc.ClaimKey(r.Context(), *idem)
	if err != nil {
		s.fail(w, r, err)
		return nil, true
	}
	if answer != nil {
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.Bool("idempotency.replayed", true))
		w.Header().Set("Idempotent-Replayed", "true")
		httpx.WriteRaw(w, answer.Status, answer.Body)
		return idem, true
	}
	return idem, false
}

// releaseKey frees the key of a request that placed no order: a refused
// request stores nothing, and a failed one is processed afresh on retry.
func (s *server) releaseKey(r *http.Request, k IdempotencyKey) {
	ctx := context.WithoutCancel(r.Context())
	if err := s.svc.ReleaseKey(ctx, k); err != nil {
		s.tel.Logger.WarnContext(ctx, "idempotency key not released", "error", err)
	}
}

func validKey(key string) bool {
	if len(key) > 255 {
		return false
	}
	for _, c := range key {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// placedAnswer is the answer to a placed order. PlaceOrder is given it to
// store with an Idempotency-Key, so a replay is this answer, byte for byte.
func placedAnswer(o Order) Answer {
	b, _ := json.Marshal(PlaceOrderResponse{OrderID: o.ID, Status: o.Status, TotalCents: o.TotalCents, TraceID: o.TraceID})
	return Answer{Status: http.StatusCreated, Body: append(b, '\n')}
}

func (s *server) getOrder() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		if _, err := uuid.Parse(id); err != nil {
			s.fail(w, r, httpx.Invalid(httpx.FieldError{Field: "id", Reason: "must be a UUID"}))
			return
		}
		order, err := s.svc.Order(r.Context(), id)
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
	switch {
	case p.Status >= 500:
		s.tel.Logger.ErrorContext(r.Context(), "request failed", "status", p.Status, "error", err)
	default:
		// A 4xx is the client's, so no span is an error (the semantic
		// conventions): this line is what a refused order leaves in its trace.
		s.tel.Logger.WarnContext(r.Context(), "request refused", p.LogAttrs()...)
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
		return httpx.Invalid(httpx.FieldError{Field: field, Reason: "is not in the catalogue"})
	case errors.Is(err, ErrOutOfStock):
		return httpx.NewProblem(http.StatusConflict, "Out of stock", "there is not enough stock for this order",
			httpx.FieldError{Field: field, Reason: "is more than is in stock"})
	case errors.Is(err, ErrPaymentDeclined):
		return httpx.NewProblem(http.StatusPaymentRequired, "Payment declined", "the payment provider declined the charge")
	case errors.Is(err, ErrPaymentUnavailable):
		return httpx.NewProblem(http.StatusBadGateway, "Payment provider unavailable", "the payment provider did not answer in time")
	case errors.Is(err, ErrKeyReused):
		return httpx.NewProblem(http.StatusUnprocessableEntity, "Idempotency key reused",
			"this Idempotency-Key was already used for a different order; use a new key for a new order",
			httpx.FieldError{Field: "Idempotency-Key", Reason: "already used for a different request"})
	case errors.Is(err, ErrKeyInFlight):
		return httpx.NewProblem(http.StatusConflict, "Request in progress",
			"a request with this Idempotency-Key is still being processed; retry shortly",
			httpx.FieldError{Field: "Idempotency-Key", Reason: "in use by a request in progress"})
	case errors.Is(err, ErrOrderNotFound):
		return httpx.NewProblem(http.StatusNotFound, "Order not found", "no order has this id")
	case errors.Is(err, ErrUnavailable):
		return httpx.NewProblem(http.StatusServiceUnavailable, "Service unavailable", "a dependency is unavailable; retry later")
	default:
		return httpx.NewProblem(http.StatusInternalServerError, "Internal error", "the server failed; the trace ID identifies this request")
	}
}
