package deploy

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// A schema is the key tree a program accepts: a map of key to sub-schema,
// any for "any value", or listOf for a list whose items follow a schema.
type schema = map[string]any

type listOf struct{ item schema }

var any_ = struct{}{}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// unknownKeys lists every key of doc that s does not accept, as dotted paths.
func unknownKeys(doc map[string]any, s schema, prefix string) []string {
	var bad []string
	for k, v := range doc {
		sub, ok := s[k]
		path := prefix + k
		switch {
		case !ok:
			bad = append(bad, path)
		case sub == any_:
		default:
			switch sub := sub.(type) {
			case schema:
				if m, ok := v.(map[string]any); ok {
					bad = append(bad, unknownKeys(m, sub, path+".")...)
				} else if v != nil {
					bad = append(bad, path+" (want a map)")
				}
			case listOf:
				items, _ := v.([]any)
				for i, it := range items {
					if m, ok := it.(map[string]any); ok {
						bad = append(bad, unknownKeys(m, sub.item, fmt.Sprintf("%s[%d].", path, i))...)
					}
				}
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func lookup(doc map[string]any, path string) any {
	var cur any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// Tempo is the one backend make test-stack cannot run: the Go module proxy
// does not serve it, so its file is checked against the keys of its
// configuration reference instead, and Jaeger stands in as the trace store.
//
// tempoSchema is what Tempo 3.0 accepts, from its configuration reference
// (grafana.com/docs/tempo/v3.0.x/configuration/ and docs/sources/tempo/
// configuration/_index.md in the Tempo repository at v3.0.x), limited below
// the top level to the sections this suite uses.
var tempoSchema = schema{
	"target": any_, "multitenancy_enabled": any_, "http_api_prefix": any_, "stream_over_http_enabled": any_,
	"span_profiling": any_, "shutdown_delay": any_, "enable_go_runtime_metrics": any_, "memory": any_,
	"internal_server": any_, "live_store_client": any_, "ingest": any_, "block_builder": any_, "memberlist": any_,
	"cache": any_, "backend_scheduler": any_, "backend_scheduler_client": any_, "querier": any_,
	"server": schema{"http_listen_port": any_, "grpc_listen_port": any_, "http_listen_address": any_,
		"grpc_listen_address": any_, "log_level": any_, "log_format": any_, "graceful_shutdown_timeout": any_},
	"distributor": schema{"receivers": any_, "log_received_spans": any_, "log_discarded_spans": any_,
		"metric_received_spans": any_, "retry_after_on_resource_exhausted": any_},
	"live_store": schema{"wal": schema{"path": any_}, "max_block_duration": any_, "max_block_bytes": any_,
		"complete_block_timeout": any_, "max_trace_idle": any_, "max_trace_live": any_, "flush_check_period": any_,
		"fail_on_high_lag": any_, "shutdown_marker_dir": any_},
	"query_frontend": schema{"query_end_cutoff": any_, "max_outstanding_per_tenant": any_, "max_retries": any_,
		"search": schema{"query_backend_after": any_, "concurrent_jobs": any_, "target_bytes_per_job": any_,
			"default_result_limit": any_, "max_result_limit": any_, "max_duration": any_},
		"metrics": schema{"query_backend_after": any_, "concurrent_jobs": any_, "max_duration": any_}},
	"storage": schema{"trace": schema{"backend": any_, "local": schema{"path": any_}, "wal": schema{"path": any_},
		"block": schema{"version": any_}, "pool": any_, "s3": any_, "gcs": any_, "azure": any_, "cache": any_}},
	"metrics_generator": schema{
		"ring": any_, "metrics_ingestion_time_range_slack": any_, "query_timeout": any_,
		"registry": schema{"external_labels": any_, "collection_interval": any_, "stale_duration": any_,
			"inject_tenant_id_as": any_, "max_label_name_length": any_, "max_label_value_length": any_},
		"storage": schema{"path": any_, "wal": any_, "remote_write": any_, "remote_write_flush_deadline": any_,
			"remote_write_add_org_id_header": any_},
		"processor": schema{
			"service_graphs": schema{"wait": any_, "max_items": any_, "workers": any_, "histogram_buckets": any_,
				"dimensions": any_, "enable_client_server_prefix": any_, "peer_attributes": any_,
				"span_multiplier_key": any_, "enable_messaging_system_latency_histogram": any_,
				"enable_virtual_node_label": any_},
			"span_metrics": any_, "host_info": any_},
	},
	"overrides": schema{"defaults": schema{
		"metrics_generator": schema{"processors": any_, "collection_interval": any_, "max_active_series": any_},
		"compaction":        any_, "ingestion": any_, "global": any_, "read": any_, "forwarders": any_, "storage": any_},
		"per_tenant_override_config": any_, "enable_legacy_overrides": any_},
	"backend_worker": schema{"compaction": schema{"block_retention": any_, "compacted_block_retention": any_}, "ring": any_},
	"usage_report":   schema{"reporting_enabled": any_},
}

// tempo2Keys are accepted by Tempo 2 and refused by Tempo 3 (Tempo 3
// upgrade guide, "Removed configuration").
var tempo2Keys = []string{
	"ingester", "ingester_client", "compactor", "metrics_generator_client", "partition_ring_live_store",
	"query_frontend.search.query_ingesters_until", "metrics_generator.traces_storage",
	"metrics_generator.processor.local_blocks", "querier.query_live_store", "overrides.metrics_generator_processors",
}

func TestTempoConfig(t *testing.T) {
	doc := readYAML(t, "tempo/tempo.yaml")
	if bad := unknownKeys(doc, tempoSchema, ""); len(bad) > 0 {
		t.Errorf("tempo.yaml has keys Tempo 3 does not accept: %v", bad)
	}
	for _, k := range tempo2Keys {
		if lookup(doc, k) != nil {
			t.Errorf("tempo.yaml has the Tempo 2 key %s, which Tempo 3 refuses", k)
		}
	}
	// No cut-off hides the newest traces, and the cut-off Tempo has must stay
	// below the point where searches go to the backend.
	cutoff, _ := time.ParseDuration(fmt.Sprint(lookup(doc, "query_frontend.query_end_cutoff")))
	backendAfter, err := time.ParseDuration(fmt.Sprint(lookup(doc, "query_frontend.search.query_backend_after")))
	if err != nil || cutoff != 0 || cutoff >= backendAfter {
		t.Errorf("query_end_cutoff %v, query_backend_after %v: want no cut-off, below query_backend_after", cutoff, backendAfter)
	}
	processors, _ := lookup(doc, "overrides.defaults.metrics_generator.processors").([]any)
	if !slices.Contains(processors, any("service-graphs")) {
		t.Errorf("metrics generator processors = %v, want service-graphs", processors)
	}
	rw, _ := lookup(doc, "metrics_generator.storage.remote_write").([]any)
	if len(rw) != 1 || lookup(rw[0].(map[string]any), "send_exemplars") != true ||
		!strings.HasPrefix(fmt.Sprint(lookup(rw[0].(map[string]any), "url")), "http://prometheus:9090/") {
		t.Errorf("remote_write = %v, want Prometheus with exemplars", rw)
	}
}

// Loki and Prometheus refuse unknown keys at start, and make test-stack
// starts each on its file (e2e TestStackWalk): that run, not a key list
// kept here, says the files are what their versions accept. These tests
// keep the choices a reader of the files should not undo.

func TestLokiConfig(t *testing.T) {
	doc := readYAML(t, "loki/loki.yaml")
	check := func(path string, labelsAllowed bool) {
		var entries []any
		if v, ok := lookup(doc, path).([]any); ok {
			entries = v
		}
		for i, e := range entries {
			m := e.(map[string]any)
			action := fmt.Sprint(m["action"])
			if !slices.Contains([]string{"index_label", "structured_metadata", "drop"}, action) ||
				(!labelsAllowed && action == "index_label") {
				t.Errorf("%s[%d]: action %q is not allowed here", path, i, action)
			}
			if (m["attributes"] == nil) == (m["regex"] == nil) {
				t.Errorf("%s[%d]: set exactly one of attributes and regex", path, i)
			}
		}
	}
	check("limits_config.otlp_config.resource_attributes.attributes_config", true)
	check("limits_config.otlp_config.log_attributes", false)
	// service.name is the index label service_name; the log records' trace
	// context stays structured metadata (Loki's OTLP default for trace_id and
	// span_id), which structured metadata must be allowed for.
	if lookup(doc, "limits_config.allow_structured_metadata") != true {
		t.Error("structured metadata is not allowed: trace_id and span_id would be lost")
	}
	labels := fmt.Sprint(lookup(doc, "limits_config.otlp_config.resource_attributes.attributes_config"))
	if !strings.Contains(labels, "service.name") {
		t.Errorf("service.name is not an index label: %s", labels)
	}
	if strings.Contains(fmt.Sprint(doc), "trace_id") {
		t.Error("loki.yaml names trace_id: it must stay structured metadata, never an index label")
	}
}

func TestPrometheusConfig(t *testing.T) {
	doc := readYAML(t, "prometheus/prometheus.yml")
	if lookup(doc, "storage.exemplars.max_exemplars") == nil {
		t.Error("no exemplar storage configured")
	}
	if lookup(doc, "global.scrape_native_histograms") != true {
		t.Error("native histograms are not scraped")
	}
}

// resolves says why a histogram's bounds (in seconds) cannot tell a 1 ms
// latency from a 100 ms one, or "" when they can: a bound at 1 ms or below,
// one at 100 ms or above, and between them no bucket more than 2.5 times
// as wide as the one before (a p95 is then off by at most that factor).
func resolves(bounds []float64) string {
	if !slices.IsSorted(bounds) || len(bounds) == 0 {
		return fmt.Sprintf("bounds %v are not ascending", bounds)
	}
	if bounds[0] > 0.001 || bounds[len(bounds)-1] < 0.1 {
		return fmt.Sprintf("bounds %v do not span 1 ms to 100 ms", bounds)
	}
	for i := 1; i < len(bounds) && bounds[i-1] < 0.1; i++ {
		if bounds[i] > 2.5*bounds[i-1]*1.0001 {
			return fmt.Sprintf("%g to %g s is a bucket too wide: a quantile in it is a guess", bounds[i-1], bounds[i])
		}
	}
	return ""
}

func TestResolvesCatchesCoarseBuckets(t *testing.T) {
	tempoDefault := []float64{0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8} // Tempo's service-graph default
	if resolves(tempoDefault) == "" {
		t.Error("Tempo's default buckets pass, yet they read every hop of a few ms as 0.1 s")
	}
	if resolves([]float64{0.001, 0.01, 0.1}) == "" {
		t.Error("decade buckets pass")
	}
}

// Tempo's service graph times the hops and the broker (a few ms): its
// buckets must resolve them, or a panel reads 0.095 s for 0.005 s.
func TestTempoServiceGraphBuckets(t *testing.T) {
	doc := readYAML(t, "tempo/tempo.yaml")
	raw, _ := lookup(doc, "metrics_generator.processor.service_graphs.histogram_buckets").([]any)
	var bounds []float64
	for _, v := range raw {
		f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil {
			t.Fatalf("histogram_buckets: %v", err)
		}
		bounds = append(bounds, f)
	}
	if why := resolves(bounds); why != "" {
		t.Errorf("Tempo's service-graph buckets: %s", why)
	}
}

// The span metrics' duration histogram, which the dashboards' p95 panels read.
func TestSpanMetricsBuckets(t *testing.T) {
	doc := readYAML(t, "otel-collector/config.yaml")
	raw, _ := lookup(doc, "connectors.span_metrics.histogram.explicit.buckets").([]any)
	var bounds []float64
	for _, v := range raw {
		d, err := time.ParseDuration(fmt.Sprint(v))
		if err != nil {
			t.Fatalf("span_metrics buckets: %v", err)
		}
		bounds = append(bounds, d.Seconds())
	}
	if why := resolves(bounds); why != "" {
		t.Errorf("span metrics buckets: %s", why)
	}
}

// Tempo needs about 30 s to stop (it flushes its live store), more than
// Docker's default 10 s: killed, it loses that data and logs "failed to
// replay block" at the next start. A query running at SIGTERM is cut off
// first (server.graceful_shutdown_timeout), within the same grace. Tempo is
// not served as a Go module, so this is checked on the files; the programs
// that run here are stopped with a query in flight by TestStackWalk.
func TestTempoStopGrace(t *testing.T) {
	grace := loadCompose(t).Services["tempo"].StopGracePeriod
	if grace == nil || time.Duration(*grace) < 40*time.Second {
		t.Errorf("tempo's stop_grace_period = %v, want 40 s or more (Tempo takes about 30 s to stop)", grace)
	}
	queries, err := time.ParseDuration(fmt.Sprint(lookup(readYAML(t, "tempo/tempo.yaml"), "server.graceful_shutdown_timeout")))
	if err != nil || grace != nil && queries >= time.Duration(*grace)-30*time.Second {
		t.Errorf("tempo.yaml server.graceful_shutdown_timeout = %v (%v): want a bound that leaves 30 s of the grace period to the flush", queries, err)
	}
}
