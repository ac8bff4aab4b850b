package main

// Tempo (make up): a TraceQL answer is run by /api/search, and each trace
// is read whole by /api/v2/traces/<id>, in OTLP's JSON.

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario/signature"
)

type tempo struct {
	base   string
	client getter
}

// searchURL is the search of a TraceQL query over the window, for at most
// limit traces (the window's, when 0).
func (t tempo) searchURL(traceQL string, w window, limit int) string {
	if limit == 0 {
		limit = w.traces
	}
	q := url.Values{
		"q":     {traceQL},
		"start": {strconv.FormatInt(w.start.Unix(), 10)},
		"end":   {strconv.FormatInt(w.end.Unix()+1, 10)},
		"limit": {strconv.Itoa(limit)},
		"spss":  {"1"}, // the trace IDs are the answer, not its spans
	}
	return t.base + "/api/search?" + q.Encode()
}

// searchIDs runs a TraceQL query and returns the IDs of the traces it found.
func (t tempo) searchIDs(ctx context.Context, traceQL string, w window, limit int) ([]string, error) {
	var body struct {
		Traces []struct {
			TraceID string `json:"traceID"`
		} `json:"traces"`
	}
	if err := t.client.getJSON(ctx, t.searchURL(traceQL, w, limit), &body); err != nil {
		return nil, fmt.Errorf("tempo: %w", err)
	}
	out := make([]string, 0, len(body.Traces))
	for _, tr := range body.Traces {
		out = append(out, normalID(tr.TraceID))
	}
	return out, nil
}

// trace reads one trace whole (nil when Tempo has none).
func (t tempo) trace(ctx context.Context, id string) (signature.Trace, error) {
	var body struct {
		Trace otlpTrace `json:"trace"`
	}
	err := t.client.getJSON(ctx, t.base+"/api/v2/traces/"+id, &body)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tempo: %w", err)
	}
	return body.Trace.convert(), nil
}

// window reads the window's most recent traces that pass through orders or
// fulfillment, eight at a time.
func (t tempo) window(ctx context.Context, w window) ([]signature.Trace, error) {
	ids, err := t.searchIDs(ctx, `{ resource.service.name = "orders" || resource.service.name = "fulfillment" }`, w, 0)
	if err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		out   []signature.Trace
		first error
		wg    sync.WaitGroup
		slots = make(chan struct{}, 8)
	)
	for _, id := range ids {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			tr, err := t.trace(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			if len(tr) > 0 {
				out = append(out, tr)
			}
		})
	}
	wg.Wait()
	return out, first
}

// otlpTrace is a trace in OTLP's JSON, as Tempo writes it: IDs in base64
// (or hex), kinds and status codes as names or numbers, integers as strings.
type otlpTrace struct {
	ResourceSpans []struct {
		Resource struct {
			Attributes []otlpKV `json:"attributes"`
		} `json:"resource"`
		ScopeSpans []struct {
			Spans []struct {
				TraceID           string   `json:"traceId"`
				SpanID            string   `json:"spanId"`
				ParentSpanID      string   `json:"parentSpanId"`
				Name              string   `json:"name"`
				Kind              flexible `json:"kind"`
				StartTimeUnixNano flexible `json:"startTimeUnixNano"`
				EndTimeUnixNano   flexible `json:"endTimeUnixNano"`
				Attributes        []otlpKV `json:"attributes"`
				Status            struct {
					Code flexible `json:"code"`
				} `json:"status"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type otlpKV struct {
	Key   string         `json:"key"`
	Value map[string]any `json:"value"` // stringValue, intValue, boolValue, doubleValue, ...
}

func (kv otlpKV) String() string {
	for _, v := range kv.Value {
		return fmt.Sprint(v)
	}
	return ""
}

// flexible is a JSON value written as a number or a string: OTLP's JSON
// writes 64-bit integers as strings, and Tempo writes enums as names.
type flexible string

func (f *flexible) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*f = flexible(s)
		return nil
	}
	*f = flexible(strings.TrimSpace(string(b)))
	return nil
}

var kinds = map[string]signature.Kind{
	"1": signature.Internal, "2": signature.Server, "3": signature.Client, "4": signature.Producer, "5": signature.Consumer,
	"SPAN_KIND_INTERNAL": signature.Internal, "SPAN_KIND_SERVER": signature.Server, "SPAN_KIND_CLIENT": signature.Client,
	"SPAN_KIND_PRODUCER": signature.Producer, "SPAN_KIND_CONSUMER": signature.Consumer,
}

func (o otlpTrace) convert() signature.Trace {
	var out signature.Trace
	for _, rs := range o.ResourceSpans {
		service := ""
		for _, kv := range rs.Resource.Attributes {
			if kv.Key == "service.name" {
				service = kv.String()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := signature.Span{
					TraceID: otlpID(s.TraceID), SpanID: otlpID(s.SpanID), ParentID: otlpID(s.ParentSpanID),
					Service: service, Name: s.Name, Kind: kinds[string(s.Kind)], Attrs: map[string]string{},
					Start: unixNano(s.StartTimeUnixNano), End: unixNano(s.EndTimeUnixNano),
					Error: s.Status.Code == "2" || s.Status.Code == "STATUS_CODE_ERROR",
				}
				if sp.Kind == "" {
					sp.Kind = signature.Internal
				}
				for _, kv := range s.Attributes {
					sp.Attrs[kv.Key] = kv.String()
				}
				out = append(out, sp)
			}
		}
	}
	return out
}

// otlpID is an ID of OTLP's JSON in lower-case hex: Tempo writes base64
// (the protobuf mapping), the OTLP spec hex.
func otlpID(id string) string {
	if id == "" {
		return ""
	}
	if _, err := hex.DecodeString(id); err == nil && (len(id) == 16 || len(id) == 32) {
		return strings.ToLower(id)
	}
	if b, err := base64.StdEncoding.DecodeString(id); err == nil {
		return hex.EncodeToString(b)
	}
	return strings.ToLower(id)
}

func unixNano(n flexible) time.Time {
	v, _ := strconv.ParseInt(string(n), 10, 64)
	return time.Unix(0, v)
}
