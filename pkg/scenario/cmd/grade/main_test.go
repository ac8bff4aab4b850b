package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestBackendOf(t *testing.T) {
	tests := map[string]string{
		`{ span.error.type = "payment_declined" }`:                                          "tempo",
		`{ name = "order.charge_payment" && status = error }`:                               "tempo",
		`{ resource.service.name = "gateway" && duration > 500ms }`:                         "tempo",
		`{ name = "order.calculate_pricing" } > { name = "SELECT products" } | count() > 1`: "tempo",
		`{service_name="fulfillment"} |= "dead-lettered"`:                                   "loki",
		`{service_name="orders"} | json | level="ERROR"`:                                    "loki",
		`sum(rate(traces_span_metrics_calls_total{status_code="STATUS_CODE_ERROR"}[1m]))`:   "prometheus",
		`service=orders operation=order.charge_payment error=true`:                          "jaeger",
		`service=orders operation="order.process 0193" minDuration=500ms`:                   "jaeger",
		`4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b74bf92f3577b34da6`:                 "traceids",
		`4bf92f3577b34da6a3ce929d0e0e4736,00f067aa0ba902b74bf92f3577b34da6`:                 "traceids",
	}
	for answer, want := range tests {
		if got := backendOf(answer); got != want {
			t.Errorf("backendOf(%q) = %s, want %s", answer, got, want)
		}
	}
}

func TestParseSearch(t *testing.T) {
	q, err := parseSearch(`service=fulfillment operation="process orders:order.created:fulfillment.order-created" fulfillment.dead_lettered=true minDuration=1ms`)
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{
		"service":     {"fulfillment"},
		"operation":   {"process orders:order.created:fulfillment.order-created"},
		"minDuration": {"1ms"},
		"tags":        {`{"fulfillment.dead_lettered":"true"}`},
	}
	if q.Encode() != want.Encode() {
		t.Errorf("got %v, want %v", q, want)
	}
	for _, bad := range []string{`operation=order.process`, `service=orders minDuration=fast`, `service=orders oops`, `service="orders`} {
		if _, err := parseSearch(bad); err == nil {
			t.Errorf("parseSearch(%q) accepted it", bad)
		}
	}
}

// Tempo's answers, in the shape of its HTTP API (/api/search and
// /api/v2/traces/<id>): IDs in base64 inside a trace, kinds and status codes
// as names, 64-bit integers as strings. Written by hand after that API; no
// Tempo runs in this suite's tests.
const (
	declinedID = "4bf92f3577b34da6a3ce929d0e0e4736"
	okID       = "00f067aa0ba902b74bf92f3577b34da6"
)

func tempoTrace(traceB64, status, errorType string) string {
	return fmt.Sprintf(`{"trace":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}}]},
	"scopeSpans":[{"scope":{"name":"orders"},"spans":[
	{"traceId":%[1]q,"spanId":"AAAAAAAAAAE=","name":"order.process","kind":"SPAN_KIND_INTERNAL",
	 "startTimeUnixNano":"1767322800000000000","endTimeUnixNano":"1767322800100000000",
	 "attributes":[{"key":"tenant.id","value":{"stringValue":"acme"}},{"key":"order.item_count","value":{"intValue":"2"}}]},
	{"traceId":%[1]q,"spanId":"AAAAAAAAAAI=","parentSpanId":"AAAAAAAAAAE=","name":"order.charge_payment","kind":"SPAN_KIND_CLIENT",
	 "startTimeUnixNano":"1767322800050000000","endTimeUnixNano":"1767322800075000000",
	 "attributes":[{"key":"error.type","value":{"stringValue":%[3]q}}],"status":{"code":%[2]q}}]}]}]}}`, traceB64, status, errorType)
}

func fakeBackends(t *testing.T, got *[]string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/search", func(w http.ResponseWriter, r *http.Request) {
		*got = append(*got, r.URL.RawQuery)
		switch q := r.URL.Query().Get("q"); {
		case strings.Contains(q, "payment_declined"):
			fmt.Fprintf(w, `{"traces":[{"traceID":%q,"rootServiceName":"gateway","rootTraceName":"POST /api/orders","durationMs":120}],"metrics":{"inspectedTraces":2}}`, declinedID)
		default: // the window, and a query that returns every charge
			fmt.Fprintf(w, `{"traces":[{"traceID":%q},{"traceID":"f067aa0ba902b74bf92f3577b34da6"}],"metrics":{"inspectedTraces":2}}`, declinedID)
		}
	})
	mux.HandleFunc("GET /api/v2/traces/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case declinedID:
			fmt.Fprint(w, tempoTrace("S/kvNXezTaajzpKdDg5HNg==", "STATUS_CODE_ERROR", "payment_declined"))
		case okID:
			fmt.Fprint(w, tempoTrace("APBnqgupArdL+S81d7NNpg==", "STATUS_CODE_UNSET", ""))
		default:
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("GET /loki/api/v1/query_range", func(w http.ResponseWriter, r *http.Request) {
		*got = append(*got, r.URL.RawQuery)
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"streams","result":[
			{"stream":{"service_name":"orders","trace_id":%q},"values":[["1767322800075000000","{\"msg\":\"payment declined\"}"]]},
			{"stream":{"service_name":"orders"},"values":[["1767322800075000000","{\"msg\":\"order placed\",\"trace_id\":\"%s\"}"]]}]}}`, declinedID, okID)
	})
	mux.HandleFunc("GET /api/v1/query", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	mux.HandleFunc("GET /api/v1/query_exemplars", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"status":"success","data":[{"seriesLabels":{"span_name":"order.charge_payment"},
			"exemplars":[{"labels":{"trace_id":%q},"value":"0.025","timestamp":1767322800.075}]}]}`, declinedID)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestGradeTempoLokiPrometheus(t *testing.T) {
	var queries []string
	srv := fakeBackends(t, &queries)
	tests := []struct {
		answer string
		code   int
		says   string
	}{
		{`{ span.error.type = "payment_declined" }`, 0, "Pass: your query returns the 1 trace of the last 15m"},
		{`{ name = "order.charge_payment" }`, 1, "Your query also returns 1 trace without a failed payment (for example " + okID + "): add a condition on the span's status."},
		{`{service_name="orders"} |= "payment"`, 1, "also returns 1 trace without a failed payment"},
		{`sum(rate(traces_span_metrics_calls_total{span_name="order.charge_payment"}[1m]))`, 0, "every one behind your query shows the incident"},
	}
	for _, tt := range tests {
		var out, errs bytes.Buffer
		code := run(context.Background(), []string{"-lab", "10", "-q", tt.answer,
			"-tempo", srv.URL, "-loki", srv.URL, "-prometheus", srv.URL}, &out, &errs)
		if code != tt.code || !strings.Contains(out.String(), tt.says) {
			t.Errorf("%s: exit %d, want %d; said\n%s%s\nwant it to say %q", tt.answer, code, tt.code, out.String(), errs.String(), tt.says)
		}
	}
	// The TraceQL search asks for the window in seconds, and one span per set.
	q, _ := url.ParseQuery(queries[0])
	start, _ := time.ParseDuration(q.Get("end") + "s")
	end, _ := time.ParseDuration(q.Get("start") + "s")
	if q.Get("q") != `{ span.error.type = "payment_declined" }` || q.Get("spss") != "1" || q.Get("limit") != "500" || start-end < 15*time.Minute {
		t.Errorf("Tempo search %v: want the query, spss=1, limit=500, 15 minutes", q)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"-lab", "9", "-q", "x"}, {"-lab", "10"}, {"-lab", "10", "-q", "x", "-since", "soon"}} {
		var out, errs bytes.Buffer
		if code := run(context.Background(), args, &out, &errs); code != 2 || errs.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a usage line", args, code, errs.String())
		}
	}
	if got := readable(15 * time.Minute); got != "15m" {
		t.Errorf("readable(15m) = %s", got)
	}
	if got := readable(30 * time.Second); got != "30s" {
		t.Errorf("readable(30s) = %s", got)
	}
}
