package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestCheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	defer srv.Close()

	tests := []struct {
		status int
		wantOK bool
	}{
		{http.StatusOK, true},
		{http.StatusNoContent, true},
		{http.StatusServiceUnavailable, false},
		{http.StatusNotFound, false},
	}
	for _, tt := range tests {
		status = tt.status
		if err := check(srv.URL, ""); (err == nil) != tt.wantOK {
			t.Errorf("status %d: check() = %v, want ok=%v", tt.status, err, tt.wantOK)
		}
	}
	if err := check("http://127.0.0.1:1/", ""); err == nil {
		t.Error("check() of a closed port succeeded")
	}
}

// An https server is healthy through the CA given, and only through it.
func TestCheckCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "empty.crt")
	if err := os.WriteFile(notPEM, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, cacert string
		wantOK       bool
	}{
		{"the server's CA", ca, true},
		{"the system's roots", "", false},
		{"a file with no certificate", notPEM, false},
		{"a missing file", filepath.Join(dir, "missing.crt"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(srv.URL, tt.cacert); (err == nil) != tt.wantOK {
				t.Errorf("check(%s, %q) = %v, want ok=%v", srv.URL, tt.cacert, err, tt.wantOK)
			}
		})
	}
}
