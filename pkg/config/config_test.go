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
		// Every secret a query can carry, in the order it was written.
		{
			"postgres://app@db/orders?sslmode=verify-full&password=planted1&sslpassword=planted2&sslkey=planted3&application_name=orders",
			"postgres://app@db/orders?sslmode=verify-full&password=xxxxx&sslpassword=xxxxx&sslkey=xxxxx&application_name=orders",
		},
		{"postgres://u:planted1@db/orders?PassWord=planted2", "postgres://u:xxxxx@db/orders?PassWord=xxxxx"},
		{"postgres://db/orders?pass%77ord=planted1", "postgres://db/orders?pass%77ord=xxxxx"},
		{"postgres://db/orders?%zz=planted1", "postgres://db/orders?%zz=xxxxx"},
		{"rediss://:planted1@cache:6380/0?auth=planted2&client_secret=planted3", "rediss://:xxxxx@cache:6380/0?auth=xxxxx&client_secret=xxxxx"},
		{"amqps://guest:planted1@mq/?auth_token=planted2&heartbeat=10", "amqps://guest:xxxxx@mq/?auth_token=xxxxx&heartbeat=10"},
		// The key=value form pgx also accepts, with its quoting.
		{"host=db user=app password=planted1 dbname=orders", "host=db user=app password=xxxxx dbname=orders"},
		{"host=db password = 'planted 1 \\' planted2' sslpassword='' sslkey=planted\\ 3", "host=db password = xxxxx sslpassword=xxxxx sslkey=xxxxx"},
		{"password='planted1", "password=xxxxx"},
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
	cfg.DatabaseURL = "postgres://postgres@127.0.0.1:5432/db?sslmode=disable&password=planted-secret"
	for _, a := range cfg.LogAttrs() {
		if strings.Contains(a.Value.String(), "planted-secret") {
			t.Errorf("%s shows the query's password: %s", a.Key, a.Value)
		}
	}
}
