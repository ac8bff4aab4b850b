package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The gateway refuses a baggage header larger than W3C Baggage allows a
// sender; of a smaller one, it passes on what telemetry.FilterBaggage keeps.
const maxInboundBytes = 8192

// edge is what the gateway takes from a request's own headers; each wins
// over the same member of the inbound baggage.
type edge struct {
	tenant    string // X-Tenant-ID
	requestID string // X-Request-ID
}

// trustedBaggage replaces the inbound baggage with the members the gateway
// accepts, and turns the X-Tenant-ID and X-Request-ID headers (which win over
// inbound members) into the tenant.id and request.id members. A malformed
// header is refused. Every request gets a request id, the caller's or a new
// one, answered in X-Request-ID, so a load balancer's or a client's logs can
// be joined with the trace.
func trustedBaggage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, problem := checkHeaders(r.Header)
		if problem != nil {
			httpx.WriteProblem(w, r, problem)
			return
		}
		b := filterBaggage(baggage.FromContext(r.Context()), e)
		id := b.Member(telemetry.RequestIDKey).Value()
		if id == "" {
			id = uuid.NewString()
			if m, err := baggage.NewMemberRaw(telemetry.RequestIDKey, id); err == nil {
				b, _ = b.SetMember(m)
			}
		}
		w.Header().Set("X-Request-ID", id)
		if e.requestID != "" { // the header as received, under the HTTP conventions' name for it
			trace.SpanFromContext(r.Context()).SetAttributes(attribute.StringSlice("http.request.header.x-request-id", []string{e.requestID}))
		}
		next.ServeHTTP(w, r.WithContext(baggage.ContextWithBaggage(r.Context(), b)))
	})
}

// tenantAttributes is the tenant.id of the gateway's SERVER span, given as
// the span starts so the sampler can keep a priority tenant's trace. The
// baggage is not extracted yet at that point, so it is read from the headers
// here, under the very rules of trustedBaggage: a request it refuses has no
// tenant.
func tenantAttributes(r *http.Request) []attribute.KeyValue {
	e, problem := checkHeaders(r.Header)
	if problem != nil {
		return nil
	}
	inbound := baggage.FromContext(propagation.Baggage{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
	if t := filterBaggage(inbound, e).Member(telemetry.TenantKey).Value(); t != "" {
		return []attribute.KeyValue{attribute.String(telemetry.TenantKey, t)}
	}
	return nil
}

// checkHeaders returns the request's X-Tenant-ID and X-Request-ID, or the
// problem to refuse the request with: a baggage header larger than W3C
// Baggage allows, or a malformed header.
func checkHeaders(h http.Header) (e edge, problem *httpx.Problem) {
	if n := len(strings.Join(h.Values("baggage"), ",")); n > maxInboundBytes {
		return edge{}, httpx.NewProblem(http.StatusRequestHeaderFieldsTooLarge, "Header too large",
			"the baggage header is larger than W3C Baggage allows",
			httpx.FieldError{Field: "baggage", Reason: fmt.Sprintf("must be at most %d bytes", maxInboundBytes)})
	}
	e = edge{tenant: h.Get("X-Tenant-ID"), requestID: h.Get("X-Request-ID")}
	if e.tenant != "" && !telemetry.TenantPattern.MatchString(e.tenant) {
		return edge{}, httpx.NewProblem(http.StatusBadRequest, "Invalid header", "the tenant header is malformed",
			httpx.FieldError{Field: "X-Tenant-ID", Reason: "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_' or '-', the first a letter or digit"})
	}
	if e.requestID != "" && !telemetry.RequestIDPattern.MatchString(e.requestID) {
		return edge{}, httpx.NewProblem(http.StatusBadRequest, "Invalid header", "the request id header is malformed",
			httpx.FieldError{Field: "X-Request-ID", Reason: "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_', ':' or '-', the first a letter or digit"})
	}
	return e, nil
}

// filterBaggage sets the members e gives over those of in, and returns what
// the trust policy lets pass of the result.
func filterBaggage(in baggage.Baggage, e edge) baggage.Baggage {
	for key, v := range map[string]string{telemetry.TenantKey: e.tenant, telemetry.RequestIDKey: e.requestID} {
		if v == "" {
			continue
		}
		if m, err := baggage.NewMemberRaw(key, v); err == nil {
			in, _ = in.SetMember(m)
		}
	}
	return telemetry.FilterBaggage(in)
}
