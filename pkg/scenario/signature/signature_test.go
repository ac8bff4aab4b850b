package signature

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// order builds the orders spans of one order's trace: order.process with
// its tenant, the inventory check taking inventory, and a charge span with
// status and error.type.
func order(id, tenant string, inventory time.Duration, chargeErr, errorType string) Trace {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	process := Span{TraceID: id, SpanID: id + "p", Service: "orders", Name: "order.process", Kind: Internal,
		Attrs: map[string]string{"tenant.id": tenant, "order.id": "o-" + id}, Start: at(0), End: at(900)}
	inv := Span{TraceID: id, SpanID: id + "i", ParentID: id + "p", Service: "orders", Name: "order.validate_inventory", Kind: Internal,
		Attrs: map[string]string{}, Start: at(1), End: at(1).Add(inventory)}
	charge := Span{TraceID: id, SpanID: id + "c", ParentID: id + "p", Service: "orders", Name: "order.charge_payment", Kind: Client,
		Error: chargeErr != "", Attrs: map[string]string{}, Start: at(700), End: at(725)}
	if errorType != "" {
		charge.Attrs["error.type"] = errorType
	}
	return Trace{process, inv, charge}
}

func TestSignatures(t *testing.T) {
	fast, slow := 5*time.Millisecond, 601*time.Millisecond
	tests := []struct {
		lab   int
		trace Trace
		want  bool
	}{
		{10, order("a", "acme", fast, "declined", "payment_declined"), true},
		{10, order("a", "acme", fast, "", ""), false},
		{10, order("a", "acme", fast, "err", "timeout"), false},
		{11, order("a", SlowTenant(), slow, "", ""), true},
		{11, order("a", SlowTenant(), fast, "", ""), false},
		{11, order("a", "acme", slow, "", ""), false},
		{17, order("a", "acme", fast, "err", "timeout"), false}, // one attempt, not three
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.lab), func(t *testing.T) {
			sig, _ := For(tt.lab)
			if got := sig.Match(tt.trace); got != tt.want {
				t.Errorf("lab %d on %v: got %v, want %v", tt.lab, tt.trace, got, tt.want)
			}
		})
	}
	for lab := 10; lab <= 18; lab++ {
		if sig, ok := For(lab); !ok || len(sig.Checks) == 0 || sig.Question == "" || sig.Missed == "" {
			t.Errorf("lab %d: no complete signature: %+v", lab, sig)
		}
	}
}

func TestUninstrumentedConsume(t *testing.T) {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	consume := Span{TraceID: "a", SpanID: "c", Service: "fulfillment", Name: consumeSpan, Kind: Consumer, Start: at(0), End: at(400)}
	kids := Trace{consume,
		{TraceID: "a", SpanID: "1", ParentID: "c", Start: at(300), End: at(350)},
		{TraceID: "a", SpanID: "2", ParentID: "c", Start: at(340), End: at(390)}, // overlaps the one before
	}
	if got := UninstrumentedConsume(kids); got != 310*time.Millisecond {
		t.Errorf("uninstrumented time = %v, want 310ms (400 less 300..390 covered)", got)
	}
}

func TestWaited(t *testing.T) {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	charge := func(id string, start, end int) Trace {
		return Trace{{TraceID: id, SpanID: id, Service: "orders", Name: chargeSpan, Start: at(start), End: at(end)}}
	}
	// With the lock: three arrive together, each ends 100 ms after the one before.
	locked := []Trace{charge("a", 0, 100), charge("b", 2, 200), charge("c", 4, 300)}
	if got := len(waitedIn(locked)); got != 2 {
		t.Errorf("with the lock, %d charges waited, want 2", got)
	}
	// Without: concurrent charges of the usual length.
	free := []Trace{charge("a", 0, 100), charge("b", 30, 130), charge("c", 60, 165)}
	if got := len(waitedIn(free)); got != 0 {
		t.Errorf("without the lock, %d charges waited, want none", got)
	}
}

// waitedIn returns the traces of window whose payment waited.
func waitedIn(window []Trace) []Trace {
	sig, _ := For(14)
	return sig.Matching(window)
}

func TestGrade(t *testing.T) {
	sig, _ := For(10)
	fast := time.Millisecond
	window := []Trace{
		order("d1", "acme", fast, "x", "payment_declined"),
		order("d2", "globex", fast, "x", "payment_declined"),
		order("ok1", "acme", fast, "", ""),
		order("ok2", "acme", fast, "", ""),
		order("t1", "acme", fast, "x", "timeout"),
	}
	tests := []struct {
		name     string
		returned []string
		pass     bool
		says     []string
	}{
		{"exact", []string{"d1", "D2"}, true, []string{"Pass: your query returns the 2 traces of the last 15m"}},
		{"every charge", []string{"d1", "d2", "ok1", "ok2", "t1"}, false,
			[]string{"also returns 2 traces without a failed payment (for example ok1): add a condition on the span's status.", "It also returns 1 trace without a declined payment."}},
		{"every failure", []string{"d1", "d2", "t1"}, false, []string{"also returns 1 trace without a declined payment (for example t1): those payments failed for another reason"}},
		{"one tenant", []string{"d1"}, false, []string{"misses 1 of the 2 traces that show the incident (for example d2): declined payments come from every tenant"}},
		{"nothing right", []string{"ok1"}, false, []string{"Your query returns 1 trace without a failed payment", "misses 2 of the 2 traces"}},
		{"nothing", nil, false, []string{"returns no trace of the last 15m, and 2 traces show the incident: widen it."}},
		{"unknown IDs", []string{"d1", "d2", "ffff"}, true, []string{"Pass", "(1 trace your query returned could not be read back"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Grade(sig, window, tt.returned, "15m")
			if v.Pass != tt.pass {
				t.Errorf("pass = %v, want %v: %s", v.Pass, tt.pass, v.Message)
			}
			for _, s := range tt.says {
				if !strings.Contains(v.Message, s) {
					t.Errorf("message %q, want it to say %q", v.Message, s)
				}
			}
		})
	}
	if v := Grade(sig, window[2:4], []string{"ok1"}, "5m"); v.Pass || !strings.Contains(v.Message, "No trace of the last 5m shows this incident") {
		t.Errorf("with no trace of the incident: %+v", v)
	}
}

// Each incident page asks the question its signature grades, in its Grade
// yourself section.
func TestPagesAskTheQuestion(t *testing.T) {
	for _, sig := range All() {
		pages, _ := filepath.Glob(fmt.Sprintf("../../../docs/workshop/%d-*.md", sig.Lab))
		if len(pages) != 1 {
			t.Fatalf("lab %d: %d pages, want 1", sig.Lab, len(pages))
		}
		b, err := os.ReadFile(pages[0])
		if err != nil {
			t.Fatal(err)
		}
		want := "## Grade yourself\n\n**The question:** " + sig.Question
		if !strings.Contains(string(b), want) || !strings.Contains(string(b), fmt.Sprintf("make grade LAB=%d ", sig.Lab)) {
			t.Errorf("%s: no Grade yourself section asking %q with make grade LAB=%d", pages[0], sig.Question, sig.Lab)
		}
	}
}
