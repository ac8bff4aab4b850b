//go:build stack

package deploy

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStackJaegerKeepsTraces runs the real Jaeger of tools/jaeger on
// config.yaml with badger.yaml merged over it, as JAEGER_STORAGE=badger make
// demo does: a trace it received is still there after a restart.
func TestStackJaegerKeepsTraces(t *testing.T) {
	jaeger := secureTool(t, "jaeger", "jaeger")
	data := t.TempDir()
	otlp, query, health := freeAddr(t), freeAddr(t), freeAddr(t)
	const traceID = "5b8efff798038103d269b633813fc60c"

	run := func() (stop func()) {
		cmd := exec.Command(jaeger, "--config=jaeger/config.yaml", "--config=jaeger/badger.yaml")
		cmd.Env = append(os.Environ(), "JAEGER_BADGER_DIR="+data, "JAEGER_OTLP_HTTP_ENDPOINT="+otlp,
			"JAEGER_UI_ENDPOINT="+query, "JAEGER_HEALTH_ENDPOINT="+health, "JAEGER_QUERY_GRPC_ENDPOINT="+freeAddr(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop = func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Errorf("Jaeger did not stop within 30 s of SIGTERM:\n%s", out.String())
			}
		}
		waitFor(t, func() bool { return get(t, "http://"+health+"/status") == http.StatusOK }, "Jaeger's health check", done, &out)
		return stop
	}

	stop := run()
	span := fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"badger-test"}}]},
		"scopeSpans":[{"spans":[{"traceId":%q,"spanId":"051581bf3cb55c13","name":"kept","kind":1,
		"startTimeUnixNano":"%d","endTimeUnixNano":"%d"}]}]}]}`, traceID, time.Now().Add(-time.Second).UnixNano(), time.Now().UnixNano())
	resp, err := http.Post("http://"+otlp+"/v1/traces", "application/json", strings.NewReader(span))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/traces: %s", resp.Status)
	}
	found := func() bool { return get(t, "http://"+query+"/api/traces/"+traceID) == http.StatusOK }
	waitFor(t, found, "the trace in Jaeger", nil, nil)
	stop()

	stop = run()
	defer stop()
	if !found() {
		t.Fatalf("after a restart, Jaeger no longer has trace %s", traceID)
	}
}

// get answers a GET's status, 0 when there is no answer.
func get(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond for up to 60 s, failing early if done closes (the
// program exited; out holds what it said).
func waitFor(t *testing.T, cond func() bool, what string, done <-chan struct{}, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		select {
		case <-done:
			t.Fatalf("exited while waiting for %s:\n%s", what, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 60 s", what)
		}
	}
}
