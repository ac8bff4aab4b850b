package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const maxStackMemory = 2 << 30 // a workshop laptop must run the default stack

// loadCompose loads docker-compose.yml the way docker compose does, with the
// given profiles active.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithWorkingDirectory("."),
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return project
}

// pinned reports whether an image reference names an exact tag.
func pinned(image string) bool {
	name, tag, ok := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
	return ok && name != "" && tag != "" && tag != "latest" && !strings.Contains(tag, "$")
}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t, "*") // every profile: jaeger too
	if len(p.Services) < 12 {
		t.Fatalf("%d services, want the suite, its backends and the telemetry stack", len(p.Services))
	}
	ports := map[uint32]string{}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			if !pinned(s.Image) {
				t.Errorf("image %q is not pinned to an exact tag", s.Image)
			}
			if s.Build != nil {
				for k, v := range s.Build.Args {
					if strings.HasSuffix(k, "IMAGE") && (v == nil || !pinned(*v)) {
						t.Errorf("build arg %s is not a pinned image", k)
					}
				}
				checkDockerfile(t, filepath.Join(s.Build.Context, s.Build.Dockerfile))
			}
			if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
				// A run (a load test) rather than a service needs none.
				if !slices.Contains(s.Profiles, "load") {
					t.Error("no healthcheck")
				}
			}
			if s.Deploy == nil || s.Deploy.Resources.Limits == nil || s.Deploy.Resources.Limits.MemoryBytes == 0 {
				t.Error("no memory limit")
			}
			for dep, d := range s.DependsOn {
				if d.Condition != types.ServiceConditionHealthy {
					t.Errorf("depends on %s with condition %q, want service_healthy", dep, d.Condition)
				}
			}
			for _, v := range s.Volumes {
				switch v.Type {
				case types.VolumeTypeBind:
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("mounts %s, which is not in the repository", v.Source)
					}
				case types.VolumeTypeVolume:
					if _, ok := p.Volumes[v.Source]; !ok {
						t.Errorf("volume %s is not declared", v.Source)
					}
				}
			}
			for _, port := range s.Ports {
				published := port.Published
				var n uint32
				fmt.Sscan(published, &n)
				if other, taken := ports[n]; taken {
					t.Errorf("host port %d is also published by %s", n, other)
				}
				ports[n] = name
			}
		})
	}
}

// TestComposeMemory prints the default stack's memory limits and checks
// their sum against what a workshop laptop can give.
func TestComposeMemory(t *testing.T) {
	p := loadCompose(t) // default profile only
	var total int64
	var lines []string
	for name, s := range p.Services {
		if s.Deploy == nil || s.Deploy.Resources.Limits == nil {
			t.Fatalf("%s has no memory limit", name)
		}
		m := int64(s.Deploy.Resources.Limits.MemoryBytes)
		total += m
		lines = append(lines, fmt.Sprintf("  %-15s %4d MiB", name, m>>20))
	}
	sort.Strings(lines)
	t.Logf("memory limits of the default stack:\n%s\n  %-15s %4d MiB (limit %d MiB)", strings.Join(lines, "\n"), "total", total>>20, maxStackMemory>>20)
	if total > maxStackMemory {
		t.Errorf("memory limits add up to %d MiB, want at most %d MiB", total>>20, maxStackMemory>>20)
	}
	for _, optional := range []string{"jaeger", "k6"} {
		if _, ok := p.Services[optional]; ok {
			t.Errorf("%s runs without its profile", optional)
		}
	}
}

// The suite's services take only the six contract variables of the README's
// configuration table (and the project's own additions below), and the standard
// OTEL_* ones, and send their telemetry to the collector.
func TestComposeServiceConfiguration(t *testing.T) {
	p := loadCompose(t)
	allowed := map[string]bool{"HTTP_ADDR": true, "ORDERS_URL": true, "DATABASE_URL": true, "REDIS_URL": true, "AMQP_URL": true, "LOG_LEVEL": true}
	// Beyond the contract, additions of the project's own, each in the
	// README's variable table: the workshop's scenarios file (docs/workshop),
	// the priority sampler's tenants (docs/design.md, "Sampling") and the
	// switches of SQL comments and transaction-control spans.
	allowed["SCENARIOS_FILE"] = true
	allowed["PRIORITY_TENANTS"] = true
	allowed["SQL_COMMENTS"] = true
	allowed["SQL_TRANSACTION_SPANS"] = true
	allowed["PYROSCOPE_SERVER_ADDRESS"] = true // where profiles go (docs/design.md, "Telemetry")
	wantPorts := map[string][]uint32{
		"gateway": {8080}, "orders": {8081}, "fulfillment": {8082}, "otel-collector": {4317, 4318}, "grafana": {3000},
		"tempo": {3200}, "loki": {3100}, "prometheus": {9090}, "rabbitmq": {5672, 15672, 15692}, "postgres": {5432}, "redis": {6379},
		"pyroscope": {4040},
	}
	for name, want := range wantPorts {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("service %s is missing", name)
			continue
		}
		var got []uint32
		for _, port := range s.Ports {
			var n uint32
			fmt.Sscan(port.Published, &n)
			if port.Target != n {
				t.Errorf("%s maps host port %d to %d; the suite's ports (README) are the same inside and out", name, n, port.Target)
			}
			got = append(got, n)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s publishes %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"gateway", "orders", "fulfillment"} {
		s := p.Services[name]
		for k := range s.Environment {
			if !allowed[k] && !strings.HasPrefix(k, "OTEL_") {
				t.Errorf("%s is configured with %s, which is not a contract variable of the README's configuration table", name, k)
			}
		}
		if v := s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; v == nil || !strings.HasPrefix(*v, "http://otel-collector:") {
			t.Errorf("%s exports to %v, want the collector", name, v)
		}
	}
	for name, s := range p.Services {
		if v, ok := s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; ok && (v == nil || !strings.HasPrefix(*v, "http://otel-collector:")) {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT = %v, want the collector", name, v)
		}
	}
}

// The services push their profiles to the stack's Pyroscope, which is
// checked like the other backends: its image's version, its probe, a
// GOMEMLIMIT below its limit (it cannot be measured here), its data kept.
func TestComposePyroscope(t *testing.T) {
	p := loadCompose(t)
	pyro, ok := p.Services["pyroscope"]
	if !ok {
		t.Fatal("no pyroscope service")
	}
	if pyro.Build == nil || pyro.Build.Args["BASE_IMAGE"] == nil || *pyro.Build.Args["BASE_IMAGE"] != "grafana/pyroscope:2.2.1" {
		t.Errorf("pyroscope is built on %v, want grafana/pyroscope:2.2.1 (deploy/VERSIONS.md)", pyro.Build)
	}
	if !slices.Equal(pyro.HealthCheck.Test, []string{"CMD", "/usr/local/bin/healthcheck", "http://127.0.0.1:4040/ready"}) {
		t.Errorf("pyroscope's healthcheck %v, want the probe on :4040/ready", pyro.HealthCheck.Test)
	}
	limit := float64(pyro.Deploy.Resources.Limits.MemoryBytes) / (1 << 20)
	if v := pyro.Environment["GOMEMLIMIT"]; v == nil || !strings.HasSuffix(*v, "MiB") {
		t.Errorf("pyroscope: GOMEMLIMIT %v, want MiB below its limit of %.0f MiB", v, limit)
	} else if mib, err := strconv.ParseFloat(strings.TrimSuffix(*v, "MiB"), 64); err != nil || mib >= limit {
		t.Errorf("pyroscope: GOMEMLIMIT %s, want below its limit of %.0f MiB", *v, limit)
	}
	if !slices.ContainsFunc(pyro.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Source == "pyroscope-data" && v.Target == "/data" }) {
		t.Error("pyroscope keeps its data in no volume at /data, where its image writes it")
	}
	for _, name := range []string{"gateway", "orders", "fulfillment"} {
		if v := p.Services[name].Environment["PYROSCOPE_SERVER_ADDRESS"]; v == nil || *v != "http://pyroscope:4040" {
			t.Errorf("%s pushes its profiles to %v, want http://pyroscope:4040", name, v)
		}
	}
}

var fromLine = regexp.MustCompile(`(?m)^ARG (\w*IMAGE)=(\S+)$`)

// checkDockerfile checks that every base image a Dockerfile defaults to is
// pinned, and that the services' image runs as non-root.
func checkDockerfile(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, m := range fromLine.FindAllStringSubmatch(string(raw), -1) {
		if !pinned(m[2]) {
			t.Errorf("%s: %s=%s is not pinned", filepath.Base(path), m[1], m[2])
		}
	}
	if strings.Contains(string(raw), "ENTRYPOINT [\"/service\"]") && !strings.Contains(string(raw), "USER nonroot") {
		t.Errorf("%s: the service image does not run as non-root", path)
	}
}

// stack-memory.json holds each program's peak memory (VmHWM) under k6's
// average.js, measured natively by make stack-memory. A limit below the
// peak plus 30% would have the kernel kill the program under that load; a
// GOMEMLIMIT at or above the limit would never make Go's collector work
// harder before the kill.
func TestComposeMemoryFromMeasuredPeaks(t *testing.T) {
	raw, err := os.ReadFile("stack-memory.json")
	if err != nil {
		t.Fatal(err)
	}
	var measured struct {
		Scenario string             `json:"scenario"`
		PeakMiB  map[string]float64 `json:"peak_mib"`
	}
	if err := json.Unmarshal(raw, &measured); err != nil {
		t.Fatal(err)
	}
	if measured.Scenario != "average" || len(measured.PeakMiB) < 5 {
		t.Fatalf("stack-memory.json: %+v, want the peaks of make stack-memory (average.js)", measured)
	}
	p := loadCompose(t, "*")
	for _, name := range slices.Sorted(maps.Keys(measured.PeakMiB)) {
		s, ok := p.Services[name]
		if !ok {
			continue // measured, but not a compose service of that name
		}
		limit := float64(s.Deploy.Resources.Limits.MemoryBytes) / (1 << 20)
		peak := measured.PeakMiB[name]
		if limit < 1.3*peak {
			t.Errorf("%s: memory limit %.0f MiB, below its measured peak %.0f MiB plus 30%% (%.0f MiB)", name, limit, peak, 1.3*peak)
		}
		if v := s.Environment["GOMEMLIMIT"]; v != nil {
			mib, err := strconv.ParseFloat(strings.TrimSuffix(*v, "MiB"), 64)
			if err != nil || !strings.HasSuffix(*v, "MiB") || mib >= limit {
				t.Errorf("%s: GOMEMLIMIT %s, want MiB below its limit of %.0f MiB", name, *v, limit)
			}
		}
		t.Logf("%-15s peak %4.0f MiB, limit %4.0f MiB (%.1f×)", name, peak, limit, limit/peak)
	}
}
