package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(map[string]string{"DATABASE_URL": "postgres://app:s3cret@db:5432/orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8081" || cfg.PaymentFailureRate != 0 || cfg.Comments || cfg.TransactionSpans {
		t.Errorf("defaults = %+v", cfg)
	}
	if logged := cfg.LogValue().String(); strings.Contains(logged, "s3cret") {
		t.Errorf("logged config shows the password: %s", logged)
	}

	tests := []struct {
		name     string
		env      map[string]string
		wantName string
	}{
		{"bad log level", map[string]string{"LOG_LEVEL": "chatty"}, "LOG_LEVEL"},
		{"database url without host", map[string]string{"DATABASE_URL": "orders"}, "DATABASE_URL"},
		{"redis url without scheme", map[string]string{"REDIS_URL": "localhost:6379"}, "REDIS_URL"},
		{"amqp url unparsable", map[string]string{"AMQP_URL": "::"}, "AMQP_URL"},
		{"failure rate above 1", map[string]string{"PAYMENT_FAILURE_RATE": "1.5"}, "PAYMENT_FAILURE_RATE"},
		{"failure rate not a number", map[string]string{"PAYMENT_FAILURE_RATE": "often"}, "PAYMENT_FAILURE_RATE"},
		{"negative latency", map[string]string{"PAYMENT_LATENCY": "-1s"}, "PAYMENT_LATENCY"},
		{"sql comments not a boolean", map[string]string{"SQL_COMMENTS": "sometimes"}, "SQL_COMMENTS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(t.Context(), envconfig.MapLookuper(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.wantName) {
				t.Errorf("loadConfig() error = %v, want one naming %s", err, tt.wantName)
			}
		})
	}
}

// plantedDatabaseURL carries its password in the query, where libpq also
// reads it; trust authentication ignores it.
const plantedDatabaseURL = "postgres://postgres@127.0.0.1:5432/db?sslmode=disable&password=planted-secret"

func TestLoggedConfigHidesPlantedPassword(t *testing.T) {
	cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(map[string]string{"DATABASE_URL": plantedDatabaseURL}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("starting orders", "config", cfg)
	if strings.Contains(out.String(), "planted-secret") || !strings.Contains(out.String(), "password=xxxxx") {
		t.Errorf("logged %s, want the query's password masked", out.String())
	}
}

// The start-up line itself, as run writes it to stdout and exports it over
// OTLP: with its context already done, run stops at the first use of a
// backend, after logging its config, and flushes its telemetry on the way out.
func TestStartupLineHidesPlantedPassword(t *testing.T) {
	var mu sync.Mutex
	var exported bytes.Buffer // OTLP/protobuf keeps strings as they are
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		exported.Write(body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", collector.URL+"/v1/logs")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	err := run(ctx, envconfig.MapLookuper(map[string]string{"DATABASE_URL": plantedDatabaseURL}), &out)
	if err == nil || strings.Contains(err.Error(), "planted-secret") {
		t.Errorf("run() error = %v, want one without the planted password", err)
	}
	if !strings.Contains(out.String(), `"msg":"starting orders"`) {
		t.Fatalf("no start-up line in %s", out.String())
	}
	for line := range strings.Lines(out.String()) {
		if strings.Contains(line, "planted-secret") {
			t.Errorf("logged the planted password: %s", line)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(exported.String(), "starting orders") {
		t.Fatal("the start-up line was not exported over OTLP")
	}
	if strings.Contains(exported.String(), "planted-secret") {
		t.Error("exported the planted password over OTLP")
	}
}
