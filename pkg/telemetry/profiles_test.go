package telemetry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// These tests set process environment variables, so they do not run in parallel.

func TestProfilingFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name, address, interval string
		want                    profiling
		wantErr                 string // a part of the error; "" for none
	}{
		{name: "unset is off"},
		{name: "blank is off", address: "  "},
		{name: "address", address: "http://pyroscope:4040", want: profiling{"http://pyroscope:4040", 15 * time.Second}},
		{name: "interval", address: "https://p.example", interval: "1s", want: profiling{"https://p.example", time.Second}},
		{name: "no scheme", address: "pyroscope:4040", wantErr: pyroscopeAddressVar},
		{name: "no host", address: "http://", wantErr: pyroscopeAddressVar},
		{name: "other scheme", address: "grpc://pyroscope:4040", wantErr: pyroscopeAddressVar},
		{name: "bad interval", address: "http://p", interval: "often", wantErr: pyroscopeIntervalVar},
		{name: "zero interval", address: "http://p", interval: "0s", wantErr: pyroscopeIntervalVar},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(pyroscopeAddressVar, tc.address)
			t.Setenv(pyroscopeIntervalVar, tc.interval)
			got, err := profilingFromEnv()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			case got != tc.want:
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A password in the address never shows in the error that refuses it.
func TestProfilingAddressErrorHidesValue(t *testing.T) {
	t.Setenv(pyroscopeAddressVar, "pyroscope:hunter2@host")
	_, err := profilingFromEnv()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v, want a refusal without the value", err)
	}
}

func TestSetupRefusesBadProfilingVariables(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv(pyroscopeAddressVar, "http://127.0.0.1:1")
	t.Setenv(pyroscopeIntervalVar, "-1s")
	if _, _, err := Setup(t.Context(), Options{ServiceName: "x", LogOutput: io.Discard}); err == nil || !strings.Contains(err.Error(), pyroscopeIntervalVar) {
		t.Errorf("Setup: %v, want an error naming %s", err, pyroscopeIntervalVar)
	}
}

// labels returns the pprof labels a context carries.
func labels(ctx context.Context) map[string]string {
	m := map[string]string{}
	pprof.ForLabels(ctx, func(k, v string) bool { m[k] = v; return true })
	return m
}

// Only a local root span carries pyroscope.profile.id, its own span ID; its
// descendants' CPU samples are labelled with the root's ID and name.
func TestSpanProfilesLabelRootSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracer := withSpanProfiles(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))).Tracer("t")

	ctx, root := tracer.Start(t.Context(), "POST")
	childCtx, child := tracer.Start(ctx, "order.process")
	rootID := root.SpanContext().SpanID().String()
	for name, got := range map[string]map[string]string{"root": labels(ctx), "child": labels(childCtx)} {
		if got["span_id"] != rootID || got["span_name"] != "POST" {
			t.Errorf("%s's labels %v, want span_id=%s and span_name=POST (the root's)", name, got, rootID)
		}
	}
	child.End()
	root.End()

	attrs := map[string]map[string]string{}
	for _, s := range rec.Ended() {
		attrs[s.Name()] = map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[s.Name()][string(kv.Key)] = kv.Value.String()
		}
	}
	if got := attrs["POST"]["pyroscope.profile.id"]; got != rootID {
		t.Errorf("root span's pyroscope.profile.id = %q, want its span ID %s", got, rootID)
	}
	if got, ok := attrs["order.process"]["pyroscope.profile.id"]; ok {
		t.Errorf("child span has pyroscope.profile.id %q; only root spans name a profile", got)
	}

	// A span that is not sampled names no profile: it would point nowhere.
	unsampled := withSpanProfiles(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))).Tracer("t")
	ctx, span := unsampled.Start(t.Context(), "GET")
	defer span.End()
	if got := labels(ctx); got["span_id"] != "" || got["trace_id"] != "" {
		t.Errorf("an unsampled span's labels %v, want no span_id or trace_id", got)
	}
}

// ingest is a stand-in for Pyroscope's /ingest: it records the profile kinds
// it was sent, named as the client names them (see sampleKinds).
type ingest struct {
	mu    sync.Mutex
	kinds map[string]bool
	names []string // the name query parameter: service{labels}
}

func (in *ingest) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ingest" {
		http.NotFound(w, r)
		return
	}
	kinds, err := sampleKinds(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, k := range kinds {
		in.kinds[k] = true
	}
	in.names = append(in.names, r.URL.Query().Get("name"))
}

// sampleKinds reads which profile an upload holds from its sample type
// configuration; the CPU profile comes without one.
func sampleKinds(r *http.Request) ([]string, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	kinds := []string{"cpu"}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return kinds, nil
		}
		if err != nil {
			return nil, err
		}
		if part.FormName() != "sample_type_config" {
			continue
		}
		var config map[string]struct {
			DisplayName string `json:"display-name"`
		}
		if err := json.NewDecoder(part).Decode(&config); err != nil {
			return nil, err
		}
		kinds = kinds[:0]
		for name, c := range config {
			kinds = append(kinds, cmp.Or(c.DisplayName, name))
		}
	}
}

// The final flush uploads every profile type, within the flush bound, even
// with an upload interval far longer than the process lived.
func TestProfilesFlushedOnShutdown(t *testing.T) {
	in := &ingest{kinds: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(in.handle))
	defer srv.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv(pyroscopeAddressVar, srv.URL)
	t.Setenv(pyroscopeIntervalVar, "1h")

	var out bytes.Buffer
	_, shutdown, err := Setup(t.Context(), Options{ServiceName: "orders", LogOutput: &out, LogLevel: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.SetMutexProfileFraction(-1); got != mutexProfileFraction {
		t.Errorf("mutex profile fraction %d while profiling, want %d", got, mutexProfileFraction)
	}
	ctx, cancel := context.WithTimeout(context.Background(), FlushTimeout)
	defer cancel()
	began := time.Now()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v\nlog: %s", err, out.String())
	}
	t.Logf("shutdown took %s", time.Since(began).Round(time.Millisecond))
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, want := range []string{"cpu", "alloc_objects", "alloc_space", "inuse_objects", "inuse_space", "goroutine",
		"mutex_count", "mutex_duration", "block_count", "block_duration"} {
		if !in.kinds[want] {
			t.Errorf("no %s profile uploaded at shutdown; got %v\nlog: %s", want, in.kinds, out.String())
		}
	}
	for _, name := range in.names {
		if !strings.HasPrefix(name, "orders{") {
			t.Errorf("uploaded as %q, want the service name orders", name)
		}
	}
	if got := runtime.SetMutexProfileFraction(-1); got != 0 {
		t.Errorf("mutex profile fraction %d after shutdown, want it restored to 0", got)
	}
}

// A Pyroscope that never answers holds shutdown only until its context ends.
func TestProfilesShutdownIsBounded(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv(pyroscopeAddressVar, srv.URL)
	t.Setenv(pyroscopeIntervalVar, "1h")
	_, shutdown, err := Setup(t.Context(), Options{ServiceName: "x", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("shutdown reported success although no profile was delivered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown ignored its deadline")
	}
	// Let the uploads end, and wait until the profiler has stopped (it
	// restores the runtime's rates last), so the next test can profile.
	close(release)
	deadline := time.Now().Add(time.Minute)
	for runtime.SetMutexProfileFraction(-1) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the profiler never stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
