package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The collector the tests build must be the compose image's: same version,
// every component module at that version.
func TestCollectorManifestMatchesImage(t *testing.T) {
	p := loadCompose(t)
	base := p.Services["otel-collector"].Build.Args["BASE_IMAGE"]
	if base == nil {
		t.Fatal("otel-collector has no BASE_IMAGE build arg")
	}
	image, tag, _ := strings.Cut(*base, ":")
	if image != "otel/opentelemetry-collector-contrib" {
		t.Errorf("collector image is %s, want the contrib distribution", image)
	}
	manifest, err := os.ReadFile("otel-collector/builder.yaml")
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`(?m)^  version: (\S+)$`).FindSubmatch(manifest)
	if version == nil || string(version[1]) != tag {
		t.Errorf("builder.yaml builds version %s, compose runs %s", version, tag)
	}
	mods := regexp.MustCompile(`(?m)^  - gomod: (\S+) (\S+)$`).FindAllSubmatch(manifest, -1)
	if len(mods) < 10 {
		t.Fatalf("builder.yaml lists %d components", len(mods))
	}
	for _, m := range mods {
		if string(m[2]) != "v"+tag {
			t.Errorf("%s is at %s, want v%s", m[1], m[2], tag)
		}
	}
}

// collector builds (or finds in the cache) the collector of builder.yaml.
func collector(t *testing.T) string {
	t.Helper()
	return built(t, "build-collector.sh")
}

// built runs one of scripts/build-*.sh, which builds a program (or finds it
// in the cache outside the tree) and prints its path.
func built(t *testing.T, script string, args ...string) string {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := exec.Command("bash", append([]string{"../scripts/" + script}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(out.String())
}

// TestCollectorValidates runs the collector's own validate command on the
// configuration, as the stack runs it, with the jaeger overlay, and as the
// native demo runs it.
func TestCollectorValidates(t *testing.T) {
	bin := collector(t)
	for _, overlay := range []string{"none", "jaeger", "demo"} {
		t.Run(overlay, func(t *testing.T) {
			out, err := exec.Command(bin, "validate",
				"--config=otel-collector/config.yaml", "--config=otel-collector/"+overlay+".yaml").CombinedOutput()
			if err != nil {
				t.Fatalf("validate: %v\n%s", err, out)
			}
			t.Logf("otelcol validate --config=config.yaml --config=%s.yaml: exit 0 %s", overlay, bytes.TrimSpace(out))
		})
	}
	// And it refuses a broken file, so the check above means something.
	broken, _ := os.CreateTemp(t.TempDir(), "*.yaml")
	broken.WriteString("service:\n  pipelines:\n    traces:\n      receivers: [nope]\n")
	broken.Close()
	if out, err := exec.Command(bin, "validate", "--config="+broken.Name()).CombinedOutput(); err == nil {
		t.Errorf("validate accepted a pipeline with an unknown receiver: %s", out)
	}
}
