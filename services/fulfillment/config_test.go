package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8082" || cfg.MaxAttempts != 3 || cfg.Workers > cfg.Prefetch || cfg.Comments || cfg.TransactionSpans {
		t.Errorf("defaults = %+v", cfg)
	}
	tests := []struct {
		name     string
		env      map[string]string
		wantName string
	}{
		{"bad log level", map[string]string{"LOG_LEVEL": "x"}, "LOG_LEVEL"},
		{"zero prefetch", map[string]string{"FULFILLMENT_PREFETCH": "0"}, "FULFILLMENT_PREFETCH"},
		{"more workers than prefetch", map[string]string{"FULFILLMENT_PREFETCH": "2", "FULFILLMENT_WORKERS": "3"}, "FULFILLMENT_WORKERS"},
		{"unbounded attempts", map[string]string{"FULFILLMENT_MAX_ATTEMPTS": "0"}, "FULFILLMENT_MAX_ATTEMPTS"},
		{"backoff not a duration", map[string]string{"FULFILLMENT_RETRY_BACKOFF": "5"}, "FULFILLMENT_RETRY_BACKOFF"},
		{"amqp url without host", map[string]string{"AMQP_URL": "amqp:///"}, "AMQP_URL"},
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

func TestLoggedConfigHidesPlantedPassword(t *testing.T) {
	// The password is in the query, where libpq also reads it.
	planted := "postgres://postgres@127.0.0.1:5432/db?sslmode=disable&password=planted-secret"
	cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(map[string]string{"DATABASE_URL": planted}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("starting fulfillment", "config", cfg)
	if strings.Contains(out.String(), "planted-secret") || !strings.Contains(out.String(), "password=xxxxx") {
		t.Errorf("logged %s, want the query's password masked", out.String())
	}
}
