package main

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/ordertrace/ordertrace/pkg/httpx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
)

// Baggage travels to every service behind the gateway and into the message
// headers, so what comes from outside is untrusted: only these members pass,
// each value checked, and the whole is capped.
var baggageAllowlist = map[string]*regexp.Regexp{
	tenantKey: tenantPattern,
}

const (
	tenantKey       = "tenant.id"
	maxBaggageBytes = 512  // what the gateway passes on
	maxInboundBytes = 8192 // what W3C Baggage allows a sender at most
)

var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// trustedBaggage replaces the inbound baggage with the members the gateway
// accepts, and turns the X-Tenant-ID header (which wins over any inbound
// tenant.id) into the tenant.id member. A malformed X-Tenant-ID is refused.
func trustedBaggage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, problem := checkTenantHeaders(r.Header)
		if problem != nil {
			httpx.WriteProblem(w, r, problem)
			return
		}
		b := filterBaggage(baggage.FromContext(r.Context()), tenant)
		next.ServeHTTP(w, r.WithContext(baggage.ContextWithBaggage(r.Context(), b)))
	})
}

// tenantAttributes is the tenant.id of the gateway's SERVER span, given as
// the span starts so the sampler can keep a priority tenant's trace. The
// baggage is not extracted yet at that point, so it is read from the headers
// here, under the very rules of trustedBaggage: a request it refuses has no
// tenant.
func tenantAttributes(r *http.Request) []attribute.KeyValue {
	tenant, problem := checkTenantHeaders(r.Header)
	if problem != nil {
		return nil
	}
	inbound := baggage.FromContext(propagation.Baggage{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
	if t := filterBaggage(inbound, tenant).Member(tenantKey).Value(); t != "" {
		return []attribute.KeyValue{attribute.String(tenantKey, t)}
	}
	return nil
}

// checkTenantHeaders returns the request's X-Tenant-ID, or the problem to
// refuse the request with: a baggage header larger than W3C Baggage allows,
// or a malformed X-Tenant-ID.
func checkTenantHeaders(h http.Header) (tenant string, problem *httpx.Problem) {
	if n := len(strings.Join(h.Values("baggage"), ",")); n > maxInboundBytes {
		return "", httpx.NewProblem(http.StatusRequestHeaderFieldsTooLarge, "Header too large",
			"the baggage header is larger than W3C Baggage allows",
			httpx.FieldError{Field: "baggage", Reason: fmt.Sprintf("must be at most %d bytes", maxInboundBytes)})
	}
	tenant = h.Get("X-Tenant-ID")
	if tenant != "" && !tenantPattern.MatchString(tenant) {
		return "", httpx.NewProblem(http.StatusBadRequest, "Invalid header", "the tenant header is malformed",
			httpx.FieldError{Field: "X-Tenant-ID", Reason: "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_' or '-', the first a letter or digit"})
	}
	return tenant, nil
}

// filterBaggage keeps the allowed, well-formed members of in (without their
// properties), sets tenant when given, and drops everything if the result
// would exceed maxBaggageBytes.
func filterBaggage(in baggage.Baggage, tenant string) baggage.Baggage {
	var members []baggage.Member
	for _, m := range in.Members() {
		pattern, allowed := baggageAllowlist[m.Key()]
		if !allowed || !pattern.MatchString(m.Value()) || (m.Key() == tenantKey && tenant != "") {
			continue
		}
		if clean, err := baggage.NewMemberRaw(m.Key(), m.Value()); err == nil {
			members = append(members, clean)
		}
	}
	if tenant != "" {
		if m, err := baggage.NewMemberRaw(tenantKey, tenant); err == nil {
			members = append(members, m)
		}
	}
	out, err := baggage.New(members...)
	if err != nil || len(out.String()) > maxBaggageBytes {
		return baggage.Baggage{}
	}
	return out
}
