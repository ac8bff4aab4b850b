package telemetry

import (
	"context"
	"net/http"
	"regexp"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// What a service accepts of the context a caller or a message sends along.
// Baggage and tracestate are stored in the outbox, published to the broker
// and read into span attributes, so each service that receives them applies
// the same policy, not only the gateway: orders' port and the broker can be
// reached without passing through it.
const (
	TenantKey    = "tenant.id"
	RequestIDKey = "request.id"

	// MaxBaggageBytes caps the baggage a service passes on: two short
	// members fit many times over; anything larger is not ours.
	MaxBaggageBytes = 512
	// MaxTraceStateBytes caps the tracestate a span inherits. W3C Trace
	// Context asks every vendor to pass on at least 512 characters (and
	// allows 32 members, which the parser already enforces); a caller's
	// 16 KB would otherwise ride on every span, outbox row and message.
	MaxTraceStateBytes = 512
)

// The values the allowlisted members may take; the gateway refuses an
// X-Tenant-ID or X-Request-ID header that does not match.
var (
	TenantPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	RequestIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

	baggageAllowlist = map[string]*regexp.Regexp{
		TenantKey:    TenantPattern,
		RequestIDKey: RequestIDPattern,
	}
)

// FilterBaggage keeps the allowlisted members of in whose values match their
// pattern, without their properties, and drops everything if the result
// would exceed MaxBaggageBytes.
func FilterBaggage(in baggage.Baggage) baggage.Baggage {
	var members []baggage.Member
	for _, m := range in.Members() {
		pattern, allowed := baggageAllowlist[m.Key()]
		if !allowed || !pattern.MatchString(m.Value()) {
			continue
		}
		if clean, err := baggage.NewMemberRaw(m.Key(), m.Value()); err == nil {
			members = append(members, clean)
		}
	}
	out, err := baggage.New(members...)
	if err != nil || len(out.String()) > MaxBaggageBytes {
		return baggage.Baggage{}
	}
	return out
}

// FilterTraceState returns ts, or an empty tracestate if ts is larger than
// MaxTraceStateBytes. Dropping it whole is what W3C allows a receiver; cutting
// members would need to know which of them matter to whom.
func FilterTraceState(ts trace.TraceState) trace.TraceState {
	if len(ts.String()) > MaxTraceStateBytes {
		return trace.TraceState{}
	}
	return ts
}

// TrustBaggage is HTTP middleware that replaces the baggage of the request's
// context with FilterBaggage's. Install it after HTTPMiddleware, which
// extracts the baggage (and has already capped the tracestate, which the
// SERVER span inherits as it starts).
func TrustBaggage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := FilterBaggage(baggage.FromContext(r.Context()))
		next.ServeHTTP(w, r.WithContext(baggage.ContextWithBaggage(r.Context(), b)))
	})
}

// trustedExtract wraps a propagator so the remote span context it extracts
// carries a tracestate within the policy, or none when dropTraceState is set
// (a new root does not carry the caller's state on). Inject is unchanged.
type trustedExtract struct {
	propagation.TextMapPropagator
	dropTraceState bool
}

func (p trustedExtract) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	ctx = p.TextMapPropagator.Extract(ctx, carrier)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsRemote() || sc.TraceState().Len() == 0 {
		return ctx
	}
	ts := FilterTraceState(sc.TraceState())
	if p.dropTraceState {
		ts = trace.TraceState{}
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc.WithTraceState(ts))
}
