// Command grade checks a student's answer to a workshop incident (make
// grade): it runs the student's query against the running stack, reads the
// recent traces from the same place, and says whether the query returns the
// traces that show the incident and nothing else, with a hint when it does
// not. What "show the incident" means is pkg/scenario/signature, the
// definition e2e/scenarios_test.go asserts against the real services.
//
//	grade -lab 10 -q '{ span.error.type = "payment_declined" }'    TraceQL, against Tempo (make up)
//	grade -lab 16 -q '{service_name="fulfillment"} |= "..."'      LogQL, against Loki; the lines' trace_id, read in Tempo
//	grade -lab 10 -q 'sum(rate(...))'                              PromQL, against Prometheus: its exemplars' traces, in Tempo
//	grade -lab 10 -q 'service=orders operation=... error=true'     a Jaeger search (make demo)
//	grade -lab 18 -q '<trace id> <trace id> ...'                   trace IDs, read in Jaeger or else Tempo
//
// The backend follows from the answer's form, or from -backend (tempo, loki,
// prometheus, jaeger, traceids). Everything it asks is on localhost: nothing
// leaves the machine. It exits 0 on a pass, 1 when the answer is not there
// yet, 2 when it could not grade.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario/signature"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what one grading needs.
type config struct {
	answer  string
	backend string
	since   time.Duration
	traces  int // at most this many traces of the window are read
	urls    backends
}

type backends struct{ jaeger, tempo, loki, prometheus string }

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("grade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	lab := fs.String("lab", "", "the incident's lab: 10 to 18")
	fs.StringVar(&c.answer, "q", "", "your answer: a TraceQL, LogQL or PromQL query, a Jaeger search, or trace IDs")
	fs.StringVar(&c.backend, "backend", "", "tempo, loki, prometheus, jaeger or traceids (default: from the answer's form)")
	since := fs.String("since", "15m", "how far back the traces of the window go")
	fs.IntVar(&c.traces, "traces", 500, "read at most this many traces of the window")
	fs.StringVar(&c.urls.jaeger, "jaeger", envOr("JAEGER_URL", "http://localhost:16686"), "Jaeger's query API")
	fs.StringVar(&c.urls.tempo, "tempo", envOr("TEMPO_URL", "http://localhost:3200"), "Tempo's API")
	fs.StringVar(&c.urls.loki, "loki", envOr("LOKI_URL", "http://localhost:3100"), "Loki's API")
	fs.StringVar(&c.urls.prometheus, "prometheus", envOr("PROMETHEUS_URL", "http://localhost:9090"), "Prometheus's API")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.answer == "" && fs.NArg() > 0 {
		c.answer = strings.Join(fs.Args(), " ")
	}
	c.answer = strings.TrimSpace(c.answer)
	n, err := strconv.Atoi(*lab)
	sig, ok := signature.For(n)
	if err != nil || !ok || c.answer == "" {
		fmt.Fprintln(stderr, "usage: make grade LAB=<10 to 18> Q='<your query>' (BACKEND=tempo|loki|prometheus|jaeger|traceids, SINCE=15m)")
		return 2
	}
	if c.since, err = time.ParseDuration(*since); err != nil || c.since <= 0 {
		fmt.Fprintf(stderr, "SINCE=%s: write a duration such as 15m\n", *since)
		return 2
	}
	if c.backend == "" {
		c.backend = backendOf(c.answer)
	}
	fmt.Fprintf(stdout, "Incident %d: %s\n%s\nYour answer (%s): %s\n\n", sig.Lab, sig.Title, sig.Question, backendNames[c.backend], c.answer)
	v, err := grade(ctx, c, sig)
	if err != nil {
		fmt.Fprintln(stdout, "Could not grade:", err)
		if c.backend != "jaeger" && c.backend != "traceids" {
			fmt.Fprintln(stdout, "Under the native demo (make demo) there is only Jaeger: answer with a Jaeger search, such as service=orders operation=<span name> key=value minDuration=100ms.")
		}
		return 2
	}
	fmt.Fprintln(stdout, v.Message)
	if v.Pass {
		return 0
	}
	return 1
}

var backendNames = map[string]string{
	"tempo": "TraceQL, Tempo", "loki": "LogQL, Loki", "prometheus": "PromQL, Prometheus",
	"jaeger": "a Jaeger search", "traceids": "trace IDs",
}

// window is the time range both the answer and the grader read.
type window struct {
	start, end time.Time
	traces     int
}

// grade runs the answer, reads the window, and compares them.
func grade(ctx context.Context, c config, sig signature.Signature) (signature.Verdict, error) {
	now := time.Now()
	w := window{start: now.Add(-c.since), end: now, traces: c.traces}
	since := readable(c.since)
	cl := newGetter()
	j := jaeger{base: strings.TrimSuffix(c.urls.jaeger, "/"), client: cl}
	t := tempo{base: strings.TrimSuffix(c.urls.tempo, "/"), client: cl}
	switch c.backend {
	case "jaeger":
		q, err := parseSearch(c.answer)
		if err != nil {
			return signature.Verdict{}, err
		}
		returned, err := j.search(ctx, q, w)
		if err != nil {
			return signature.Verdict{}, err
		}
		all, err := j.window(ctx, w)
		if err != nil {
			return signature.Verdict{}, err
		}
		return signature.Grade(sig, merge(all, returned), ids(returned), since), nil
	case "traceids":
		returned := strings.FieldsFunc(c.answer, func(r rune) bool { return r == ' ' || r == ',' || r == '\n' || r == '\t' })
		var src traceSource = j
		if err := cl.reachable(ctx, j.base+"/api/services"); err != nil {
			src = t
		}
		return gradeIDs(ctx, src, sig, w, returned, since)
	case "tempo":
		returned, err := t.searchIDs(ctx, c.answer, w, 0)
		if err != nil {
			return signature.Verdict{}, err
		}
		return gradeIDs(ctx, t, sig, w, returned, since)
	case "loki":
		returned, err := loki{base: strings.TrimSuffix(c.urls.loki, "/"), client: cl}.traceIDs(ctx, c.answer, w)
		if err != nil {
			return signature.Verdict{}, err
		}
		return gradeIDs(ctx, t, sig, w, returned, since)
	case "prometheus":
		returned, err := prometheus{base: strings.TrimSuffix(c.urls.prometheus, "/"), client: cl}.exemplarTraces(ctx, c.answer, w)
		if err != nil {
			return signature.Verdict{}, err
		}
		// Exemplars are a sample: judge what they point at, not what they leave out.
		traces, err := readAll(ctx, t, returned)
		if err != nil {
			return signature.Verdict{}, err
		}
		v := signature.Grade(sig, traces, returned, since)
		if len(v.Missed) == 0 && len(v.Extra) == 0 && v.Returned > 0 && v.Matching > 0 {
			v.Message += "\n(Prometheus keeps a sample of traces as exemplars: every one behind your query shows the incident.)"
		}
		return v, nil
	}
	return signature.Verdict{}, fmt.Errorf("BACKEND=%s: use tempo, loki, prometheus, jaeger or traceids", c.backend)
}

// traceSource reads traces: Jaeger or Tempo.
type traceSource interface {
	trace(ctx context.Context, id string) (signature.Trace, error)
	window(ctx context.Context, w window) ([]signature.Trace, error)
}

// gradeIDs grades an answer that returned trace IDs: the window's traces and
// the returned ones are read from src.
func gradeIDs(ctx context.Context, src traceSource, sig signature.Signature, w window, returned []string, since string) (signature.Verdict, error) {
	all, err := src.window(ctx, w)
	if err != nil {
		return signature.Verdict{}, err
	}
	have := map[string]bool{}
	for _, t := range all {
		have[t.ID()] = true
	}
	var unread []string
	for _, id := range returned {
		if id = normalID(id); !have[id] {
			unread = append(unread, id)
		}
	}
	more, err := readAll(ctx, src, unread)
	if err != nil {
		return signature.Verdict{}, err
	}
	for i := range returned {
		returned[i] = normalID(returned[i])
	}
	return signature.Grade(sig, merge(all, more), returned, since), nil
}

// readAll reads traces by ID, leaving out those the backend does not have.
func readAll(ctx context.Context, src traceSource, ids []string) ([]signature.Trace, error) {
	var out []signature.Trace
	for _, id := range ids {
		t, err := src.trace(ctx, normalID(id))
		if err != nil {
			return nil, err
		}
		if len(t) > 0 {
			out = append(out, t)
		}
	}
	return out, nil
}

// merge joins traces read twice (the window and the answer), one per ID.
func merge(lists ...[]signature.Trace) []signature.Trace {
	seen := map[string]bool{}
	var out []signature.Trace
	for _, l := range lists {
		for _, t := range l {
			if !seen[t.ID()] {
				seen[t.ID()] = true
				out = append(out, t)
			}
		}
	}
	return out
}

func ids(traces []signature.Trace) []string {
	out := make([]string, 0, len(traces))
	for _, t := range traces {
		out = append(out, t.ID())
	}
	return out
}

// readable writes a duration as a person would: 15m, not 15m0s.
func readable(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var errNotFound = errors.New("not found")

func isNotFound(err error) bool { return errors.Is(err, errNotFound) }
