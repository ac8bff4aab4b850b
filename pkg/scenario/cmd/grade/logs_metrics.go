package main

// Loki and Prometheus (make up): their answers are not traces, but lead to
// traces. A LogQL log query returns lines, each with the trace_id of the
// span that wrote it; a PromQL query's series carry exemplars, each with the
// trace_id of a request it counted. The traces are then read in Tempo.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
)

type loki struct {
	base   string
	client getter
}

var traceIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// queryURL is a LogQL query over the window, newest lines first.
func (l loki) queryURL(logQL string, w window) string {
	q := url.Values{
		"query":     {logQL},
		"start":     {strconv.FormatInt(w.start.UnixNano(), 10)},
		"end":       {strconv.FormatInt(w.end.UnixNano(), 10)},
		"limit":     {"5000"},
		"direction": {"backward"},
	}
	return l.base + "/loki/api/v1/query_range?" + q.Encode()
}

// traceIDs runs a LogQL log query and returns the trace IDs of its lines:
// from the trace_id label or structured metadata, or else the line's JSON.
func (l loki) traceIDs(ctx context.Context, logQL string, w window) ([]string, error) {
	var body lokiResponse
	if err := l.client.getJSON(ctx, l.queryURL(logQL, w), &body); err != nil {
		return nil, fmt.Errorf("loki: %w", err)
	}
	return body.traceIDs()
}

type lokiResponse struct {
	Data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Stream map[string]string `json:"stream"`
			Values [][]any           `json:"values"` // [ns, line] or [ns, line, {structured metadata}]
		} `json:"result"`
	} `json:"data"`
}

func (r lokiResponse) traceIDs() ([]string, error) {
	if r.Data.ResultType != "streams" {
		return nil, fmt.Errorf("this LogQL query returns %s, not log lines: answer with a log query (a selector and filters, no count or rate), whose lines lead to their traces", r.Data.ResultType)
	}
	seen := map[string]bool{}
	for _, res := range r.Data.Result {
		for _, v := range res.Values {
			id := res.Stream["trace_id"]
			if len(v) > 2 {
				if meta, ok := v[2].(map[string]any); ok {
					if s, ok := meta["structuredMetadata"].(map[string]any); ok && s["trace_id"] != nil {
						id = fmt.Sprint(s["trace_id"])
					} else if meta["trace_id"] != nil {
						id = fmt.Sprint(meta["trace_id"])
					}
				}
			}
			if id == "" && len(v) > 1 {
				var line struct {
					TraceID string `json:"trace_id"`
				}
				if s, ok := v[1].(string); ok && json.Unmarshal([]byte(s), &line) == nil {
					id = line.TraceID
				}
			}
			if traceIDPattern.MatchString(id) {
				seen[id] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

type prometheus struct {
	base   string
	client getter
}

// exemplarTraces checks that a PromQL query runs, then returns the trace IDs
// of the exemplars of its series over the window.
func (p prometheus) exemplarTraces(ctx context.Context, promQL string, w window) ([]string, error) {
	var check struct {
		Status string `json:"status"`
	}
	q := url.Values{"query": {promQL}, "time": {strconv.FormatInt(w.end.Unix(), 10)}}
	if err := p.client.getJSON(ctx, p.base+"/api/v1/query?"+q.Encode(), &check); err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	q = url.Values{"query": {promQL}, "start": {strconv.FormatInt(w.start.Unix(), 10)}, "end": {strconv.FormatInt(w.end.Unix(), 10)}}
	var body exemplarResponse
	if err := p.client.getJSON(ctx, p.base+"/api/v1/query_exemplars?"+q.Encode(), &body); err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	return body.traceIDs(), nil
}

type exemplarResponse struct {
	Data []struct {
		Exemplars []struct {
			Labels map[string]string `json:"labels"`
		} `json:"exemplars"`
	} `json:"data"`
}

func (r exemplarResponse) traceIDs() []string {
	seen := map[string]bool{}
	for _, series := range r.Data {
		for _, e := range series.Exemplars {
			for _, key := range []string{"trace_id", "traceID", "trace.id"} {
				if id := e.Labels[key]; id != "" {
					seen[normalID(id)] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
