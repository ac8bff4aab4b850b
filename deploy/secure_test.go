package deploy

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
)

// The secure profile (make up SECURE=1): docker-compose.secure.yml merged
// over docker-compose.yml, the collector's overlays, and the backends' TLS
// variants of their configuration files.

var clientServices = []string{"gateway", "orders", "fulfillment"}

// loadSecureCompose loads both compose files as make up SECURE=1 does, with
// the variables the Makefile sets for a profile ("" or "jaeger"). The
// services' env files are not read: make certs writes them, and
// TestComposeSecureCerts checks what it writes.
func loadSecureCompose(t *testing.T, profile string) *types.Project {
	t.Helper()
	overlay, secureOverlay := "none", "none"
	profiles := []string{}
	if profile != "" {
		overlay, secureOverlay, profiles = profile, profile+"-secure", []string{profile}
	}
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml", "docker-compose.secure.yml"},
		cli.WithWorkingDirectory("."),
		cli.WithProfiles(profiles),
		cli.WithEnv([]string{"CERTS_GID=1000", "COLLECTOR_OVERLAY=" + overlay, "COLLECTOR_SECURE_OVERLAY=" + secureOverlay}),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithoutEnvironmentResolution,
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml with docker-compose.secure.yml: %v", err)
	}
	return project
}

// mounts maps each file a container sees to its host path.
func mounts(s types.ServiceConfig) map[string]string {
	m := map[string]string{}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind {
			m[v.Target] = v.Source
		}
	}
	return m
}

// hostPath finds the host file behind a path in the container, through a
// mount of the file itself or of a directory above it; the deepest mount
// wins, as in the container.
func hostPath(s types.ServiceConfig, path string) (string, bool) {
	found, depth := "", -1
	for target, source := range mounts(s) {
		if len(target) <= depth {
			continue
		}
		if path == target {
			found, depth = source, len(target)
		} else if rel, ok := strings.CutPrefix(path, target+"/"); ok {
			found, depth = filepath.Join(source, rel), len(target)
		}
	}
	return found, depth >= 0
}

// certsFiles is what make certs writes: the names a mount of the certs
// directory may take. It runs the real target into a temporary directory.
func certsFiles(t *testing.T) (dir string, names []string) {
	t.Helper()
	dir = t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "certs", "CERTS_DIR="+dir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make certs: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return dir, names
}

// TestComposeSecureCerts runs make certs: each service's env file sets
// exactly its credential, as compose reads env files, and the files the
// containers read are readable by the group they join, the CA's key not.
func TestComposeSecureCerts(t *testing.T) {
	dir, names := certsFiles(t)
	for _, s := range clientServices {
		headers, err := os.ReadFile(filepath.Join(dir, s+".headers"))
		if err != nil {
			t.Fatal(err)
		}
		env, err := dotenv.Read(filepath.Join(dir, s+".env"))
		if err != nil {
			t.Fatalf("compose cannot read %s.env: %v", s, err)
		}
		// Never print the credential itself.
		if len(env) != 1 || env["OTEL_EXPORTER_OTLP_HEADERS"] != string(headers) {
			t.Errorf("%s.env sets %v, want only OTEL_EXPORTER_OTLP_HEADERS, as in %s.headers", s, slices.Sorted(maps.Keys(env)), s)
		}
	}
	for _, name := range names {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		mode := info.Mode().Perm()
		switch {
		case name == "ca.key" || strings.HasSuffix(name, ".headers") || strings.HasSuffix(name, ".env"):
			if mode != 0o600 {
				t.Errorf("%s has mode %o, want 600: no container reads it", name, mode)
			}
		case strings.HasSuffix(name, ".key") || name == "collector.htpasswd":
			if mode != 0o640 {
				t.Errorf("%s has mode %o, want 640: a container's user reads it through the group it joins", name, mode)
			}
		}
	}
}

func TestComposeSecure(t *testing.T) {
	base := loadCompose(t)
	p := loadSecureCompose(t, "")
	_, certNames := certsFiles(t)
	certsDir, _ := filepath.Abs("certs")

	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			b := base.Services[name]
			if got, want := s.Deploy.Resources.Limits.MemoryBytes, b.Deploy.Resources.Limits.MemoryBytes; got != want {
				t.Errorf("memory limit %d MiB, want docker-compose.yml's %d MiB", got>>20, want>>20)
			}
			if !reflect.DeepEqual(s.Ports, b.Ports) {
				t.Errorf("ports %v, want docker-compose.yml's %v", s.Ports, b.Ports)
			}
			for target, source := range mounts(s) {
				if filepath.Dir(source) == certsDir {
					if !slices.Contains(certNames, filepath.Base(source)) {
						t.Errorf("mounts certs/%s, which make certs does not write", filepath.Base(source))
					}
					if filepath.Base(source) == "ca.key" {
						t.Errorf("mounts the CA's key at %s: no container may sign certificates", target)
					}
					if strings.HasSuffix(source, ".key") && len(s.GroupAdd) == 0 {
						t.Errorf("reads %s without joining the certs' group (group_add)", filepath.Base(source))
					}
				} else if _, err := os.Stat(source); err != nil {
					t.Errorf("mounts %s, which is not in the repository", source)
				}
			}
		})
	}

	for _, name := range clientServices {
		s := p.Services[name]
		env := func(k string) string {
			if v := s.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		if got := env("OTEL_EXPORTER_OTLP_ENDPOINT"); got != "https://otel-collector:4318" {
			t.Errorf("%s exports to %q, want https://otel-collector:4318", name, got)
		}
		for k, want := range map[string]string{
			"OTEL_EXPORTER_OTLP_CERTIFICATE":        "ca.crt",
			"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": name + ".crt",
			"OTEL_EXPORTER_OTLP_CLIENT_KEY":         name + ".key",
		} {
			source, ok := hostPath(s, env(k))
			if !ok || source != filepath.Join(certsDir, want) {
				t.Errorf("%s: %s=%q is %q on the host, want certs/%s", name, k, env(k), source, want)
			}
		}
		// The credential comes from the service's own env file, which
		// make certs writes (TestComposeSecureCerts).
		if len(s.EnvFiles) != 1 || s.EnvFiles[0].Path != filepath.Join(certsDir, name+".env") {
			t.Errorf("%s: env_file %v, want certs/%s.env", name, s.EnvFiles, name)
		}
		for k := range s.Environment {
			if k != "OTEL_EXPORTER_OTLP_HEADERS" && strings.HasPrefix(k, "OTEL_EXPORTER_OTLP_") && base.Services[name].Environment[k] == nil &&
				!slices.Contains([]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY", "OTEL_EXPORTER_OTLP_COMPRESSION"}, k) {
				t.Errorf("%s: %s is not one of the standard TLS and compression variables", name, k)
			}
		}
		// Profiles would travel in plain http (Pyroscope has no TLS here):
		// the secure profile sends none.
		if got := env("PYROSCOPE_SERVER_ADDRESS"); got != "" {
			t.Errorf("%s pushes profiles to %q in the secure profile, want none", name, got)
		}
		// The production profile compresses (docs/production-checklist.md, item 9).
		if got := env("OTEL_EXPORTER_OTLP_COMPRESSION"); got != "gzip" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_COMPRESSION=%q, want gzip", name, got)
		}
	}

	// The collector runs secure.yaml over its overlay, and every file its
	// configuration names is mounted.
	collector := p.Services["otel-collector"]
	configs := collectorConfigs(t, collector)
	if !slices.Contains(configs, "secure.yaml") {
		t.Fatalf("the collector runs %v, without secure.yaml", configs)
	}
	checkSecureCollector(t, collector)

	// Each backend serves TLS: its secure configuration is the one it runs,
	// and every certificate it names is mounted.
	for _, c := range []struct{ service, flag, file string }{
		{"tempo", "-config.file=", "tempo/tempo-secure.yaml"},
		{"loki", "-config.file=", "loki/loki-secure.yaml"},
		{"prometheus", "--config.file=", "prometheus/prometheus-secure.yml"},
		{"prometheus", "--web.config.file=", "prometheus/web-secure.yml"},
	} {
		s := p.Services[c.service]
		var path string
		for _, arg := range s.Command {
			if v, ok := strings.CutPrefix(arg, c.flag); ok {
				path = v
			}
		}
		source, ok := hostPath(s, path)
		if want, _ := filepath.Abs(c.file); !ok || source != want {
			t.Errorf("%s runs %s%s, which is %q on the host; want %s", c.service, c.flag, path, source, c.file)
			continue
		}
		checkCertPaths(t, s, c.file, "")
	}
	// Prometheus keeps every flag of docker-compose.yml.
	for _, arg := range base.Services["prometheus"].Command {
		if !strings.HasPrefix(arg, "--config.file=") && !slices.Contains(p.Services["prometheus"].Command, arg) {
			t.Errorf("prometheus runs without %s in the secure profile", arg)
		}
	}
	// Healthchecks reach the TLS servers with the CA.
	for name, want := range map[string]string{
		"tempo":      "https://127.0.0.1:3200/ready",
		"loki":       "https://127.0.0.1:3100/ready",
		"prometheus": "--url=https://127.0.0.1:9090",
	} {
		test := p.Services[name].HealthCheck.Test
		if !slices.Contains(test, want) {
			t.Errorf("%s's healthcheck %v does not check %s", name, test, want)
		}
		for _, arg := range test {
			if strings.Contains(arg, "/certs/") || strings.HasSuffix(arg, "-secure.yml") {
				if _, ok := hostPath(p.Services[name], strings.TrimPrefix(arg, "--http.config.file=")); !ok {
					t.Errorf("%s's healthcheck reads %s, which is not mounted", name, arg)
				}
			}
		}
	}
	checkCertPaths(t, p.Services["prometheus"], "prometheus/client-secure.yml", "")

	// Grafana reads the backends over https with the CA.
	grafana := p.Services["grafana"]
	source, _ := hostPath(grafana, "/etc/grafana/provisioning/datasources/datasources.yaml")
	if want, _ := filepath.Abs("grafana/secure/datasources.yaml"); source != want {
		t.Errorf("grafana provisions its data sources from %s, want grafana/secure/datasources.yaml", source)
	}
	if _, ok := hostPath(grafana, "/etc/grafana/certs/ca.crt"); !ok {
		t.Error("grafana has no CA certificate mounted")
	}
}

// TestComposeSecureJaeger: with PROFILE=jaeger, the collector also runs
// jaeger.yaml and jaeger-secure.yaml, and Jaeger receives over TLS.
func TestComposeSecureJaeger(t *testing.T) {
	p := loadSecureCompose(t, "jaeger")
	configs := collectorConfigs(t, p.Services["otel-collector"])
	if want := []string{"config.yaml", "jaeger.yaml", "secure.yaml", "jaeger-secure.yaml"}; !slices.Equal(configs, want) {
		t.Errorf("the collector runs %v, want %v", configs, want)
	}
	checkSecureCollector(t, p.Services["otel-collector"])
	jaeger, ok := p.Services["jaeger"]
	if !ok {
		t.Fatal("no jaeger service with the jaeger profile")
	}
	var files []string
	for _, arg := range jaeger.Command {
		path, ok := strings.CutPrefix(arg, "--config=")
		if !ok {
			continue
		}
		source, ok := hostPath(jaeger, path)
		if !ok {
			t.Errorf("jaeger runs %s, which is not mounted", path)
			continue
		}
		files = append(files, filepath.Base(source))
		rel, _ := filepath.Rel(mustAbs(t, "."), source)
		checkCertPaths(t, jaeger, rel, envOf(jaeger, "CERTS_DIR"))
	}
	if !slices.Equal(files, []string{"config.yaml", "secure.yaml"}) {
		t.Errorf("jaeger runs %v, want config.yaml and secure.yaml", files)
	}
	if tls := lookup(readYAML(t, "jaeger/secure.yaml"), "receivers.otlp.protocols.http.tls"); tls == nil {
		t.Error("jaeger/secure.yaml gives Jaeger's OTLP receiver no TLS")
	}
	if len(p.Services["jaeger"].GroupAdd) == 0 {
		t.Error("jaeger does not join the certs' group, so cannot read its key")
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func envOf(s types.ServiceConfig, k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

// collectorConfigs lists the configuration files the collector runs, by
// name, each checked to be mounted from deploy/otel-collector.
func collectorConfigs(t *testing.T, s types.ServiceConfig) []string {
	t.Helper()
	var files []string
	for _, arg := range s.Command {
		path, ok := strings.CutPrefix(arg, "--config=")
		if !ok {
			continue
		}
		source, ok := hostPath(s, path)
		if _, err := os.Stat(source); !ok || err != nil {
			t.Errorf("the collector runs %s, which is no file of deploy/otel-collector", path)
		}
		files = append(files, filepath.Base(source))
	}
	return files
}

// checkSecureCollector: no OTLP protocol of config.yaml stays plaintext
// once secure.yaml is merged over it, and every file the collector's
// configurations name under CERTS_DIR is mounted.
func checkSecureCollector(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	protocols, _ := lookup(readYAML(t, "otel-collector/config.yaml"), "receivers.otlp.protocols").(map[string]any)
	secure := readYAML(t, "otel-collector/secure.yaml")
	if len(protocols) == 0 {
		t.Fatal("config.yaml has no OTLP protocols")
	}
	for proto := range protocols {
		for _, k := range []string{"cert_file", "key_file", "client_ca_file"} {
			if lookup(secure, "receivers.otlp.protocols."+proto+".tls."+k) == nil {
				t.Errorf("secure.yaml leaves OTLP/%s without tls.%s", proto, k)
			}
		}
	}
	receivers, _ := readYAML(t, "otel-collector/config.yaml")["receivers"].(map[string]any)
	if len(receivers) != 1 || receivers["otlp"] == nil {
		t.Errorf("config.yaml has receivers %v; secure.yaml secures OTLP only", slices.Sorted(maps.Keys(receivers)))
	}
	certsDir := envOf(s, "CERTS_DIR")
	if certsDir == "" {
		t.Error("the collector has no CERTS_DIR: it would look for its certificates under its read-only configuration mount")
	}
	for _, f := range collectorConfigs(t, s) {
		checkCertPaths(t, s, "otel-collector/"+f, certsDir)
	}
}

var (
	certsDirVar = regexp.MustCompile(`\$\{env:CERTS_DIR:-[^}]*\}`)
	fileKey     = regexp.MustCompile(`(?:^|[\s_])file: (\S+)`) // cert_file, ca_file, htpasswd's file...
)

// checkCertPaths: every certificate, key or password file that a
// configuration file names (with ${env:CERTS_DIR:-...} as the container
// sets it) is mounted into the container.
func checkCertPaths(t *testing.T, s types.ServiceConfig, file, certsDir string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if certsDir != "" {
			line = certsDirVar.ReplaceAllString(line, certsDir)
		}
		m := fileKey.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		path := m[1]
		if _, ok := hostPath(s, path); !ok {
			t.Errorf("%s names %s, which %s does not mount", file, path, s.Name)
		}
	}
}

// TLS keys and values are what a secure copy may add; with them removed,
// and https read as http, it must equal its original.
var tlsKeys = []string{"tls", "http_tls_config", "tls_config", "scheme", "tlsAuthWithCACert", "secureJsonData"}

func withoutTLS(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, x := range v {
			if !slices.Contains(tlsKeys, k) {
				m[k] = withoutTLS(x)
			}
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = withoutTLS(x)
		}
		return l
	case string:
		return strings.Replace(v, "https://", "http://", 1)
	}
	return v
}

// TestComposeSecureCopies: Tempo, Loki, Prometheus and Grafana's data
// sources take one configuration each, so the secure profile runs copies;
// they stay their originals plus TLS, and have the TLS they need.
func TestComposeSecureCopies(t *testing.T) {
	for _, c := range []struct {
		original, copy string
		want           []string // paths that must be set in the copy
	}{
		{"tempo/tempo.yaml", "tempo/tempo-secure.yaml", []string{
			"server.http_tls_config.cert_file", "server.http_tls_config.key_file",
			"distributor.receivers.otlp.protocols.grpc.tls.cert_file", "distributor.receivers.otlp.protocols.http.tls.cert_file",
		}},
		{"loki/loki.yaml", "loki/loki-secure.yaml", []string{"server.http_tls_config.cert_file", "server.http_tls_config.key_file"}},
		{"prometheus/prometheus.yml", "prometheus/prometheus-secure.yml", nil},
		{"grafana/provisioning/datasources/datasources.yaml", "grafana/secure/datasources.yaml", nil},
	} {
		t.Run(c.copy, func(t *testing.T) {
			original, secure := readYAML(t, c.original), readYAML(t, c.copy)
			if !reflect.DeepEqual(withoutTLS(secure), withoutTLS(original)) {
				t.Errorf("%s differs from %s in more than TLS: bring the change over", c.copy, c.original)
			}
			for _, path := range c.want {
				if lookup(secure, path) == nil {
					t.Errorf("%s has no %s", c.copy, path)
				}
			}
		})
	}

	// Tempo 3 and Loki 3.7 take the servers' TLS keys, and nothing else new.
	tempo := maps.Clone(tempoSchema)
	tempo["server"] = withTLSKeys(tempoSchema["server"].(schema))
	if bad := unknownKeys(readYAML(t, "tempo/tempo-secure.yaml"), tempo, ""); len(bad) > 0 {
		t.Errorf("tempo-secure.yaml has keys Tempo 3 does not accept: %v", bad)
	}
	// loki-secure.yaml is loki.yaml, which Loki itself runs in make
	// test-stack, plus a server TLS block of dskit's keys.
	lokiServer, _ := lookup(readYAML(t, "loki/loki-secure.yaml"), "server").(map[string]any)
	if bad := unknownKeys(lokiServer, withTLSKeys(schema{"http_listen_port": any_, "grpc_listen_port": any_, "log_level": any_, "graceful_shutdown_timeout": any_}), "server."); len(bad) > 0 {
		t.Errorf("loki-secure.yaml has keys Loki 3 does not accept: %v", bad)
	}
	rw, _ := lookup(readYAML(t, "tempo/tempo-secure.yaml"), "metrics_generator.storage.remote_write").([]any)
	if len(rw) != 1 || !strings.HasPrefix(fmt.Sprint(lookup(rw[0].(map[string]any), "url")), "https://") ||
		lookup(rw[0].(map[string]any), "tls_config.ca_file") == nil {
		t.Errorf("Tempo's remote write %v, want https to Prometheus with the CA", rw)
	}

	// Prometheus scrapes over https every server that now speaks TLS.
	tlsTargets := map[string]bool{"localhost:9090": true, "tempo:3200": true, "loki:3100": true}
	jobs, _ := readYAML(t, "prometheus/prometheus-secure.yml")["scrape_configs"].([]any)
	for _, j := range jobs {
		job := j.(map[string]any)
		for _, sc := range job["static_configs"].([]any) {
			for _, target := range sc.(map[string]any)["targets"].([]any) {
				https := job["scheme"] == "https" && lookup(job, "tls_config.ca_file") != nil
				if tlsTargets[fmt.Sprint(target)] != https {
					t.Errorf("job %s scrapes %s with scheme %v: want https with the CA exactly for Prometheus, Tempo and Loki", job["job_name"], target, job["scheme"])
				}
			}
		}
	}

	// Grafana reads Prometheus, Tempo and Loki over https, trusting the CA.
	sources, _ := readYAML(t, "grafana/secure/datasources.yaml")["datasources"].([]any)
	for _, d := range sources {
		ds := d.(map[string]any)
		if ds["uid"] == "jaeger" || ds["uid"] == "pyroscope" {
			continue // Jaeger's query API stays plain http, as its UI; Pyroscope gets no profiles here
		}
		if !strings.HasPrefix(fmt.Sprint(ds["url"]), "https://") || lookup(ds, "jsonData.tlsAuthWithCACert") != true ||
			!strings.HasPrefix(fmt.Sprint(lookup(ds, "secureJsonData.tlsCACert")), "$__file{/etc/grafana/certs/") {
			t.Errorf("data source %s: url %v, want https with the CA from a file", ds["uid"], ds["url"])
		}
	}
}

func withTLSKeys(s schema) schema {
	s = maps.Clone(s)
	tls := schema{"cert_file": any_, "key_file": any_, "client_auth_type": any_, "client_ca_file": any_}
	s["http_tls_config"], s["grpc_tls_config"] = tls, tls
	return s
}

// TestCollectorValidatesSecure runs the collector's own validate command on
// the secure profile's configurations: the stack's, with Jaeger, and the
// native demo's.
func TestCollectorValidatesSecure(t *testing.T) {
	bin := collector(t)
	for _, files := range [][]string{
		{"config.yaml", "none.yaml", "secure.yaml", "none.yaml"},
		{"config.yaml", "jaeger.yaml", "secure.yaml", "jaeger-secure.yaml"},
		{"config.yaml", "demo.yaml", "secure.yaml"},
	} {
		t.Run(strings.Join(files, "+"), func(t *testing.T) {
			args := []string{"validate"}
			for _, f := range files {
				args = append(args, "--config=otel-collector/"+f)
			}
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("validate: %v\n%s", err, out)
			}
		})
	}
}
