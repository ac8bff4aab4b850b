package telemetry

import (
	"context"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

var testPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func TestAMQPCarrierRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	member, _ := baggage.NewMemberRaw("tenant.id", "acme")
	bag, _ := baggage.New(member)
	ctx := baggage.ContextWithBaggage(trace.ContextWithSpanContext(context.Background(), sc), bag)

	headers := InjectAMQP(ctx, testPropagator, nil)
	if got, want := headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got != want {
		t.Errorf("traceparent header = %v, want %s", got, want)
	}

	out := ExtractAMQP(context.Background(), testPropagator, headers)
	got := trace.SpanContextFromContext(out)
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() || !got.IsSampled() {
		t.Errorf("extracted span context = %+v, want remote, sampled %s/%s", got, sc.TraceID(), sc.SpanID())
	}
	if v := baggage.FromContext(out).Member("tenant.id").Value(); v != "acme" {
		t.Errorf("extracted tenant.id = %q, want acme", v)
	}
}

func TestAMQPCarrierOddHeaders(t *testing.T) {
	tests := []struct {
		name    string
		headers amqp.Table
		want    string // trace ID found, "" for none
	}{
		{"nil table", nil, ""},
		{"no headers", amqp.Table{}, ""},
		{"traceparent as bytes", amqp.Table{"traceparent": []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}, "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"traceparent as int", amqp.Table{"traceparent": int32(42)}, ""},
		{"traceparent as nil", amqp.Table{"traceparent": nil}, ""},
		{"traceparent as table", amqp.Table{"traceparent": amqp.Table{"a": "b"}}, ""},
		{"traceparent as list", amqp.Table{"traceparent": []any{"x"}}, ""},
		{"malformed traceparent", amqp.Table{"traceparent": "00-zz-yy-01"}, ""},
		{"baggage as float", amqp.Table{"baggage": 3.5}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ExtractAMQP(context.Background(), testPropagator, tt.headers) // must not panic
			sc := trace.SpanContextFromContext(ctx)
			got := ""
			if sc.IsValid() {
				got = sc.TraceID().String()
			}
			if got != tt.want {
				t.Errorf("extracted trace ID = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAMQPCarrierNilSetAndKeys(t *testing.T) {
	var c AMQPCarrier
	c.Set("traceparent", "x") // a nil carrier ignores writes instead of panicking
	if len(c.Keys()) != 0 || c.Get("traceparent") != "" {
		t.Errorf("nil carrier holds %v, want nothing", c.Keys())
	}
	c = AMQPCarrier{"a": "1", "b": int64(2)}
	if got := len(c.Keys()); got != 2 {
		t.Errorf("Keys() has %d names, want 2", got)
	}
	// Injecting into an existing table keeps what was there.
	headers := InjectAMQP(context.Background(), testPropagator, amqp.Table{"x-custom": "kept"})
	if headers["x-custom"] != "kept" {
		t.Errorf("InjectAMQP dropped an existing header: %v", headers)
	}
}

func TestAMQPPeerAttributes(t *testing.T) {
	attrs := AMQPPeerAttributes("amqp://guest:secret@rabbit.local:5673/vhost")
	if len(attrs) != 2 || attrs[0].Value.AsString() != "rabbit.local" || attrs[1].Value.AsInt64() != 5673 {
		t.Errorf("attributes = %v, want server.address rabbit.local and server.port 5673", attrs)
	}
	for _, a := range attrs {
		if a.Value.String() == "secret" || a.Value.String() == "guest" {
			t.Errorf("attribute %s leaks a credential", a.Key)
		}
	}
}
