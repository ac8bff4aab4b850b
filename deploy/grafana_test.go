package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type datasource struct {
	Name     string         `yaml:"name"`
	UID      string         `yaml:"uid"`
	Type     string         `yaml:"type"`
	URL      string         `yaml:"url"`
	JSONData map[string]any `yaml:"jsonData"`
}

func readDatasources(t *testing.T) []datasource {
	t.Helper()
	raw, err := os.ReadFile("grafana/provisioning/datasources/datasources.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		APIVersion  int          `yaml:"apiVersion"`
		Datasources []datasource `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("datasources.yaml: %v", err)
	}
	if file.APIVersion != 1 || len(file.Datasources) < 3 {
		t.Fatalf("datasources.yaml: apiVersion %d, %d datasources", file.APIVersion, len(file.Datasources))
	}
	return file.Datasources
}

// uidRefs finds every datasourceUid, at any depth.
func uidRefs(v any) []string {
	var refs []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "datasourceUid" || k == "uid") {
				refs = append(refs, s)
			}
			refs = append(refs, uidRefs(x)...)
		}
	case []any:
		for _, x := range v {
			refs = append(refs, uidRefs(x)...)
		}
	}
	return refs
}

func TestGrafanaDatasources(t *testing.T) {
	sources := readDatasources(t)
	uids := map[string]string{}
	for _, ds := range sources {
		if ds.UID == "" {
			t.Errorf("datasource %s has no fixed uid", ds.Name)
		}
		if _, dup := uids[ds.UID]; dup {
			t.Errorf("uid %s is used twice", ds.UID)
		}
		uids[ds.UID] = ds.Type
	}
	for _, ds := range sources {
		for _, ref := range uidRefs(ds.JSONData) {
			if _, ok := uids[ref]; !ok {
				t.Errorf("%s links to datasource uid %q, which does not exist", ds.Name, ref)
			}
		}
	}

	byUID := map[string]datasource{}
	for _, ds := range sources {
		byUID[ds.UID] = ds
	}
	// Exemplars link to Tempo under both label names in use.
	var exemplarNames []string
	for _, d := range byUID["prometheus"].JSONData["exemplarTraceIdDestinations"].([]any) {
		m := d.(map[string]any)
		if m["datasourceUid"] == "tempo" {
			exemplarNames = append(exemplarNames, fmt.Sprint(m["name"]))
		}
	}
	if strings.Join(exemplarNames, ",") != "trace_id,traceID" {
		t.Errorf("exemplar links %v, want trace_id and traceID to Tempo", exemplarNames)
	}
	tempo := byUID["tempo"].JSONData
	for _, key := range []string{"tracesToLogsV2", "tracesToMetrics", "serviceMap", "nodeGraph"} {
		if tempo[key] == nil {
			t.Errorf("Tempo datasource has no %s", key)
		}
	}
	// Traces to logs filters on the trace_id structured metadata, after a
	// stream selector (structured metadata is not a stream label).
	q := strings.ReplaceAll(fmt.Sprint(tempo["tracesToLogsV2"].(map[string]any)["query"]), "$$", "$") // as Grafana expands it
	if !regexp.MustCompile(`^\{[^}]+\} \| trace_id="\$\{__trace\.traceId\}"$`).MatchString(q) {
		t.Errorf("traces-to-logs query %q does not filter structured metadata by trace ID", q)
	}
}

// Grafana expands $VAR and ${VAR} in provisioning files from its
// environment; a Grafana template variable must be written $${...}.
func TestGrafanaProvisioningEscapesDollars(t *testing.T) {
	files, _ := filepath.Glob("grafana/provisioning/*/*.yaml")
	single := regexp.MustCompile(`(^|[^$])\$([^$]|$)`)
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		// yaml loads $$ as it is; after Grafana's expansion it becomes $.
		for i, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			if single.MatchString(strings.ReplaceAll(line, "$$", "")) {
				t.Errorf("%s:%d: an unescaped $ that Grafana would expand: %s", f, i+1, line)
			}
		}
	}
}

// Every record reaches Loki over OTLP, its trace ID as the structured
// metadata trace_id: the one derived field is the one that reads it. make
// test-stack applies it to a real Loki's records.
func TestGrafanaDerivedFields(t *testing.T) {
	var fields []map[string]any
	for _, ds := range readDatasources(t) {
		if ds.UID == "loki" {
			for _, f := range ds.JSONData["derivedFields"].([]any) {
				fields = append(fields, f.(map[string]any))
			}
		}
	}
	if len(fields) != 1 || fields[0]["matcherType"] != "label" || fields[0]["matcherRegex"] != "trace_id" || fields[0]["datasourceUid"] != "tempo" {
		t.Errorf("Loki's derived fields = %v, want one: the trace_id label (structured metadata) linked to Tempo", fields)
	}
}

func TestGrafanaDashboards(t *testing.T) {
	sources := map[string]bool{}
	for _, ds := range readDatasources(t) {
		sources[ds.UID] = true
	}
	files, _ := filepath.Glob("grafana/dashboards/*.json")
	if len(files) < 3 {
		t.Fatalf("%d dashboards, want the overview, the message flow and the pipeline health", len(files))
	}
	uids := map[string]string{}
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		var dash map[string]any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		uid := fmt.Sprint(dash["uid"])
		if other, dup := uids[uid]; dup || uid == "" {
			t.Errorf("%s: uid %q is empty or also used by %s", f, uid, other)
		}
		uids[uid] = f
		for _, ref := range uidRefs(dash["panels"]) {
			if !sources[ref] {
				t.Errorf("%s: a panel uses datasource uid %q, which is not provisioned", f, ref)
			}
		}
	}
	// Grafana opens on the overview, without a login for viewing.
	env := loadCompose(t).Services["grafana"].Environment
	home := env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if home == nil || filepath.Base(*home) != "overview.json" {
		t.Errorf("home dashboard = %v, want overview.json", home)
	}
	if v := env["GF_AUTH_ANONYMOUS_ENABLED"]; v == nil || *v != "true" {
		t.Error("anonymous viewing is off: Grafana would ask for a login")
	}
}

// The pipeline dashboard lists the state of every alert on lost telemetry:
// its ALERTS query names exactly the alerts of prometheus/rules/telemetry.yml.
func TestPipelineDashboardShowsAlerts(t *testing.T) {
	raw, err := os.ReadFile("grafana/dashboards/pipeline.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	query := regexp.MustCompile(`^ALERTS\{alertname=~"([^"]+)"\}$`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if m := query.FindStringSubmatch(tg.Expr); m != nil {
				for _, name := range strings.Split(m[1], "|") {
					shown[name] = true
				}
			}
		}
	}
	var rf ruleFile
	readRuleYAML(t, "prometheus/rules/telemetry.yml", &rf)
	defined := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				defined[r.Alert] = true
				if !shown[r.Alert] {
					t.Errorf("pipeline.json shows no state for alert %s", r.Alert)
				}
			}
		}
	}
	for name := range shown {
		if !defined[name] {
			t.Errorf("pipeline.json shows the state of %s, which telemetry.yml does not define", name)
		}
	}
	if len(defined) == 0 {
		t.Error("telemetry.yml defines no alert")
	}
}
