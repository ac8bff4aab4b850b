package e2e

// make grade against real traces in a real Jaeger v2, as under the native
// demo: the services export to the stack's collector, which sends traces to
// Jaeger (deploy/jaeger/config.yaml). Each incident runs for part of the
// traffic only; then the grader (pkg/scenario/cmd/grade, built here) is run
// as a student runs it, with a right answer and with two typical wrong ones.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

var (
	gradeJaegerProgram program
	graderProgram      program
)

// startJaeger runs Jaeger v2 on the demo's configuration, on ports of this
// test, and returns the URLs of its OTLP/HTTP receiver and of its query API.
func startJaeger(t *testing.T) (otlp, query string) {
	t.Helper()
	bin := gradeJaegerProgram.get(t, "bash", "../scripts/build-tool.sh", "jaeger")
	otlpAddr, queryAddr, health := freePort(t), freePort(t), freePort(t)
	cmd := exec.Command(bin, "--config=../deploy/jaeger/config.yaml")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"JAEGER_OTLP_HTTP_ENDPOINT=" + otlpAddr, "JAEGER_UI_ENDPOINT=" + queryAddr,
		"JAEGER_HEALTH_ENDPOINT=" + health, "JAEGER_QUERY_GRPC_ENDPOINT=" + freePort(t)}
	var logs bytes.Buffer // read only once it has exited
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		terminate(t, "jaeger", cmd, done)
		if t.Failed() {
			t.Logf("jaeger output:\n%s", logs.String())
		}
	})
	waitUntil(t, startTimeout, "Jaeger's health check", func() (bool, error) {
		select {
		case <-done:
			return false, errors.New("jaeger exited")
		default:
		}
		err := healthy("http://" + health + "/status")
		return err == nil, err
	})
	return "http://" + otlpAddr, "http://" + queryAddr
}

// jaegerHolds reports whether Jaeger has the trace with a span of each
// service and name of want.
func jaegerHolds(query, traceID string, want ...spanKey) (bool, error) {
	spans, err := jaegerSpans(query, traceID)
	if err != nil || spans == nil {
		return false, err
	}
	have := map[string]bool{}
	for _, s := range spans {
		have[s.service+" "+s.name] = true
	}
	for _, k := range want {
		if !have[k.service+" "+k.name] {
			return false, fmt.Errorf("trace %s has no %s %s yet", traceID, k.service, k.name)
		}
	}
	return true, nil
}

// grade runs the grader as make grade does and returns its exit code and output.
func grade(t *testing.T, jaeger string, lab int, answer string) (int, string) {
	t.Helper()
	bin := graderProgram.get(t, "sh", "-c", `go build -o "$0" ../pkg/scenario/cmd/grade && echo "$0"`, filepath.Join(t.TempDir(), "grade"))
	cmd := exec.Command(bin, "-lab", fmt.Sprint(lab), "-jaeger", jaeger, "-since", "15m", "-q", answer)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("grade: %v\n%s", err, out)
	}
	return 0, string(out)
}

func TestGradeJaeger(t *testing.T) {
	t.Parallel()
	otlp, jaeger := startJaeger(t)
	col := startCollector(t, map[string]string{"TEMPO_OTLP_ENDPOINT": otlp})
	s, switchTo := scenarioStack(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP})

	var placed []string // trace IDs
	order := func(tenant string) int {
		status, h, _ := s.placeOrder(t, scenarioOrder, map[string]string{"X-Tenant-ID": tenant})
		placed = append(placed, traceIDFromHeader(t, h))
		return status
	}
	tenants := []string{"acme", "globex"}
	for i := range 4 {
		order(tenants[i%2])
	}
	// Payment failures for part of the traffic: on until each tenant has
	// had a declined payment, so that an answer kept to one tenant misses some.
	switchTo(scenario.PaymentFailures, true)
	declined := map[string]int{}
	for i := 0; declined["acme"] == 0 || declined["globex"] == 0; i++ {
		if i == 100 {
			t.Fatalf("100 orders with payment-failures on, declined per tenant: %v", declined)
		}
		tenant := tenants[i%2]
		if order(tenant) == http.StatusPaymentRequired {
			declined[tenant]++
		}
	}
	switchTo(scenario.PaymentFailures, false)
	// Slow inventory for part of the traffic: globex's orders while it is on.
	switchTo(scenario.SlowInventory, true)
	for i := range 4 {
		order(tenants[i%2])
	}
	switchTo(scenario.SlowInventory, false)
	for i := range 4 {
		order(tenants[i%2])
	}
	for _, id := range placed {
		waitUntil(t, patience, "trace "+id+" in Jaeger", func() (bool, error) {
			return jaegerHolds(jaeger, id, spanKey{"gateway", server, "POST /api/orders"}, spanKey{"orders", server, "POST /orders"})
		})
	}
	t.Logf("%d orders in Jaeger, declined per tenant: %v", len(placed), declined)

	tests := []struct {
		lab    int
		answer string
		pass   bool
		says   []string
	}{
		{10, "service=orders operation=order.charge_payment error.type=payment_declined", true,
			[]string{"Pass: your query returns the", "that show the incident, and nothing else."}},
		{10, "service=orders operation=order.charge_payment", false,
			[]string{"without a failed payment", "add a condition on the span's status"}},
		{10, "service=orders operation=order.process error=true tenant.id=globex", false,
			[]string{fmt.Sprintf("misses %d of the", declined["acme"]), "declined payments come from every tenant"}},
		{11, "service=orders operation=order.validate_inventory minDuration=500ms", true,
			[]string{"Pass: your query returns the 2 traces"}},
		{11, "service=orders operation=order.process tenant.id=globex", false,
			[]string{"also returns", "without a slow step", "add a condition on the duration"}},
		{11, "service=orders operation=order.validate_inventory minDuration=2s", false,
			[]string{"returns no trace of the last 15m, and 2 traces show the incident", "not by seconds"}},
	}
	for _, tt := range tests {
		code, out := grade(t, jaeger, tt.lab, tt.answer)
		if want := map[bool]int{true: 0, false: 1}[tt.pass]; code != want {
			t.Errorf("lab %d, %q: exit %d, want %d:\n%s", tt.lab, tt.answer, code, want, out)
			continue
		}
		for _, say := range tt.says {
			if !strings.Contains(out, say) {
				t.Errorf("lab %d, %q: the grader says\n%s\nwant it to say %q", tt.lab, tt.answer, out, say)
			}
		}
		t.Logf("lab %d, %q:\n%s", tt.lab, tt.answer, out)
	}
}
