package scenario

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// BenchmarkSwitchOff is what every order pays per scenario it checks.
func BenchmarkSwitchOff(b *testing.B) {
	path := filepath.Join(b.TempDir(), "scenarios.json")
	if err := WriteFile(path, Defaults()); err != nil {
		b.Fatal(err)
	}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(b.Context(), NewFileProvider(path, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))); err != nil {
		b.Fatal(err)
	}
	s := Switches{client: api.NewClient()}
	b.ReportAllocs()
	for b.Loop() {
		if s.On(b.Context(), CacheBypass) {
			b.Fatal("on")
		}
	}
}
