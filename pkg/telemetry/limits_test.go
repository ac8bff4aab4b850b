package telemetry

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// limitVars are every variable that sets an attribute value length limit;
// each test starts with all of them unset (empty is unset, for the SDK too).
var limitVars = []string{
	"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
	"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
	"OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
}

func TestSpanAttributeValueLengthLimit(t *testing.T) {
	huge := strings.Repeat("a", 60_000) // a 60 KB User-Agent
	tests := []struct {
		name string
		env  map[string]string
		want int
	}{
		{"default", nil, DefaultAttributeValueLengthLimit},
		{"general variable", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100"}, 100},
		{"span variable wins", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "50"}, 50},
		{"no limit", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-1"}, len(huge)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_EXPORTER", "console") // a recording SDK
			t.Setenv("OTEL_METRICS_EXPORTER", "none")
			t.Setenv("OTEL_LOGS_EXPORTER", "none")
			for _, name := range limitVars {
				t.Setenv(name, tt.env[name])
			}
			tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "limits", LogOutput: &strings.Builder{}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = shutdown(t.Context()) })
			// The recorder sees each ended span as the exporter does.
			rec := tracetest.NewSpanRecorder()
			tel.TracerProvider.(*sdktrace.TracerProvider).RegisterSpanProcessor(rec)

			_, span := tel.Tracer("t").Start(t.Context(), "GET /")
			span.SetAttributes(attribute.String("user_agent.original", huge))
			span.End()

			ended := rec.Ended()
			if len(ended) != 1 {
				t.Fatalf("recorded %d spans, want 1", len(ended))
			}
			got := -1
			for _, a := range ended[0].Attributes() {
				if a.Key == "user_agent.original" {
					got = len(a.Value.AsString())
				}
			}
			if got != tt.want {
				t.Errorf("exported a user_agent.original of %d characters, want %d", got, tt.want)
			}
		})
	}
}

func TestLogAttributeValueLengthLimit(t *testing.T) {
	logVars := []string{"OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"}
	tests := []struct {
		name string
		env  map[string]string
		want int
	}{
		{"default", nil, DefaultAttributeValueLengthLimit},
		{"general variable", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100"}, 100},
		{"log variable wins", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "50"}, 50},
		{"span variable is not for logs", map[string]string{"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "50"}, DefaultAttributeValueLengthLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range limitVars {
				t.Setenv(name, tt.env[name])
			}
			got, err := attributeValueLengthLimit(logVars...)
			if err != nil || got != tt.want {
				t.Errorf("attributeValueLengthLimit() = %d, %v, want %d", got, err, tt.want)
			}
		})
	}
}

func TestSetupRefusesALimitThatIsNotANumber(t *testing.T) {
	for _, signal := range []string{"TRACES", "LOGS"} {
		t.Run(signal, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_EXPORTER", "none")
			t.Setenv("OTEL_METRICS_EXPORTER", "none")
			t.Setenv("OTEL_LOGS_EXPORTER", "none")
			t.Setenv("OTEL_"+signal+"_EXPORTER", "console") // only this signal reads the limit
			for _, name := range limitVars {
				t.Setenv(name, "")
			}
			t.Setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4k")
			_, shutdown, err := Setup(t.Context(), Options{ServiceName: "limits", LogOutput: &strings.Builder{}})
			if err == nil {
				_ = shutdown(t.Context())
				t.Fatal("Setup accepted OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=4k")
			}
			if !strings.Contains(err.Error(), "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT") {
				t.Errorf("Setup() error = %v, want one naming the variable", err)
			}
		})
	}
}
