package main

// The native demo's backend: Jaeger v2's HTTP query API, the one its trace
// page reads. A student's answer there is a Jaeger search, written as
// key=value words (see parseSearch); the grader reads the window's traces
// from the same API.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario/signature"
)

// jaeger asks Jaeger's HTTP API at base.
type jaeger struct {
	base   string
	client getter
}

// The words of a Jaeger search that are not tags.
var searchFields = map[string]bool{"service": true, "operation": true, "minDuration": true, "maxDuration": true, "limit": true}

// parseSearch reads a Jaeger search written as words:
//
//	service=orders operation=order.charge_payment error=true minDuration=500ms
//
// service, operation, minDuration, maxDuration and limit are the search
// form's fields; every other key=value is a tag the span must carry (its
// attributes, error=true for a span with status ERROR). A value with spaces
// is quoted: operation="process orders:order.created:fulfillment.order-created".
func parseSearch(answer string) (url.Values, error) {
	q := url.Values{}
	tags := map[string]string{}
	words, err := splitWords(answer)
	if err != nil {
		return nil, err
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value: write a Jaeger search as words such as service=orders operation=order.process error=true", w)
		}
		switch {
		case searchFields[k]:
			if k == "minDuration" || k == "maxDuration" {
				if _, err := time.ParseDuration(v); err != nil {
					return nil, fmt.Errorf("%s=%s: write a duration such as 500ms or 1.5s", k, v)
				}
			}
			q.Set(k, v)
		default:
			tags[k] = v
		}
	}
	if q.Get("service") == "" {
		return nil, fmt.Errorf("a Jaeger search needs service=<gateway, orders or fulfillment>, as its search form does")
	}
	if len(tags) > 0 {
		b, _ := json.Marshal(tags)
		q.Set("tags", string(b))
	}
	return q, nil
}

// splitWords splits on spaces, keeping a double-quoted part of a word whole
// (without its quotes).
func splitWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("a double quote is not closed in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// search runs a search of the window and returns its traces.
//
// error=true is the one tag Jaeger cannot be asked for: its HTTP API hands
// every tag to the memory store as text, and the store reads error as a
// boolean, so error=true matches only spans whose status is OK. The grader
// asks Jaeger without it, then keeps the traces where one span meets every
// condition and has status ERROR, as the search means.
func (j jaeger) search(ctx context.Context, q url.Values, w window) ([]signature.Trace, error) {
	q = cloneValues(q)
	var tags map[string]string
	wantError := ""
	if raw := q.Get("tags"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &tags); err != nil {
			return nil, err
		}
		if v, ok := tags["error"]; ok {
			wantError = v
			delete(tags, "error")
			q.Del("tags")
			if len(tags) > 0 {
				b, _ := json.Marshal(tags)
				q.Set("tags", string(b))
			}
		}
	}
	q.Set("start", strconv.FormatInt(w.start.UnixMicro(), 10))
	q.Set("end", strconv.FormatInt(w.end.UnixMicro(), 10))
	if q.Get("limit") == "" {
		q.Set("limit", strconv.Itoa(w.traces))
	}
	var body jaegerResponse
	if err := j.client.getJSON(ctx, j.base+"/api/traces?"+q.Encode(), &body); err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	if wantError == "" {
		return body.traces(), nil
	}
	var kept []signature.Trace
	for _, t := range body.traces() {
		if slices.ContainsFunc(t, func(s signature.Span) bool { return spanMeets(s, q, tags, wantError == "true") }) {
			kept = append(kept, t)
		}
	}
	return kept, nil
}

// spanMeets reports whether a span meets every condition of a search, its
// status among them.
func spanMeets(s signature.Span, q url.Values, tags map[string]string, wantError bool) bool {
	if s.Error != wantError || s.Service != q.Get("service") || (q.Get("operation") != "" && s.Name != q.Get("operation")) {
		return false
	}
	if d, err := time.ParseDuration(q.Get("minDuration")); err == nil && s.Duration() < d {
		return false
	}
	if d, err := time.ParseDuration(q.Get("maxDuration")); err == nil && s.Duration() > d {
		return false
	}
	for k, v := range tags {
		if s.Attrs[k] != v {
			return false
		}
	}
	return true
}

// trace reads one trace by its ID (nil when Jaeger has none).
func (j jaeger) trace(ctx context.Context, id string) (signature.Trace, error) {
	var body jaegerResponse
	err := j.client.getJSON(ctx, j.base+"/api/traces/"+id, &body)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	ts := body.traces()
	if len(ts) == 0 {
		return nil, nil
	}
	return ts[0], nil
}

// window returns the traces of the window that pass through orders or
// fulfillment: every order's trace.
func (j jaeger) window(ctx context.Context, w window) ([]signature.Trace, error) {
	var all []signature.Trace
	for _, service := range []string{"orders", "fulfillment"} {
		ts, err := j.search(ctx, url.Values{"service": {service}}, w)
		if err != nil {
			return nil, err
		}
		all = append(all, ts...)
	}
	return all, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// jaegerResponse is the answer of /api/traces, shortened to what a
// signature reads.
type jaegerResponse struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			TraceID       string `json:"traceID"`
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			StartTime int64      `json:"startTime"` // microseconds
			Duration  int64      `json:"duration"`
			Tags      []jaegerKV `json:"tags"`
			ProcessID string     `json:"processID"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
	Errors []struct {
		Msg string `json:"msg"`
	} `json:"errors"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// traces converts Jaeger's traces: the span kind, the status and the
// attributes are tags there (span.kind, error or otel.status_code).
func (r jaegerResponse) traces() []signature.Trace {
	var out []signature.Trace
	for _, d := range r.Data {
		var t signature.Trace
		for _, s := range d.Spans {
			sp := signature.Span{
				TraceID: normalID(s.TraceID), SpanID: s.SpanID, Service: d.Processes[s.ProcessID].ServiceName,
				Name: s.OperationName, Kind: signature.Internal, Attrs: map[string]string{},
				Start: time.UnixMicro(s.StartTime), End: time.UnixMicro(s.StartTime + s.Duration),
			}
			for _, ref := range s.References {
				if ref.RefType == "CHILD_OF" {
					sp.ParentID = ref.SpanID
					break
				}
			}
			for _, kv := range s.Tags {
				v := fmt.Sprint(kv.Value)
				switch kv.Key {
				case "span.kind":
					sp.Kind = signature.Kind(v)
				case "error":
					sp.Error = sp.Error || v == "true"
				case "otel.status_code":
					sp.Error = sp.Error || v == "ERROR"
				default:
					sp.Attrs[kv.Key] = v
				}
			}
			t = append(t, sp)
		}
		if len(t) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// normalID is a trace ID as the grader compares them: lower-case hex, 32
// digits (Jaeger drops leading zeros).
func normalID(id string) string {
	id = strings.ToLower(id)
	if len(id) < 32 {
		id = strings.Repeat("0", 32-len(id)) + id
	}
	return id
}
