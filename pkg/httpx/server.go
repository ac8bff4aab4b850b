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
		Handler:           LimitHeaders(h),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    serverHeaderBytes,
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

// MaxHeaderBytes bounds a request's header section (its request line and
// every header line, as sent), which LimitHeaders refuses beyond with a 431
// problem. The server reads twice as much, serverHeaderBytes, so a request
// between the two reaches LimitHeaders and gets its answer as problem+json;
// only beyond that (and for a request it cannot parse) does Go's server
// answer by itself, in plain text, before any handler runs.
const (
	MaxHeaderBytes    = 32 << 10
	serverHeaderBytes = 2 * MaxHeaderBytes
)

// HeadersField is the field a FieldError names when the problem is the
// request's headers as a whole.
const HeadersField = "(headers)"

// LimitHeaders answers 431 to a request whose headers exceed MaxHeaderBytes,
// before any middleware parses them (the tracing middleware reads baggage
// and traceparent). That answer has no trace_id: the request is refused
// before it is traced.
func LimitHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r) > MaxHeaderBytes {
			WriteProblem(w, r, NewProblem(http.StatusRequestHeaderFieldsTooLarge, "Header too large",
				fmt.Sprintf("the request's headers must be at most %d bytes", MaxHeaderBytes),
				FieldError{Field: HeadersField, Reason: fmt.Sprintf("must be at most %d bytes (%d KiB) in all", MaxHeaderBytes, MaxHeaderBytes>>10)}))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerBytes is the size of r's header section as the client sent it:
// "METHOD target proto\r\n", then "Name: value\r\n" for each line.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	if r.Host != "" { // the server moves Host out of r.Header
		n += len("Host: ") + len(r.Host) + 2
	}
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + 2 + len(v) + 2
		}
	}
	return n
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
