package e2e

// Continuous profiles, linked to spans: the services push their profiles to
// a Pyroscope stand-in of the test's own, which speaks Pyroscope's ingest API
// as the suite's client (pyroscope-go v1.5.0) calls it, and decodes every
// pprof profile it receives.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// What the services are started with to profile: every second, so a test
// waits for an upload about as long as for a span.
func profilingVars(p *pyroscope) map[string]string {
	return map[string]string{"PYROSCOPE_SERVER_ADDRESS": p.URL, "PYROSCOPE_UPLOAD_INTERVAL": "1s"}
}

// profileKinds are the profile types the services push, named as Pyroscope
// shows them.
var profileKinds = []string{
	"cpu", "alloc_objects", "alloc_space", "inuse_objects", "inuse_space", "goroutine",
	"mutex_count", "mutex_duration", "block_count", "block_duration",
}

// pyroscope is an ingest endpoint that keeps what it is sent.
type pyroscope struct {
	URL string

	mu      sync.Mutex
	uploads []upload
	refused []string // why an upload was refused: the client sent what Pyroscope would not take
}

// upload is one profile as a service pushed it.
type upload struct {
	Service     string            // the application name: the resource's service.name
	Labels      map[string]string // the labels the client put beside it
	From, Until time.Time         // the interval the profile covers
	Kinds       []string          // its sample types, as Pyroscope names them
	Profile     *profile.Profile
}

func (u upload) has(kind string) bool { return slices.Contains(u.Kinds, kind) }

func newPyroscope(t *testing.T) *pyroscope {
	p := &pyroscope{}
	srv := httptest.NewServer(http.HandlerFunc(p.ingest))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, why := range p.refused {
			t.Errorf("pyroscope refused an upload: %s", why)
		}
	})
	return p
}

// ingest takes what pyroscope-go v1.5.0 sends (upstream/remote): POST
// /ingest?name=<app>{k=v,...}&from=<unix ns>&until=<unix ns>&spyName=gospy
// &sampleRate=...&units=...&aggregationType=..., a multipart form with the
// profile (gzipped pprof) in the part "profile" and, for every profile but
// CPU, the JSON part "sample_type_config" (units, aggregation and the name
// Pyroscope shows for each sample type).
func (p *pyroscope) ingest(w http.ResponseWriter, r *http.Request) {
	u, err := readUpload(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.refused = append(p.refused, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.uploads = append(p.uploads, u)
}

var appName = regexp.MustCompile(`^([^{}]+)\{(.*)\}$`)

func readUpload(r *http.Request) (upload, error) {
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" {
		return upload{}, fmt.Errorf("%s %s, want POST /ingest", r.Method, r.URL.Path)
	}
	q := r.URL.Query()
	m := appName.FindStringSubmatch(q.Get("name"))
	if m == nil {
		return upload{}, fmt.Errorf("name=%q, want <application>{labels}", q.Get("name"))
	}
	u := upload{Service: m[1], Labels: map[string]string{}}
	for kv := range strings.SplitSeq(m[2], ",") {
		if kv == "" {
			continue // no labels: name={}
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return upload{}, fmt.Errorf("name=%q: label %q is not key=value", q.Get("name"), kv)
		}
		u.Labels[k] = v
	}
	for _, t := range []struct {
		param string
		into  *time.Time
	}{{"from", &u.From}, {"until", &u.Until}} {
		ns, err := strconv.ParseInt(q.Get(t.param), 10, 64)
		if err != nil {
			return upload{}, fmt.Errorf("%s=%q, want unix nanoseconds", t.param, q.Get(t.param))
		}
		*t.into = time.Unix(0, ns)
	}
	if q.Get("spyName") != "gospy" {
		return upload{}, fmt.Errorf("spyName=%q, want gospy", q.Get("spyName"))
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		return upload{}, fmt.Errorf("Content-Type %q, want multipart/form-data", r.Header.Get("Content-Type"))
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return upload{}, err
	}
	var config map[string]struct {
		DisplayName string `json:"display-name"`
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return upload{}, err
		}
		b, err := io.ReadAll(part)
		if err != nil {
			return upload{}, err
		}
		switch part.FormName() {
		case "profile":
			if u.Profile, err = profile.Parse(bytes.NewReader(b)); err != nil { // gunzips it too
				return upload{}, fmt.Errorf("profile of %s: %w", u.Service, err)
			}
		case "sample_type_config":
			if err := json.Unmarshal(b, &config); err != nil {
				return upload{}, fmt.Errorf("sample_type_config of %s: %w", u.Service, err)
			}
		default:
			return upload{}, fmt.Errorf("unknown part %q", part.FormName())
		}
	}
	if u.Profile == nil {
		return upload{}, fmt.Errorf("an upload of %s without a profile", u.Service)
	}
	for _, st := range u.Profile.SampleType {
		kind := st.Type
		if c, ok := config[st.Type]; ok && c.DisplayName != "" {
			kind = c.DisplayName
		}
		u.Kinds = append(u.Kinds, kind)
	}
	return u, nil
}

// Uploads returns the profiles of kind a service has pushed so far.
func (p *pyroscope) Uploads(service, kind string) []upload {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []upload
	for _, u := range p.uploads {
		if u.Service == service && u.has(kind) {
			out = append(out, u)
		}
	}
	return out
}

// waitCovered waits until a service has pushed a profile of kind that covers
// the moment at: what happened before at is in it, or in one before it.
func (p *pyroscope) waitCovered(t *testing.T, service, kind string, at time.Time) {
	t.Helper()
	waitFor(t, patience, fmt.Sprintf("a %s profile of %s up to %s", kind, service, at.Format(time.TimeOnly)), func() bool {
		return slices.ContainsFunc(p.Uploads(service, kind), func(u upload) bool { return !u.Until.Before(at) })
	})
}

// sampleValue is the value of one sample type of a sample.
func sampleValue(p *profile.Profile, s *profile.Sample, sampleType string) int64 {
	for i, st := range p.SampleType {
		if st.Type == sampleType {
			return s.Value[i]
		}
	}
	return 0
}

// frames are the functions of a sample's stack, innermost first.
func frames(s *profile.Sample) []string {
	var out []string
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function != nil {
				out = append(out, line.Function.Name)
			}
		}
	}
	return out
}

// placeOrders places n orders at once through the gateway and returns their
// trace IDs. A failed request fails the test.
func (s *stack) placeOrders(t *testing.T, n int, header map[string]string) []string {
	t.Helper()
	var (
		mu     sync.Mutex
		traces []string
		errs   []error
		wg     sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			status, h, b, err := s.tryCall(http.MethodPost, "/api/orders", "application/json", []byte(scenarioOrder), header)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case status != http.StatusCreated:
				errs = append(errs, fmt.Errorf("POST /api/orders: %d %s", status, b))
			default:
				parts := strings.Split(h.Get("traceresponse"), "-")
				if len(parts) != 4 {
					errs = append(errs, fmt.Errorf("traceresponse %q", h.Get("traceresponse")))
					return
				}
				traces = append(traces, parts[1])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return traces
}

// localRoots are the spans of a trace whose parent is not a span of the same
// service: the first span of each process, which names its profile.
func localRoots(spans []span) []span {
	var roots []span
	for _, sp := range spans {
		if !slices.ContainsFunc(spans, func(p span) bool { return p.SpanID == sp.ParentID && p.Service == sp.Service }) {
			roots = append(roots, sp)
		}
	}
	return roots
}

// Each order's first span in each service carries pyroscope.profile.id, its
// own span ID, and only those spans do; CPU samples of orders are labelled
// with the profile ID and the trace ID of a real order; every profile type
// arrives from every service; and the labels say nothing of a request but
// those IDs and the root span's low-cardinality name.
func TestProfilesLinkedToSpans(t *testing.T) {
	t.Parallel()
	pyro := newPyroscope(t)
	s := startStack(t, profilingVars(pyro))
	// Values of a request that must never become a profile label.
	const plantedTenant, plantedRequest = "tenant-profile-planted", "request-profile-planted"
	header := map[string]string{"X-Tenant-ID": plantedTenant, "X-Request-ID": plantedRequest}

	// Orders, five at a time, until a CPU profile of orders that covers
	// them holds samples of one (an order may use less CPU than one 10 ms
	// sample, so a round may hold none).
	roots := map[string]span{} // profile ID -> the orders root span that names it
	var sample *profile.Sample
	deadline := time.Now().Add(3 * patience)
	for round := 1; sample == nil; round++ {
		for _, traceID := range s.placeOrders(t, 5, header) {
			spans := waitWholeOrder(t, s.otlp, traceID)
			if round == 1 && len(roots) == 0 {
				checkProfileIDs(t, spans)
			}
			root := find(t, spans, "orders", server, "POST /orders")
			if id := root.Attrs["pyroscope.profile.id"]; id != root.SpanID {
				t.Fatalf("orders' root span %s has pyroscope.profile.id %q, want its span ID", root.SpanID, id)
			}
			roots[root.Attrs["pyroscope.profile.id"]] = root
		}
		pyro.waitCovered(t, "orders", "cpu", time.Now())
		for _, u := range pyro.Uploads("orders", "cpu") {
			for _, smp := range u.Profile.Sample {
				// Any will do; one in the service's own code reads best in the log.
				if ids := smp.Label["span_id"]; len(ids) == 1 && roots[ids[0]].SpanID != "" &&
					(sample == nil || !inMain(sample) && inMain(smp)) {
					sample = smp
				}
			}
		}
		if sample == nil && time.Now().After(deadline) {
			t.Fatalf("after %d rounds of orders, no CPU sample of orders is labelled with the profile ID of one of %d orders' root spans", round, len(roots))
		}
	}
	root := roots[sample.Label["span_id"][0]]
	t.Logf("a CPU sample of orders in span %s %q of trace %s: %s", root.SpanID, root.Name, root.TraceID, strings.Join(frames(sample)[:min(6, len(frames(sample)))], " < "))
	if got := sample.Label["trace_id"]; len(got) != 1 || got[0] != root.TraceID {
		t.Errorf("the sample's trace_id label %v, want the order's trace %s", got, root.TraceID)
	}
	// Root spans are named at their start: a SERVER span by the method alone.
	if got := sample.Label["span_name"]; len(got) != 1 || got[0] != "POST" {
		t.Errorf("the sample's span_name label %v, want [POST]", got)
	}

	// Every profile type, from every service.
	for _, service := range []string{"gateway", "orders", "fulfillment"} {
		for _, kind := range profileKinds {
			waitFor(t, patience, "a "+kind+" profile of "+service, func() bool { return len(pyro.Uploads(service, kind)) > 0 })
		}
	}

	// The labels: beside the client's own on each upload (its session and
	// scope, the Go runtime), only the span's, on samples, and none of them
	// a value of a request or an ID in a span name.
	clientLabels := []string{"__session_id__", "otel.scope.name", "otel.scope.version", "process.runtime.name", "process.runtime.version"}
	sampleLabels := []string{"span_id", "span_name", "trace_id"}
	names := map[string]bool{}
	pyro.mu.Lock()
	uploads := slices.Clone(pyro.uploads)
	pyro.mu.Unlock()
	for _, u := range uploads {
		for k, v := range u.Labels {
			if !slices.Contains(clientLabels, k) {
				t.Errorf("%s uploaded with the label %s=%q; the suite adds none", u.Service, k, v)
			}
		}
		for _, smp := range u.Profile.Sample {
			for k, vs := range smp.Label {
				if !slices.Contains(sampleLabels, k) {
					t.Errorf("a %s sample of %s has the label %s=%v, want only %v", u.Kinds, u.Service, k, vs, sampleLabels)
				}
				for _, v := range vs {
					if strings.Contains(v, plantedTenant) || strings.Contains(v, plantedRequest) {
						t.Errorf("a %s sample of %s has the label %s=%q: a value of the request", u.Kinds, u.Service, k, v)
					}
					if k == "span_name" {
						names[u.Service+": "+v] = true
					}
				}
			}
		}
	}
	for name := range names {
		if id := idInLabel.FindString(name); id != "" {
			t.Errorf("span_name label %q carries an ID (%s): one profile series per value", name, id)
		}
	}
	if len(names) > 10 {
		t.Errorf("%d span_name label values, want a handful (one per kind of root span): %v", len(names), slices.Sorted(maps.Keys(names)))
	}
	t.Logf("span_name label values: %v", slices.Sorted(maps.Keys(names)))
}

// idInLabel finds what would make a label value one of many: a UUID, a long
// hex string (a span or trace ID) or a run of digits.
var idInLabel = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-|[0-9a-fA-F]{16,}|[0-9]{6,}`)

// waitWholeOrder waits until an order's trace holds the SERVER spans of the
// gateway and orders and fulfillment's CONSUMER span, the last span each
// service ends, and returns it.
func waitWholeOrder(t *testing.T, r *receiver, traceID string) []span {
	t.Helper()
	var spans []span
	has := func(service string, kind tracepb.Span_SpanKind) bool {
		return slices.ContainsFunc(spans, func(s span) bool { return s.Service == service && s.Kind == kind })
	}
	waitFor(t, patience, "the whole trace "+traceID, func() bool {
		spans = r.Trace(traceID)
		return has("gateway", server) && has("orders", server) && has("fulfillment", consumer)
	})
	return spans
}

// checkProfileIDs: in one order's trace, the first span of each service, and
// only it, carries pyroscope.profile.id, its own span ID.
func checkProfileIDs(t *testing.T, spans []span) {
	t.Helper()
	roots := localRoots(spans)
	for _, sp := range spans {
		id, has := sp.Attrs["pyroscope.profile.id"]
		isRoot := slices.ContainsFunc(roots, func(r span) bool { return r.SpanID == sp.SpanID })
		switch {
		case isRoot && id != sp.SpanID:
			t.Errorf("%s %s %q, the first span of its service, has pyroscope.profile.id %q, want its span ID %s", sp.Service, sp.Kind, sp.Name, id, sp.SpanID)
		case !isRoot && has:
			t.Errorf("%s %s %q has pyroscope.profile.id %q; only a service's first span names a profile", sp.Service, sp.Kind, sp.Name, id)
		}
	}
	for _, service := range []string{"gateway", "orders", "fulfillment"} {
		if !slices.ContainsFunc(roots, func(r span) bool { return r.Service == service }) {
			t.Errorf("no span of %s in the trace:\n%s", service, tree(spans))
		}
	}
}

// SIGTERM uploads the profiles of the last interval, of every type, within
// the telemetry flush: with an upload interval of an hour, nothing is sent
// before the stop, and everything is after it.
func TestProfilesFlushedOnShutdown(t *testing.T) {
	t.Parallel()
	pyro := newPyroscope(t)
	otlp := newReceiver(t)
	gw := start(t, "gateway", map[string]string{
		"ORDERS_URL":                  "http://127.0.0.1:1", // nothing listens: each order is a 503, work all the same
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"PYROSCOPE_SERVER_ADDRESS":    pyro.URL,
		"PYROSCOPE_UPLOAD_INTERVAL":   "1h",
	})
	for range 20 {
		resp, err := testClient.Post(gw.URL()+"/api/orders", "application/json", strings.NewReader(scenarioOrder))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	pyro.mu.Lock()
	before := len(pyro.uploads)
	pyro.mu.Unlock()
	if before != 0 {
		t.Fatalf("%d uploads before the stop; the interval is an hour", before)
	}
	took := gw.Stop(t)
	t.Logf("the gateway stopped in %s", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the gateway took %s to stop; its telemetry flush is bounded by 5 s", took)
	}
	for _, kind := range profileKinds {
		if len(pyro.Uploads("gateway", kind)) == 0 {
			t.Errorf("no %s profile uploaded when the gateway stopped", kind)
		}
	}
}

// The order-lock scenario in the mutex profile: with the scenario off, the
// payment path holds no contended lock; with it on, concurrent orders wait
// on the payment lock, and orders' mutex profile (and its block profile)
// holds that wait in the charge's stack, where the slow order's root span,
// through its pyroscope.profile.id, leads.
func TestProfilesOrderLock(t *testing.T) {
	t.Parallel()
	pyro := newPyroscope(t)
	vars := profilingVars(pyro)
	vars["PAYMENT_LATENCY"] = "100ms"
	s, switchTo := scenarioStack(t, vars)

	// chargeWaits sums, over orders' profiles of kind received since, the
	// sampleType values of samples whose stack runs through the payment's
	// charge (a function of orders' main package named for it) and frame
	// (the lock: Unlock in the mutex profile, Lock in the block profile).
	chargeWaits := func(kind, sampleType, frame string, since time.Time) (total time.Duration) {
		for _, u := range pyro.Uploads("orders", kind) {
			if u.Until.Before(since) {
				continue
			}
			for _, smp := range u.Profile.Sample {
				fs := frames(smp)
				if slices.Contains(fs, frame) && slices.ContainsFunc(fs, isCharge) {
					total += time.Duration(sampleValue(u.Profile, smp, sampleType))
				}
			}
		}
		return total
	}

	began := time.Now()
	s.placeOrders(t, 6, nil)
	pyro.waitCovered(t, "orders", "mutex_duration", time.Now())
	if d := chargeWaits("mutex_duration", "delay", "sync.(*Mutex).Unlock", began); d > 0 {
		t.Errorf("scenario off: the mutex profile holds %s of contention in the charge", d)
	}

	switchTo(scenario.OrderLock, true)
	on := time.Now()
	var slow []span
	deadline := time.Now().Add(3 * patience)
	for round := 1; ; round++ {
		for _, traceID := range s.placeOrders(t, 6, nil) {
			spans := waitTrace(t, s.otlp, traceID, spanKey{"orders", server, "POST /orders"})
			for _, c := range named(spans, "orders", "order.charge_payment") {
				if c.Duration() > 150*time.Millisecond { // waited for another charge
					slow = append(slow, find(t, spans, "orders", server, "POST /orders"))
				}
			}
		}
		pyro.waitCovered(t, "orders", "mutex_duration", time.Now())
		mutex := chargeWaits("mutex_duration", "delay", "sync.(*Mutex).Unlock", on)
		// 1 in 5 contended unlocks is sampled (telemetry's mutexProfileFraction):
		// a round of six orders may go unsampled.
		if mutex >= 100*time.Millisecond && len(slow) > 0 {
			t.Logf("scenario on: %d orders waited; the mutex profile holds %s of contention on the payment lock", len(slow), mutex)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scenario on: after %d rounds, %d slow charges and %s of contention in the charge in the mutex profile, want both", round, len(slow), mutex)
		}
	}
	// Every wait of 1 ms or more is in the block profile.
	pyro.waitCovered(t, "orders", "block_duration", time.Now())
	if d := chargeWaits("block_duration", "delay", "sync.(*Mutex).Lock", on); d < 100*time.Millisecond {
		t.Errorf("scenario on: the block profile holds %s of waiting for the payment lock, want at least one payment (100 ms)", d)
	}
	// The slow span's way there: its order's root span in orders names a profile.
	for _, root := range slow {
		if root.Attrs["pyroscope.profile.id"] != root.SpanID {
			t.Errorf("the root span of a slow order has pyroscope.profile.id %q, want %s", root.Attrs["pyroscope.profile.id"], root.SpanID)
		}
	}
}

// inMain reports whether a sample's stack runs through the service's own code.
func inMain(s *profile.Sample) bool {
	return slices.ContainsFunc(frames(s), func(f string) bool { return strings.HasPrefix(f, "main.") })
}

// isCharge reports whether a function is orders' charge of the payment, which
// the order-lock scenario's lock surrounds.
func isCharge(function string) bool {
	return strings.HasPrefix(function, "main.") && strings.Contains(strings.ToLower(function), "charge")
}
