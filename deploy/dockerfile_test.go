package deploy

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerBuildContext does what deploy/Dockerfile's build stage does,
// without Docker: it copies only what .dockerignore lets into the build
// context, and builds each service with GOWORK=off and CGO off, plus the
// healthcheck probe. A service that reaches outside its context (a missing
// replace, a file in an ignored folder) fails here as it would in `make up`.
func TestDockerBuildContext(t *testing.T) {
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var included []string
	for _, line := range strings.Split(string(raw), "\n") {
		if dir, ok := strings.CutPrefix(strings.TrimSpace(line), "!"); ok {
			included = append(included, strings.TrimSuffix(dir, "/"))
		}
	}
	dockerfile, _ := os.ReadFile("Dockerfile")
	for _, dir := range regexp.MustCompile(`(?m)^COPY (\S+)/ `).FindAllStringSubmatch(string(dockerfile), -1) {
		found := false
		for _, inc := range included {
			found = found || inc == dir[1]
		}
		if !found {
			t.Errorf("Dockerfile copies %s/, which .dockerignore leaves out", dir[1])
		}
	}

	ctx := t.TempDir()
	for _, dir := range included {
		err := filepath.WalkDir(filepath.Join("..", dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel, _ := filepath.Rel("..", path)
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			target := filepath.Join(ctx, rel)
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"services/gateway", "services/orders", "services/fulfillment", "deploy/healthcheck"} {
		t.Run(dir, func(t *testing.T) {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(t.TempDir(), "bin"), ".")
			cmd.Dir = filepath.Join(ctx, dir)
			cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("build in the Docker context: %v\n%s", err, out)
			}
		})
	}
}
