package httpx

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The suite answers headers over MaxHeaderBytes itself, as problem+json;
// Go's server still answers, in plain text, headers over its own larger
// limit and a request it cannot parse. Both are as the README states.
func TestHeaderLimits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var ready atomic.Bool
	done := make(chan error, 1)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	go func() { done <- Serve(ctx, ln, ok, &ready, 5*time.Second, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
	url := "http://" + ln.Addr().String() + "/"

	tests := []struct {
		name        string
		header      int // bytes of one X-Pad header
		wantStatus  int
		wantProblem bool
	}{
		{"small headers", 100, http.StatusNoContent, false},
		{"just under the suite's limit", MaxHeaderBytes - 200, http.StatusNoContent, false},
		{"over the suite's limit", MaxHeaderBytes + 1, http.StatusRequestHeaderFieldsTooLarge, true},
		{"at the server's limit", serverHeaderBytes, http.StatusRequestHeaderFieldsTooLarge, true},
		{"over the server's limit", 2 * serverHeaderBytes, http.StatusRequestHeaderFieldsTooLarge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
			req.Header.Set("X-Pad", strings.Repeat("a", tt.header))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.wantStatus, body)
			}
			isProblem := resp.Header.Get("Content-Type") == "application/problem+json"
			if isProblem != tt.wantProblem {
				t.Fatalf("Content-Type = %q, want problem+json %v", resp.Header.Get("Content-Type"), tt.wantProblem)
			}
			if !isProblem {
				return
			}
			var p Problem
			if err := json.Unmarshal(body, &p); err != nil || len(p.Errors) != 1 || p.Errors[0].Field != HeadersField {
				t.Errorf("problem = %s (%v), want one error naming %s", body, err, HeadersField)
			}
		})
	}

	t.Run("malformed request line", func(t *testing.T) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("answer %d %q, want Go's own 400 in text/plain", resp.StatusCode, ct)
		}
	})
}
