package e2e

// Finding the spans of a trace and asserting on them: the span kinds, find
// and named, waitTrace and the spanKey it waits for, wantAttrs and
// hasException, the values planted where no span may carry them (allValues
// lists what a span carries), and randomHex for trace and span IDs. The
// in-test OTLP receiver and its span are in receiver_test.go.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

const (
	server      = tracepb.Span_SPAN_KIND_SERVER
	client      = tracepb.Span_SPAN_KIND_CLIENT
	internal    = tracepb.Span_SPAN_KIND_INTERNAL
	producer    = tracepb.Span_SPAN_KIND_PRODUCER
	consumer    = tracepb.Span_SPAN_KIND_CONSUMER
	statusError = tracepb.Status_STATUS_CODE_ERROR
)

// find returns the one span of spans matching service, kind and name.
func find(t *testing.T, spans []span, service string, kind tracepb.Span_SpanKind, name string) span {
	t.Helper()
	var found []span
	for _, s := range spans {
		if s.Service == service && s.Kind == kind && s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %d %s %s spans named %q, want 1; trace:\n%s", len(found), service, kind, name, tree(spans))
	}
	return found[0]
}

func named(spans []span, service, name string) []span {
	var out []span
	for _, sp := range spans {
		if sp.Service == service && sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

// spanKey names one span of a trace, as find looks it up.
type spanKey struct {
	service string
	kind    tracepb.Span_SpanKind
	name    string
}

func (k spanKey) String() string { return k.service + " " + k.kind.String() + " " + k.name }

// waitTrace waits until the trace holds every span of want, and returns the
// trace. Wait for what ends last in each service (its SERVER or CONSUMER
// span): a service exports its spans in the order they ended, so their
// children have arrived with them.
func waitTrace(t *testing.T, r *receiver, traceID string, want ...spanKey) []span {
	t.Helper()
	var (
		spans   []span
		missing []spanKey
	)
	err := poll(patience, func() (bool, error) {
		spans, missing = r.Trace(traceID), nil
		for _, k := range want {
			if !slices.ContainsFunc(spans, func(s span) bool { return s.Service == k.service && s.Kind == k.kind && s.Name == k.name }) {
				missing = append(missing, k)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		t.Fatalf("trace %s: after %s, still no %v; it holds:\n%s", traceID, patience, missing, tree(spans))
	}
	return spans
}

func wantAttrs(t *testing.T, s span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := s.Attrs[k]
		switch {
		case !ok:
			t.Errorf("%s %q: attribute %s missing", s.Service, s.Name, k)
		case v != "*" && got != v:
			t.Errorf("%s %q: %s = %q, want %q", s.Service, s.Name, k, got, v)
		}
	}
}

func hasException(sp span, text string) bool {
	for _, e := range sp.Events {
		if e.Name == "exception" && strings.Contains(e.Attrs["exception.message"], text) {
			return true
		}
	}
	return false
}

// Values planted where they must never leak into telemetry: a quantity that
// travels as an SQL parameter, a stock level that lives only as a Redis
// value, and a card number sent (and refused) in a request body.
const (
	plantedQuantity   = 7331
	plantedRedisValue = "9907331"
	plantedCard       = "4242424242424242"
)

// allValues lists every attribute and event attribute value of s.
func allValues(s span) []string {
	var out []string
	for k, v := range s.Attrs {
		out = append(out, k+"="+v)
	}
	for _, e := range s.Events {
		for k, v := range e.Attrs {
			out = append(out, e.Name+"."+k+"="+v)
		}
	}
	return out
}

func randomHex(bytes int) string {
	b := make([]byte, bytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// jaegerSpans reads one trace from Jaeger's query API (query: its base URL)
// as the service and name of each span; nil, without error, while Jaeger
// does not hold it yet.
func jaegerSpans(query, traceID string) ([]spanKey, error) {
	resp, err := testClient.Get(query + "/api/traces/" + traceID)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	var body struct {
		Data []struct {
			Spans []struct {
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data) == 0 {
		return nil, err
	}
	spans := make([]spanKey, len(body.Data[0].Spans))
	for i, s := range body.Data[0].Spans {
		spans[i] = spanKey{service: body.Data[0].Processes[s.ProcessID].ServiceName, name: s.OperationName}
	}
	return spans, nil
}
