package main

import (
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(map[string]string{"DATABASE_URL": "postgres://app:s3cret@db:5432/orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8081" || cfg.PaymentFailureRate != 0 || cfg.SQLComments {
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
