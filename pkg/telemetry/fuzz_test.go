package telemetry

import (
	"context"
	"slices"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// FuzzFilterBaggage: whatever a caller sends, what passes on holds only
// allowlisted members with values of their pattern, within MaxBaggageBytes,
// and filtering it again changes nothing.
func FuzzFilterBaggage(f *testing.F) {
	for _, seed := range []string{
		"tenant.id=acme,request.id=r-1", "tenant.id=%0D%0A%3Cscript%3E", "password=hunter2,tenant.id=acme;p=1",
		"tenant.id=" + string(make([]byte, 600)), "", ",,,=", "tenant.id=a,tenant.id=b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		in, _ := baggage.Parse(header) // a malformed header is no baggage, as the propagator sees it
		out := FilterBaggage(in)
		if n := len(out.String()); n > MaxBaggageBytes {
			t.Fatalf("%d bytes passed on, more than %d", n, MaxBaggageBytes)
		}
		for _, m := range out.Members() {
			pattern, ok := baggageAllowlist[m.Key()]
			if !ok || !pattern.MatchString(m.Value()) || len(m.Properties()) > 0 {
				t.Fatalf("member %q passed on", m.String())
			}
		}
		// Baggage keeps its members in a map: compare them, not their order.
		if again := FilterBaggage(out); !slices.Equal(members(again), members(out)) {
			t.Fatalf("filtering twice: %q, then %q", out.String(), again.String())
		}
	})
}

func members(b baggage.Baggage) []string {
	var out []string
	for _, m := range b.Members() {
		out = append(out, m.String())
	}
	slices.Sort(out)
	return out
}

// FuzzExtractAMQP: whatever headers a publisher sets, extraction never
// panics and hands on only trusted baggage and a capped tracestate.
func FuzzExtractAMQP(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", "tenant.id=acme")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "", "password=hunter2")
	f.Add("garbage", "a=1,b=2", "tenant.id=%0A")
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	f.Fuzz(func(t *testing.T, traceparent, tracestate, bag string) {
		ctx := ExtractAMQP(context.Background(), prop, amqp.Table{
			"traceparent": traceparent, "tracestate": tracestate, "baggage": bag,
		})
		if n := len(trace.SpanContextFromContext(ctx).TraceState().String()); n > MaxTraceStateBytes {
			t.Fatalf("a tracestate of %d bytes came through", n)
		}
		for _, m := range baggage.FromContext(ctx).Members() {
			if pattern, ok := baggageAllowlist[m.Key()]; !ok || !pattern.MatchString(m.Value()) {
				t.Fatalf("member %q came through", m.String())
			}
		}
	})
}
