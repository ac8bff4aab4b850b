package main

import (
	"net/http"
	"net/http/httptest"
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
		if err := check(srv.URL); (err == nil) != tt.wantOK {
			t.Errorf("status %d: check() = %v, want ok=%v", tt.status, err, tt.wantOK)
		}
	}
	if err := check("http://127.0.0.1:1/"); err == nil {
		t.Error("check() of a closed port succeeded")
	}
}
