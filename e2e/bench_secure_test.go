//go:build bench

package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestBenchSecureExport measures what the secure telemetry path costs per
// export: the same OTLP/HTTP request (one batch of 512 spans, the SDK's
// default batch) sent to the real collector plain, over TLS with a client
// certificate and a Basic credential (config.yaml + secure.yaml), and so again
// gzipped by the sender for each request, as the secure profile's SDKs do. Each mode
// runs three times, interleaved; the figures are the collector's CPU time per
// batch (from /proc), this process's (the sender, and the in-test backends the
// collector exports to, over TLS too in the secure mode), and the wall time
// per batch, with the ratios secure/plain. Both hops are the whole path.
func TestBenchSecureExport(t *testing.T) {
	const batches, batchSpans = 300, 512
	body := batchBody(batchSpans)
	certs := makeCerts(t)

	plain := startCollector(t, nil)
	secure := startSecureCollector(t, certs)
	plainPID, securePID := plain.cmd.Process.Pid, secure.cmd.Process.Pid

	headers, err := os.ReadFile(filepath.Join(certs, "gateway.headers"))
	if err != nil {
		t.Fatal(err)
	}
	// The header file holds OTEL_EXPORTER_OTLP_HEADERS' form: name=value, percent-encoded.
	name, value, _ := strings.Cut(string(headers), "=")
	value = strings.ReplaceAll(value, "%20", " ")
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("read ca.crt: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, "gateway.crt"), filepath.Join(certs, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	tlsClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	plainClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}

	type figures struct{ collectorCPU, senderCPU, wall time.Duration }
	run := func(client *http.Client, url string, pid int, header map[string]string, gz bool) figures {
		send := func() {
			payload := body
			if gz {
				var buf bytes.Buffer
				w := gzip.NewWriter(&buf)
				_, _ = w.Write(body)
				_ = w.Close()
				payload = buf.Bytes()
			}
			req, _ := http.NewRequest(http.MethodPost, url+"/v1/traces", bytes.NewReader(payload))
			req.Header.Set("Content-Type", "application/x-protobuf")
			if gz {
				req.Header.Set("Content-Encoding", "gzip")
			}
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST %s/v1/traces: %s", url, resp.Status)
			}
		}
		send() // the connection (and the TLS handshake) is made once, as by a service's exporter
		c0, s0, w0 := processCPU(t, pid), selfCPU(t), time.Now()
		for range batches {
			send()
		}
		return figures{
			collectorCPU: (processCPU(t, pid) - c0) / batches,
			senderCPU:    (selfCPU(t) - s0) / batches,
			wall:         time.Since(w0) / batches,
		}
	}

	var plainRuns, secureRuns, gzipRuns []figures
	credential := map[string]string{name: value}
	for range 3 {
		plainRuns = append(plainRuns, run(plainClient, plain.OTLPHTTP, plainPID, nil, false))
		secureRuns = append(secureRuns, run(tlsClient, secure.HTTP, securePID, credential, false))
		gzipRuns = append(gzipRuns, run(tlsClient, secure.HTTP, securePID, credential, true))
	}
	med := func(runs []figures, pick func(figures) time.Duration) time.Duration {
		v := make([]int, len(runs))
		for i, r := range runs {
			v[i] = int(pick(r))
		}
		return time.Duration(median(v))
	}
	var table strings.Builder
	fmt.Fprintf(&table, "\n| per batch of %d spans (%d KiB; median of 3 × %d) | plain | mTLS + Basic | ratio | mTLS + Basic + gzip | ratio |\n|---|---|---|---|---|---|\n",
		batchSpans, len(body)>>10, batches)
	for _, row := range []struct {
		name string
		pick func(figures) time.Duration
	}{
		{"collector CPU", func(f figures) time.Duration { return f.collectorCPU }},
		{"test process CPU (sender and backends)", func(f figures) time.Duration { return f.senderCPU }},
		{"wall time", func(f figures) time.Duration { return f.wall }},
	} {
		p, s, g := med(plainRuns, row.pick), med(secureRuns, row.pick), med(gzipRuns, row.pick)
		if p <= 0 || s <= 0 || g <= 0 {
			t.Fatalf("%s: plain %s, secure %s, secure with gzip %s: nothing measured", row.name, p, s, g)
		}
		fmt.Fprintf(&table, "| %s | %s | %s | %.2f | %s | %.2f |\n", row.name, p.Round(time.Microsecond),
			s.Round(time.Microsecond), float64(s)/float64(p), g.Round(time.Microsecond), float64(g)/float64(p))
	}
	t.Log(table.String())
}

// batchBody is one OTLP/HTTP trace request of n spans shaped like the
// suite's (a name, a kind, a few attributes).
func batchBody(n int) []byte {
	spans := make([]*tracepb.Span, n)
	now := uint64(time.Now().UnixNano())
	for i := range spans {
		tid, sid := make([]byte, 16), make([]byte, 8)
		_, _ = rand.Read(tid)
		_, _ = rand.Read(sid)
		spans[i] = &tracepb.Span{
			TraceId: tid, SpanId: sid, Name: "order.process", Kind: tracepb.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: now - 2e6, EndTimeUnixNano: now,
			Attributes: []*commonpb.KeyValue{
				strAttr("order.id", "0193a5c4-7f51-7a2b-9c1e-"+strconv.Itoa(100000000000+i)),
				strAttr("customer.id", "cust-42"), strAttr("tenant.id", "acme"),
			},
		}
	}
	b, _ := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", "bench")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}})
	return b
}

// processCPU is the user and system CPU time pid has used so far.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (which may hold spaces) start after ")".
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // clock ticks: 100 per second on Linux
}

// selfCPU is the CPU time this process has used so far.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
