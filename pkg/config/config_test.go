package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

type sample struct {
	Addr    string        `env:"HTTP_ADDR, default=:8080"`
	Level   LogLevel      `env:"LOG_LEVEL, default=info"`
	Timeout time.Duration `env:"SOME_TIMEOUT, default=1s"`
	Rate    float64       `env:"SOME_RATE, default=0.5"`
}

func TestLoad(t *testing.T) {
	var s sample
	if err := Load(t.Context(), envconfig.MapLookuper(map[string]string{"LOG_LEVEL": "WARN"}), &s); err != nil {
		t.Fatal(err)
	}
	if s.Addr != ":8080" || s.Level.Level() != slog.LevelWarn || s.Timeout != time.Second || s.Rate != 0.5 {
		t.Errorf("loaded %+v", s)
	}

	tests := map[string]string{
		"LOG_LEVEL":    "loud",
		"SOME_TIMEOUT": "soon",
		"SOME_RATE":    "half",
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			var s sample
			err := Load(t.Context(), envconfig.MapLookuper(map[string]string{name: bad}), &s)
			if err == nil || !strings.HasPrefix(err.Error(), name+": ") {
				t.Errorf("Load() error = %v, want one starting with %s", err, name)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		raw  string
		want bool
	}{
		{"postgres://u:p@db:5432/orders", true},
		{"postgresql://db/orders", true},
		{"mysql://db/orders", false},
		{"db:5432", false},
		{"postgres:///orders", false},
		{"::", false},
	}
	for _, tt := range tests {
		err := CheckURL("DATABASE_URL", tt.raw, "postgres", "postgresql")
		if (err == nil) != tt.want || (err != nil && !strings.HasPrefix(err.Error(), "DATABASE_URL: ")) {
			t.Errorf("CheckURL(%q) = %v, want ok=%v naming DATABASE_URL", tt.raw, err, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://app:s3cret@db:5432/orders", "postgres://app:xxxxx@db:5432/orders"},
		{"redis://localhost:6379/0", "redis://localhost:6379/0"},
		{"::not a url", "(unparsable URL)"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBackends(t *testing.T) {
	var cfg struct {
		Backends
		Addr string `env:"HTTP_ADDR, default=:1"`
	}
	env := envconfig.MapLookuper(map[string]string{"DATABASE_URL": "postgres://app:pw@db/orders", "REDIS_URL": "localhost:6379"})
	if err := Load(t.Context(), env, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://app:pw@db/orders" || cfg.AMQPURL != "amqp://guest:guest@localhost:5672/" {
		t.Errorf("loaded %+v", cfg)
	}
	err := cfg.Check()
	if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("Check() = %v, want an error naming REDIS_URL only", err)
	}
	for _, a := range cfg.LogAttrs() {
		if strings.Contains(a.Value.String(), "pw") || strings.Contains(a.Value.String(), "guest:guest") {
			t.Errorf("%s shows a password: %s", a.Key, a.Value)
		}
	}
}
