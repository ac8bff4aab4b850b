package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The secure mode end to end, as README.md sets it up: the files of `make
// certs`, the Secrets its kubectl commands make from them (a stand-in kubectl
// writes each Secret as a directory, one file per key), mounted as the chart
// mounts them, and both tiers run by the collector the tests build on their
// rendered secure configurations:
//
//	orders' client ─TLS, orders.crt + orders.headers─▶ agent ─TLS, collector-agent.crt + credential─▶ gateway tier ─▶ Tempo, Prometheus
//
// A span sent as orders sends it reaches Tempo, and its span metrics reach
// Prometheus; each tier refuses a client without a certificate, or without
// or with a wrong credential. The agent's loadbalancing exporter is swapped
// for the OTLP exporter it builds per backend (TestCollectorConfigsValidate
// says why), dialling the gateway tier with the same TLS and credential.
func TestSecureTelemetryEndToEnd(t *testing.T) {
	bin := collectorBinary(t)
	certs, secrets, helmArgs := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "helm-args")
	gen := exec.Command("go", "run", "./cmd/certs", "-dir", certs)
	gen.Dir, gen.Env = "..", append(os.Environ(), "GOWORK=off")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("go run ./cmd/certs: %v\n%s", err, out)
	}
	// The README's block, less its `make certs`, which is the generator just run.
	block := readmeBlock(t, "create secret generic ordertrace-collector-agent")
	if !strings.HasPrefix(block, "make certs\n") {
		t.Fatalf("README.md's secure block does not start with make certs:\n%s", block)
	}
	script := fakeKubectl + strings.ReplaceAll(strings.TrimPrefix(block, "make certs\n"), "deploy/certs", certs)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "SECRETS="+secrets, "HELM_ARGS="+helmArgs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's secure commands: %v\n%s", err, out)
	}
	if args := string(readFile(t, helmArgs)); !strings.Contains(args, "--set telemetry.secure.enabled=true") {
		t.Errorf("the README installs with %q, not the secure set", args)
	}

	c := renderChart(t, "ordertrace/ci/secure-values.yaml")
	// Every Secret the secure set reads, and no other, is made by the
	// README's commands.
	made, _ := filepath.Glob(filepath.Join(secrets, "*"))
	read := map[string]bool{}
	for _, w := range c.workloads() {
		podSecrets(t, c, w, secrets, read)
	}
	for _, dir := range made {
		if !read[filepath.Base(dir)] {
			t.Errorf("the README makes Secret %s, which the chart does not read", filepath.Base(dir))
		}
	}

	backends := newFakeBackends(t)
	gateway := c.collector(t, "collector-gateway")
	mountSecrets(t, c, gateway, secrets)
	gatewayPorts := listenOnFreePorts(t, gateway)
	backends.receive(gateway)
	startCollector(t, bin, gateway)

	agent := c.collector(t, "collector-agent")
	mountSecrets(t, c, agent, secrets)
	swapped := swapLoadBalancer(t, agent.merged(t))
	// The address a resolver would return: the gateway tier's pod, here.
	swapped["exporters"].(map[string]any)["otlp_grpc/loadbalancing"].(map[string]any)["endpoint"] = "${env:COLLECTOR_GATEWAY_ENDPOINT}"
	agentFile := filepath.Join(t.TempDir(), "agent.yaml")
	writeYAML(t, agentFile, swapped)
	agent.names, agent.files = []string{"agent.yaml"}, [][]byte{readFile(t, agentFile)}
	agent.env["COLLECTOR_GATEWAY_ENDPOINT"] = gatewayPorts.grpc
	agentPorts := listenOnFreePorts(t, agent)
	agentLogs := startCollector(t, bin, agent)

	// orders, with what the chart gives its pod: the files of its Secret
	// volume, named by the SDK's variables, and its headers variable.
	ordersPod := c.component(t, "orders")
	mounts, fromSecrets := podSecrets(t, c, ordersPod, secrets, nil)
	ordersEnv := envOf(ordersPod.Pod.Spec.Containers[0])
	local := func(variable string) string {
		for mountPath, dir := range mounts {
			if rel, ok := strings.CutPrefix(ordersEnv[variable], mountPath+"/"); ok {
				return filepath.Join(dir, rel)
			}
		}
		t.Fatalf("orders' %s = %q is in none of its Secret volumes", variable, ordersEnv[variable])
		return ""
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(readFile(t, local("OTEL_EXPORTER_OTLP_CERTIFICATE"))) {
		t.Fatal("orders' CA file holds no certificate")
	}
	pair, err := tls.LoadX509KeyPair(local("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), local("OTEL_EXPORTER_OTLP_CLIENT_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	orders := []tls.Certificate{pair}
	// The SDK reads OTEL_EXPORTER_OTLP_HEADERS as one header whose value is
	// percent-encoded.
	name, value, _ := strings.Cut(fromSecrets["OTEL_EXPORTER_OTLP_HEADERS"], "=")
	value, _ = url.PathUnescape(value)
	if name != "Authorization" {
		t.Fatalf("orders' headers set %s", name)
	}

	// The name both tiers' certificate is checked under: the agent Service's,
	// which the services dial and the agent's exporters override.
	serverName := agent.env["COLLECTOR_TLS_SERVER_NAME"]
	send := func(addr string, cert []tls.Certificate, authorization, body string) (int, error) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: serverName, Certificates: cert,
		}}}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/traces", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	if status, err := send(agentPorts.http, orders, value, testSpan("order.process")); err != nil || status != http.StatusOK {
		t.Fatalf("orders to the agent: %d %v; the agent's log:\n%s", status, err, agentLogs.String())
	}
	// Only through the agent's own certificate and credential does the span
	// get past the gateway tier.
	backends.waitFor(t, "/tempo/v1/traces", "order.process")
	backends.waitFor(t, "/prometheus/v1/metrics", "order.process", "collector.instance.id")

	// And each tier refuses what it should.
	agentCerts := agent.env["AGENT_CERTS_DIR"]
	agentPair, err := tls.LoadX509KeyPair(filepath.Join(agentCerts, "client.crt"), filepath.Join(agentCerts, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	password := agent.env["COLLECTOR_AGENT_PASSWORD"]
	basic := func(user, pass string) string {
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	for _, tc := range []struct {
		what, addr    string
		cert          []tls.Certificate
		authorization string
		want          int // 0: no connection at all
	}{
		{"the agent to the gateway tier", gatewayPorts.http, []tls.Certificate{agentPair}, basic("collector-agent", password), http.StatusOK},
		{"the agent with a wrong password", gatewayPorts.http, []tls.Certificate{agentPair}, basic("collector-agent", "guessed"), http.StatusUnauthorized},
		{"the agent without its credential", gatewayPorts.http, []tls.Certificate{agentPair}, "", http.StatusUnauthorized},
		{"the agent without its certificate", gatewayPorts.http, nil, basic("collector-agent", password), 0},
		{"orders with a wrong password", agentPorts.http, orders, basic("orders", "guessed"), http.StatusUnauthorized},
		{"orders without its credential", agentPorts.http, orders, "", http.StatusUnauthorized},
		{"orders without its certificate", agentPorts.http, nil, value, 0},
	} {
		status, err := send(tc.addr, tc.cert, tc.authorization, `{"resourceSpans":[]}`)
		if tc.want == 0 && err == nil {
			t.Errorf("%s: let in with %d", tc.what, status)
		}
		if tc.want != 0 && (err != nil || status != tc.want) {
			t.Errorf("%s: %d %v, want %d", tc.what, status, err, tc.want)
		}
	}
	t.Logf("orders ─TLS─▶ agent ─TLS─▶ gateway tier ─▶ Tempo and Prometheus, checked as %s, with the Secrets of the README's commands; "+
		"both tiers refuse a missing certificate and a missing or wrong credential", serverName)
}

// fakeKubectl stands in for the two commands of README.md's secure block:
// `kubectl -n shop create secret generic NAME --from-file=KEY=PATH
// --from-literal=KEY=VALUE ...` writes the Secret as the directory
// $SECRETS/NAME, one file per key, and `helm` records its arguments. Anything
// else fails, so a README the test cannot follow fails the test.
const fakeKubectl = `
kubectl() {
  if [ "$#" -lt 7 ] || [ "$1 $2 $3 $4 $5" != "-n shop create secret generic" ]; then
    echo "kubectl $1 $2 $3 $4 $5: not a command the test stands in for" >&2; return 1
  fi
  local dir="$SECRETS/$6" arg
  shift 6
  mkdir "$dir" || return 1 # kubectl refuses a Secret that exists
  for arg in "$@"; do
    case $arg in
      --from-file=*=*) arg=${arg#--from-file=}; cp "${arg#*=}" "$dir/${arg%%=*}" || return 1 ;;
      --from-literal=*=*) arg=${arg#--from-literal=}; printf '%s' "${arg#*=}" > "$dir/${arg%%=*}" ;;
      *) echo "kubectl: ${arg%%=*}: not a flag the test stands in for" >&2; return 1 ;;
    esac
  done
}
helm() { printf '%s\n' "$*" >> "$HELM_ARGS"; }
`

// podSecrets returns what a pod of w sees of the Secrets in dir (as
// fakeKubectl writes them) that the chart does not render itself: the
// directory of each Secret volume, by mount path, with the volume's items in
// it as the kubelet places them, and each variable taken from a Secret. It
// fails the test for a Secret or key the README's commands do not make, and
// marks each Secret read in read (when not nil).
func podSecrets(t *testing.T, c chart, w workload, dir string, read map[string]bool) (mounts, env map[string]string) {
	t.Helper()
	rendered := map[string]bool{}
	for _, s := range c.secrets {
		rendered[s.Name] = true
	}
	key := func(secret, key string) []byte {
		t.Helper()
		if read != nil {
			read[secret] = true
		}
		b, err := os.ReadFile(filepath.Join(dir, secret, key))
		if err != nil {
			t.Fatalf("%s reads key %s of Secret %s, which the README's commands do not make", w.Name, key, secret)
		}
		return b
	}
	mounts, env = map[string]string{}, map[string]string{}
	for _, ctr := range w.Pod.Spec.Containers {
		for _, m := range ctr.VolumeMounts {
			// A mount of no pod volume is a StatefulSet's claim.
			i := slices.IndexFunc(w.Pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
			if i < 0 {
				continue
			}
			v := w.Pod.Spec.Volumes[i].Secret
			if v == nil || rendered[v.SecretName] {
				continue
			}
			if len(v.Items) == 0 {
				t.Fatalf("%s mounts all of Secret %s: list its keys, as the chart's other volumes do", w.Name, v.SecretName)
			}
			mounted := t.TempDir()
			for _, item := range v.Items {
				// The chart's defaultMode: readable by the owner and group.
				if err := os.WriteFile(filepath.Join(mounted, item.Path), key(v.SecretName, item.Key), 0o440); err != nil {
					t.Fatal(err)
				}
			}
			mounts[m.MountPath] = mounted
		}
		for _, e := range ctr.Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && !rendered[ref.SecretKeyRef.Name] {
				env[e.Name] = string(key(ref.SecretKeyRef.Name, ref.SecretKeyRef.Key))
			}
		}
	}
	return mounts, env
}

// mountSecrets gives a collector run its pod's Secrets: each variable naming
// a mount path names the directory podSecrets made for it instead, and each
// variable from a Secret gets the Secret's value.
func mountSecrets(t *testing.T, c chart, run collectorRun, dir string) {
	t.Helper()
	mounts, env := podSecrets(t, c, run.workload, dir, nil)
	for name, value := range run.env {
		if local, ok := mounts[value]; ok {
			run.env[name] = local
			delete(mounts, value)
		}
	}
	if len(mounts) > 0 {
		t.Fatalf("%s: no variable names %v, so the test cannot point its configuration elsewhere", run.workload.Name, slices.Sorted(maps.Keys(mounts)))
	}
	maps.Copy(run.env, env)
}

// ports are where a collector of the test listens.
type ports struct{ grpc, http, health string }

// listenOnFreePorts points a collector's listeners at free loopback ports.
func listenOnFreePorts(t *testing.T, run collectorRun) ports {
	t.Helper()
	p := freePorts(t, 5)
	run.env["COLLECTOR_OTLP_GRPC_ENDPOINT"] = p[0]
	run.env["COLLECTOR_OTLP_HTTP_ENDPOINT"] = p[1]
	run.env["COLLECTOR_HEALTH_ENDPOINT"] = p[2]
	run.env["COLLECTOR_PPROF_ENDPOINT"] = p[3]
	run.env["COLLECTOR_METRICS_HOST"], run.env["COLLECTOR_METRICS_PORT"], _ = strings.Cut(p[4], ":")
	return ports{p[0], p[1], p[2]}
}

// testSpan is one finished span of orders, as OTLP/JSON.
func testSpan(name string) string {
	now := time.Now()
	return `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}}]},` +
		`"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"` + name + `","kind":1,` +
		`"startTimeUnixNano":"` + itoa(now.Add(-20*time.Millisecond).UnixNano()) + `","endTimeUnixNano":"` + itoa(now.UnixNano()) + `"}]}]}]}`
}

// readmeBlock returns the fenced shell block of README.md that contains marker.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	readme := string(readFile(t, "README.md"))
	for _, m := range regexp.MustCompile("(?ms)^```sh\n(.*?)^```").FindAllStringSubmatch(readme, -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("README.md has no shell block with %q", marker)
	return ""
}

// startCollector runs the collector on run's files and environment until the
// test ends, and waits for its health check.
func startCollector(t *testing.T, bin string, run collectorRun) *syncBuffer {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for i, f := range run.files {
		path := filepath.Join(dir, run.names[i])
		if err := os.WriteFile(path, f, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config="+path)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = run.environ(), logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	client := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 60*time.Second, "health check from the collector", logs, func() bool {
		resp, err := client.Get("http://" + run.env["COLLECTOR_HEALTH_ENDPOINT"] + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return logs
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
