package telemetry

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// traceCollector is an OTLP/gRPC trace endpoint that keeps span names.
type traceCollector struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
}

func (c *traceCollector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.names = append(c.names, s.Name)
			}
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// TestSetupExportsOverGRPC checks the other protocol of
// OTEL_EXPORTER_OTLP_PROTOCOL: spans reach a gRPC endpoint, and shutdown
// flushes them.
func TestSetupExportsOverGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	collector := &traceCollector{}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, collector)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // only the shutdown flush exports

	tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "grpc-test", LogOutput: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("t").Start(t.Context(), "over-grpc")
	span.End()
	if err := shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	collector.mu.Lock()
	defer collector.mu.Unlock()
	if len(collector.names) != 1 || collector.names[0] != "over-grpc" {
		t.Errorf("collector received %v, want [over-grpc]", collector.names)
	}
}
