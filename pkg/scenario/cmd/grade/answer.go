package main

// Which backend an answer is for, from its form, and the one HTTP client
// every backend is asked through.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
)

var (
	traceIDList = regexp.MustCompile(`^([0-9a-fA-F]{16,32}[\s,]*)+$`)
	// TraceQL's own words inside its braces: scoped attributes, intrinsics,
	// span-set operators; LogQL's selectors have plain label names.
	traceQLWords  = regexp.MustCompile(`\b(span|resource|event|link|instrumentation)\.|&&|\|\||\b(name|status|duration|kind|rootName|rootServiceName|traceDuration|statusMessage)\s*(=|!=|>|<|=~|!~)|\}\s*(>>?|<<?|~|&&|\|\|)\s*\{|\|\s*(select|count|avg|max|min|sum|by)\b`)
	jaegerWord    = regexp.MustCompile(`^[A-Za-z_][\w.]*=`)
	jaegerService = regexp.MustCompile(`(^|\s)service=`)
)

// backendOf tells from an answer's form which backend it is for: trace IDs;
// braces with TraceQL's words (Tempo) or a stream selector (Loki); key=value
// words with a service (a Jaeger search); anything else is PromQL.
func backendOf(answer string) string {
	a := strings.TrimSpace(answer)
	switch {
	case traceIDList.MatchString(a):
		return "traceids"
	case strings.HasPrefix(a, "{") && traceQLWords.MatchString(a):
		return "tempo"
	case strings.HasPrefix(a, "{"):
		return "loki"
	case jaegerService.MatchString(a) && jaegerWord.MatchString(a) && !strings.ContainsAny(a, "({}"):
		return "jaeger"
	}
	return "prometheus"
}

// getter asks the backends' HTTP APIs.
type getter struct{ http *http.Client }

func newGetter() getter { return getter{http: &http.Client{Timeout: 60 * time.Second}} }

// getJSON decodes the JSON answer of a GET into out (numbers kept as
// written). A 404 is errNotFound; another status, an error with the body.
func (g getter) getJSON(ctx context.Context, url string, out any) error {
	return g.getJSONHeader(ctx, url, nil, out)
}

func (g getter) getJSONHeader(ctx context.Context, url string, header http.Header, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := g.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is it running? make up, or make demo)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", url, errNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the query was refused (%s): %s", resp.Status, bytes.TrimSpace(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(out)
}

// reachable asks url once: nil when it answers 200.
func (g getter) reachable(ctx context.Context, url string) error {
	var discard any
	return g.getJSON(ctx, url, &discard)
}
