package httpx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Serve serves h on ln until ctx ends, then shuts down in the suite's order:
// readiness turns false first, so a load balancer stops sending, then the
// server stops accepting and waits up to shutdownTimeout for requests in
// flight. A nil return means a clean stop.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, ready *atomic.Bool, shutdownTimeout time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10, // larger headers (a giant baggage) get 431
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	ready.Store(true)
	log.InfoContext(ctx, "http server listening", "addr", ln.Addr().String())

	select {
	case err := <-serveErr:
		ready.Store(false)
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	ready.Store(false)
	log.InfoContext(ctx, "shutting down http server", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	return nil
}

// Health answers /healthz: the process is alive.
func Health(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Ready answers /readyz from ready and the checks, each of which names a
// dependency that must be reachable before the service takes traffic.
func Ready(ready *atomic.Bool, checks map[string]func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, body := http.StatusOK, map[string]string{"status": "ready"}
		if !ready.Load() {
			status, body["status"] = http.StatusServiceUnavailable, "not ready"
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for name, check := range checks {
			if err := check(ctx); err != nil {
				status, body["status"], body[name] = http.StatusServiceUnavailable, "not ready", "unavailable"
			}
		}
		WriteJSON(w, status, body)
	}
}

// Recover turns a panic in a handler into a 500 problem, recorded on the span.
// Install it after TraceContext, so that this 500 too carries a trace_id.
func Recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				span := trace.SpanFromContext(r.Context())
				span.RecordError(fmt.Errorf("panic: %v", v), trace.WithStackTrace(true))
				span.SetStatus(codes.Error, "panic")
				WriteProblem(w, r, NewProblem(http.StatusInternalServerError, "Internal error", "the server failed; the trace ID identifies this request"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// NotFound and MethodNotAllowed answer unrouted requests with problems.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, r, NewProblem(http.StatusNotFound, "Not found", "no such resource"))
}

// MethodNotAllowed is NotFound's twin for a known path.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, r, NewProblem(http.StatusMethodNotAllowed, "Method not allowed", r.Method+" is not allowed here"))
}
