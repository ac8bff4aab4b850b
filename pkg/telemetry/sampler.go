package telemetry

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// samplingReasonKey is recorded on the span where a service decided to keep a
// trace, saying why. It is the suite's own key: the semantic conventions have
// none for it.
const samplingReasonKey = attribute.Key("sampling.reason")

// The values of samplingReasonKey.
const (
	reasonPriorityTenant = "priority_tenant" // the span started with tenant.id of a priority tenant
	reasonRatio          = "ratio"           // the trace ID fell within OTEL_TRACES_SAMPLER_ARG
)

const (
	priorityTenantsVar = "PRIORITY_TENANTS"
	samplerVar         = "OTEL_TRACES_SAMPLER"
	samplerArgVar      = "OTEL_TRACES_SAMPLER_ARG"
	tenantIDKey        = attribute.Key("tenant.id")
)

// samplerFromEnv returns the suite's head sampler when OTEL_TRACES_SAMPLER is
// unset or parentbased_traceidratio, and nil for any other sampler, which the
// SDK then builds from the same variables itself. A priority list that such a
// sampler would ignore is an error: it would silently lose the very traces
// it names.
func samplerFromEnv() (sdktrace.Sampler, error) {
	var tenants []string
	for t := range strings.SplitSeq(os.Getenv(priorityTenantsVar), ",") {
		if t = strings.TrimSpace(t); t != "" {
			tenants = append(tenants, t)
		}
	}
	name := strings.ToLower(strings.TrimSpace(os.Getenv(samplerVar)))
	if name != "" && name != "parentbased_traceidratio" {
		if len(tenants) > 0 {
			return nil, fmt.Errorf("%s needs %s unset or parentbased_traceidratio, not %q", priorityTenantsVar, samplerVar, name)
		}
		return nil, nil
	}
	ratio := 1.0
	if arg := strings.TrimSpace(os.Getenv(samplerArgVar)); arg != "" {
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(v >= 0 && v <= 1) { // NaN fails both comparisons
			return nil, fmt.Errorf("%s: %q is not a number from 0 to 1", samplerArgVar, arg)
		}
		ratio = v
	}
	return newPrioritySampler(ratio, tenants), nil
}

// newPrioritySampler keeps every trace whose root span starts with tenant.id
// of a priority tenant, and the share ratio of the others, chosen by trace
// ID. Spans with a parent follow it, so downstream services keep or drop a
// trace as its root did, with one exception: a priority tenant's span is kept
// even when a remote caller said "not sampled". Callers are untrusted, and a
// priority tenant's trace must not depend on what they send.
func newPrioritySampler(ratio float64, tenants []string) sdktrace.Sampler {
	priority := make(map[string]bool, len(tenants))
	for _, t := range tenants {
		priority[t] = true
	}
	return sdktrace.ParentBased(
		prioritySampler{priority: priority, otherwise: sdktrace.TraceIDRatioBased(ratio), reason: reasonRatio},
		sdktrace.WithRemoteParentNotSampled(prioritySampler{priority: priority, otherwise: sdktrace.NeverSample()}),
	)
}

// prioritySampler samples the spans of priority tenants, and asks otherwise
// about the rest; a span it keeps records why.
type prioritySampler struct {
	priority  map[string]bool
	otherwise sdktrace.Sampler
	reason    string // recorded when otherwise keeps a span
}

func (s prioritySampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	for _, kv := range p.Attributes {
		if kv.Key == tenantIDKey && s.priority[kv.Value.AsString()] {
			return sdktrace.SamplingResult{
				Decision:   sdktrace.RecordAndSample,
				Attributes: []attribute.KeyValue{samplingReasonKey.String(reasonPriorityTenant)},
				Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
			}
		}
	}
	res := s.otherwise.ShouldSample(p)
	if res.Decision == sdktrace.RecordAndSample && s.reason != "" {
		res.Attributes = append(res.Attributes, samplingReasonKey.String(s.reason))
	}
	return res
}

func (s prioritySampler) Description() string {
	return fmt.Sprintf("PriorityTenants{tenants:%d,otherwise:%s}", len(s.priority), s.otherwise.Description())
}
