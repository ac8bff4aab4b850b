//go:build stack

package deploy

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The secure profile's files run by the real programs (make test-stack):
// Prometheus and promtool of tools/prometheus, Jaeger of tools/jaeger.

// secureTool builds (or finds in the cache) a program of tools/<module>.
func secureTool(t *testing.T, module, name string) string {
	t.Helper()
	return built(t, "build-tool.sh", module, name)
}

// TestStackSecurePrometheus runs the real Prometheus on the secure profile's
// files, with the container's certificate directory mapped to one make certs
// wrote: promtool accepts web-secure.yml and prometheus-secure.yml, the
// server answers the healthcheck's promtool over https with the CA, and a
// plain http request gets no answer from it.
func TestStackSecurePrometheus(t *testing.T) {
	promtool, prometheus := secureTool(t, "prometheus", "promtool"), secureTool(t, "prometheus", "prometheus")
	certs, _ := certsFiles(t)
	dir := t.TempDir()
	mapped := func(name string) string {
		raw, err := os.ReadFile("prometheus/" + name)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(raw), "/etc/prometheus/certs/", certs+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	web, config, client := mapped("web-secure.yml"), mapped("prometheus-secure.yml"), mapped("client-secure.yml")
	// Rule files are relative to the configuration, as beside it in the container.
	if err := os.Symlink(mustAbs(t, "prometheus/rules"), filepath.Join(dir, "rules")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "web-config", web}, {"check", "config", "--syntax-only", config}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}

	addr := freeAddr(t)
	srv := exec.Command(prometheus, "--config.file="+config, "--web.config.file="+web, "--web.listen-address="+addr,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.enable-otlp-receiver", "--web.enable-remote-write-receiver")
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	srv.Stdout, srv.Stderr = logFile, logFile
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		<-exited
	})
	serverLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	// The container's healthcheck, as docker-compose.secure.yml runs it.
	for deadline := time.Now().Add(time.Minute); ; {
		out, err := exec.Command(promtool, "check", "ready", "--url=https://"+addr, "--http.config.file="+client).CombinedOutput()
		if err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, serverLog())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("promtool check ready over https: %v\n%s\nprometheus:\n%s", err, out, serverLog())
		}
	}
	resp, err := http.Get("http://" + addr + "/-/ready")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain http to Prometheus answered %s, want a refusal", resp.Status)
		}
	}
}

// freeAddr is a local address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStackSecureJaeger runs Jaeger's own validate command on its
// configuration with the secure overlay, as the native demo and the
// compose profile run it.
func TestStackSecureJaeger(t *testing.T) {
	jaeger := secureTool(t, "jaeger", "jaeger")
	cmd := exec.Command(jaeger, "validate", "--config=jaeger/config.yaml", "--config=jaeger/secure.yaml")
	cmd.Env = append(os.Environ(), "CERTS_DIR=/etc/jaeger/certs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("jaeger validate: %v\n%s", err, out)
	}
}
