package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(nil))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.HTTPAddr != ":8080" || cfg.OrdersURL != "http://localhost:8081" || cfg.OrdersTimeout != 10*time.Second || cfg.InboundTrace != InboundTrust {
			t.Errorf("defaults = %+v", cfg)
		}
	})
	tests := []struct {
		name     string
		env      map[string]string
		wantName string // the variable the error must name
	}{
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"orders url without scheme", map[string]string{"ORDERS_URL": "orders:8081"}, "ORDERS_URL"},
		{"orders url with another scheme", map[string]string{"ORDERS_URL": "ftp://orders"}, "ORDERS_URL"},
		{"unparsable timeout", map[string]string{"ORDERS_TIMEOUT": "soon"}, "ORDERS_TIMEOUT"},
		{"zero shutdown timeout", map[string]string{"SHUTDOWN_TIMEOUT": "0s"}, "SHUTDOWN_TIMEOUT"},
		{"unknown inbound trace policy", map[string]string{"INBOUND_TRACE": "ignore"}, "INBOUND_TRACE"},
	}
	t.Run("new-root", func(t *testing.T) {
		cfg, err := loadConfig(t.Context(), envconfig.MapLookuper(map[string]string{"INBOUND_TRACE": "new-root"}))
		if err != nil || cfg.InboundTrace != InboundNewRoot || len(cfg.InboundTrace.httpOptions()) != 1 {
			t.Errorf("INBOUND_TRACE=new-root: %+v, %v; want the new-root policy", cfg.InboundTrace, err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(t.Context(), envconfig.MapLookuper(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.wantName) {
				t.Errorf("loadConfig() error = %v, want one naming %s", err, tt.wantName)
			}
		})
	}
}
