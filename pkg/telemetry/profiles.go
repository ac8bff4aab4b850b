package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	otelpyroscope "github.com/grafana/otel-profiling-go"
	"github.com/grafana/pyroscope-go"
	"go.opentelemetry.io/otel/trace"
)

// Continuous profiles: with PYROSCOPE_SERVER_ADDRESS set, a service pushes
// its profiles to Pyroscope, and the first span of each request in each
// process (its local root) names the CPU samples taken while it ran.
const (
	pyroscopeAddressVar  = "PYROSCOPE_SERVER_ADDRESS"
	pyroscopeIntervalVar = "PYROSCOPE_UPLOAD_INTERVAL"

	// defaultProfileInterval is the client's own default: each profile
	// covers 15 s, and each service uploads one of each type that often.
	defaultProfileInterval = 15 * time.Second
)

// The sampling rates of the two profiles the runtime leaves off.
const (
	// mutexProfileFraction: one contended Unlock in five records its stack.
	// Only contended unlocks pay (about a microsecond, on a path that has
	// just parked and woken a goroutine), so a service without contention
	// pays nothing, and a lock that serialises requests (the order-lock
	// scenario) shows within an upload or two.
	mutexProfileFraction = 5
	// blockProfileRate: one sample per millisecond spent blocked. Every wait
	// of 1 ms or more is recorded (how often that happens is bounded by the
	// work a goroutine is woken for); shorter ones are sampled in proportion,
	// and the runtime scales them back. Waiting on the network is not a
	// blocking event, so idle connections cost nothing.
	blockProfileRate = int(time.Millisecond)
)

// profileTypes are the profiles pushed: CPU, allocations (count and bytes,
// since the last upload and in use), goroutines, and the mutex and block
// profiles at the rates above.
var profileTypes = []pyroscope.ProfileType{
	pyroscope.ProfileCPU,
	pyroscope.ProfileAllocObjects, pyroscope.ProfileAllocSpace,
	pyroscope.ProfileInuseObjects, pyroscope.ProfileInuseSpace,
	pyroscope.ProfileGoroutines,
	pyroscope.ProfileMutexCount, pyroscope.ProfileMutexDuration,
	pyroscope.ProfileBlockCount, pyroscope.ProfileBlockDuration,
}

// profiling is what profilingFromEnv read; a zero value means off.
type profiling struct {
	address  string
	interval time.Duration
}

func (p profiling) on() bool { return p.address != "" }

// profilingFromEnv reads PYROSCOPE_SERVER_ADDRESS (unset or empty: no
// profiling, and nothing of it runs) and PYROSCOPE_UPLOAD_INTERVAL.
func profilingFromEnv() (profiling, error) {
	address := strings.TrimSpace(os.Getenv(pyroscopeAddressVar))
	if address == "" {
		return profiling{}, nil
	}
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The value is not repeated: an address may carry a password.
		return profiling{}, fmt.Errorf("%s: must be an http:// or https:// URL, such as http://pyroscope:4040", pyroscopeAddressVar)
	}
	p := profiling{address: address, interval: defaultProfileInterval}
	if raw := strings.TrimSpace(os.Getenv(pyroscopeIntervalVar)); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 {
			return profiling{}, fmt.Errorf("%s: %q is not a positive duration, such as 15s", pyroscopeIntervalVar, raw)
		}
		p.interval = d
	}
	return p, nil
}

// startProfiling starts pushing the profiles of this process to Pyroscope,
// under the application name service (Pyroscope's service_name, which
// Grafana matches to the span's service.name). The only other labels are
// the ones the client adds (its session and scope, the Go version) and, on CPU
// samples, the span's (withSpanProfiles): never a value of a request.
//
// The returned stop uploads what the last interval collected and stops,
// or gives up when ctx ends: it runs after the spans, metrics and logs have
// been flushed, within the same bound (Flush), so profiles get what is left.
func startProfiling(p profiling, service string, log *slog.Logger) (stop func(context.Context) error, err error) {
	prevMutex := runtime.SetMutexProfileFraction(mutexProfileFraction)
	runtime.SetBlockProfileRate(blockProfileRate)
	restoreRates := func() {
		runtime.SetMutexProfileFraction(prevMutex)
		runtime.SetBlockProfileRate(0)
	}
	profiler, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: service,
		ServerAddress:   p.address,
		UploadRate:      p.interval,
		ProfileTypes:    profileTypes,
		Logger:          profileLogger{log},
	})
	if err != nil {
		restoreRates()
		return nil, fmt.Errorf("profiles: %w", err)
	}
	return func(ctx context.Context) error {
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Flush first: Stop alone uploads only the CPU profile, and
			// may drop it while the upload queue is still being read.
			profiler.Flush(true)
			_ = profiler.Stop() // it never fails
			restoreRates()
		}()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("profiles: %w", ctx.Err())
		}
	}, nil
}

// withSpanProfiles labels the CPU samples taken while a span runs with the
// span_id and span_name of its local root (the first span of the request in
// this process), and gives that root span the pyroscope.profile.id
// attribute (its own span ID): the key of Grafana's link from a span to its
// profile. Only root spans are labelled, so a profile has one series per
// root span name: SERVER spans start named by the method alone
// (serverSpanName; the route is set later), CONSUMER and relay spans by
// their destination, all low-cardinality. Pyroscope keeps span_id per
// sample, not as a series label; the library also adds trace_id (it has no
// option against it), which newer Pyroscope releases keep per sample too.
// Unsampled spans get no IDs.
func withSpanProfiles(tp trace.TracerProvider) trace.TracerProvider {
	return otelpyroscope.NewTracerProvider(tp,
		otelpyroscope.WithSpanIDLabelScope(otelpyroscope.ScopeRootSpan),
		otelpyroscope.WithSpanNameLabelScope(otelpyroscope.ScopeRootSpan),
	)
}

// profileLogger passes the profiler's failures (an upload refused, the
// server unreachable) to the service's log as warnings; its chatter at start
// is debug, and its per-upload debug lines are dropped.
type profileLogger struct{ log *slog.Logger }

func (l profileLogger) Infof(format string, args ...any) {
	l.log.Debug("pyroscope", "detail", fmt.Sprintf(format, args...))
}

func (profileLogger) Debugf(string, ...any) {}

func (l profileLogger) Errorf(format string, args ...any) {
	l.log.Warn("pyroscope", "error", fmt.Sprintf(format, args...))
}
