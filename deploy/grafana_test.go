package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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

// From a span to its profile: Tempo's traces-to-profiles opens the span's
// CPU samples in the Pyroscope data source, which reads the compose stack's
// Pyroscope. The services label CPU samples with the pyroscope.profile.id of
// the request's first span in each service (e2e/profiles_test.go), so the
// link is the span profile (no custom query), on the CPU profile type.
func TestGrafanaTracesToProfiles(t *testing.T) {
	byUID := map[string]datasource{}
	for _, ds := range readDatasources(t) {
		byUID[ds.UID] = ds
	}
	pyro, ok := byUID["pyroscope"]
	if !ok || pyro.Type != "grafana-pyroscope-datasource" {
		t.Fatalf("datasource pyroscope = %+v, want a grafana-pyroscope-datasource", pyro)
	}
	if _, ok := loadCompose(t).Services["pyroscope"]; !ok || pyro.URL != "http://pyroscope:4040" {
		t.Errorf("the Pyroscope datasource reads %s (compose service there: %v), want http://pyroscope:4040", pyro.URL, ok)
	}
	link, _ := byUID["tempo"].JSONData["tracesToProfiles"].(map[string]any)
	if link == nil {
		t.Fatal("the Tempo datasource has no tracesToProfiles")
	}
	if link["datasourceUid"] != "pyroscope" {
		t.Errorf("traces-to-profiles opens datasource %v, want pyroscope", link["datasourceUid"])
	}
	// pyroscope-go pushes Go's CPU profile, which Pyroscope names so; the
	// span_id labels are on its samples only.
	if want := "process_cpu:cpu:nanoseconds:cpu:nanoseconds"; link["profileTypeId"] != want {
		t.Errorf("traces-to-profiles profile type %v, want %s", link["profileTypeId"], want)
	}
	if link["customQuery"] == true {
		t.Error("traces-to-profiles runs a custom query; the span's own profile (pyroscope.profile.id) is the link")
	}
	tags, _ := link["tags"].([]any)
	if len(tags) != 1 || fmt.Sprint(tags[0]) != "map[key:service.name value:service_name]" {
		t.Errorf("traces-to-profiles tags %v, want service.name as Pyroscope's service_name", tags)
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

// tracesDrilldown is Grafana's Traces Drilldown app (menu: Drilldown -> Traces).
const tracesDrilldown = "grafana-exploretraces-app"

var exactVersion = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// pluginVersion is the version deploy/VERSIONS.md records for a Grafana
// plugin, in its table of Grafana plugins.
func pluginVersion(t *testing.T, id string) string {
	t.Helper()
	raw, err := os.ReadFile("VERSIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(id) + "`[^|]*\\| `([^`]*)` \\|").FindStringSubmatch(string(raw))
	if row == nil {
		t.Fatalf("VERSIONS.md has no row for the plugin %s", id)
	}
	if !exactVersion.MatchString(row[1]) {
		t.Fatalf("VERSIONS.md records %s at %q, want an exact version x.y.z", id, row[1])
	}
	return row[1]
}

// Grafana 13 would install the newest Traces Drilldown at every start: the
// stack installs the version VERSIONS.md records, from grafana.com's
// catalog, before Grafana serves, and nothing updates it. The secure profile
// keeps the same settings.
func TestGrafanaTracesDrilldownPinned(t *testing.T) {
	want := pluginVersion(t, tracesDrilldown)
	for name, p := range map[string]*types.Project{
		"docker-compose.yml":        loadCompose(t),
		"docker-compose.secure.yml": loadSecureCompose(t, ""),
	} {
		env := p.Services["grafana"].Environment
		value := func(key string) string {
			if v := env[key]; v != nil {
				return *v
			}
			return ""
		}
		// Grafana's form: id, id@version or id@version@url.
		var pins []string
		for _, entry := range strings.Split(value("GF_PLUGINS_PREINSTALL_SYNC"), ",") {
			if id, version, _ := strings.Cut(strings.TrimSpace(entry), "@"); id == tracesDrilldown {
				pins = append(pins, version)
			}
		}
		if len(pins) != 1 || pins[0] != want {
			t.Errorf("%s: GF_PLUGINS_PREINSTALL_SYNC installs %s at %q, want exactly %s@%s, the version of VERSIONS.md",
				name, tracesDrilldown, pins, tracesDrilldown, want)
		}
		for _, other := range []string{"GF_PLUGINS_PREINSTALL", "GF_INSTALL_PLUGINS", "GF_PLUGINS_DISABLE_PLUGINS"} {
			if strings.Contains(value(other), tracesDrilldown) {
				t.Errorf("%s: %s names %s too", name, other, tracesDrilldown)
			}
		}
		if v := value("GF_PLUGINS_PREINSTALL_AUTO_UPDATE"); v != "false" {
			t.Errorf("%s: GF_PLUGINS_PREINSTALL_AUTO_UPDATE = %q, want false: Grafana would update the preinstalled plugins", name, v)
		}
		if v := value("GF_PLUGINS_PREINSTALL_DISABLED"); v == "true" {
			t.Errorf("%s: GF_PLUGINS_PREINSTALL_DISABLED = true: Grafana would ignore the pin", name)
		}
	}
}

// docker-compose.offline.yml, for a room without network: Grafana installs
// nothing and loads the app from the folder the instructor guide fills, and
// the guide and the README name the version VERSIONS.md records.
func TestGrafanaOffline(t *testing.T) {
	want := pluginVersion(t, tracesDrilldown)
	raw, err := os.ReadFile("docker-compose.offline.yml")
	if err != nil {
		t.Fatal(err)
	}
	var override struct {
		Services map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &override); err != nil {
		t.Fatalf("docker-compose.offline.yml: %v", err)
	}
	if _, ok := override.Services["grafana"]; !ok || len(override.Services) != 1 {
		t.Errorf("docker-compose.offline.yml changes %d services, want Grafana only", len(override.Services))
	}

	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml", "docker-compose.offline.yml"},
		cli.WithWorkingDirectory("."), cli.WithInterpolation(true), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml with docker-compose.offline.yml: %v", err)
	}
	grafana := p.Services["grafana"]
	if v := grafana.Environment["GF_PLUGINS_PREINSTALL_DISABLED"]; v == nil || *v != "true" {
		t.Error("offline, Grafana still installs plugins from grafana.com: want GF_PLUGINS_PREINSTALL_DISABLED=true")
	}
	folder, _ := filepath.Abs(filepath.Join("grafana/plugins", tracesDrilldown))
	mounted := false
	for _, v := range grafana.Volumes {
		if v.Target != "/var/lib/grafana/plugins/"+tracesDrilldown {
			continue
		}
		mounted = true
		// Without the folder, compose must stop rather than mount an empty one.
		if v.Type != types.VolumeTypeBind || v.Source != folder || !v.ReadOnly || v.Bind == nil || bool(v.Bind.CreateHostPath) {
			t.Errorf("the app is mounted as %+v, want grafana/plugins/%s read-only, never created by compose", v, tracesDrilldown)
		}
	}
	if !mounted {
		t.Errorf("offline, nothing is mounted at /var/lib/grafana/plugins/%s", tracesDrilldown)
	}
	if _, err := os.Stat("grafana/plugins/.gitignore"); err != nil {
		t.Errorf("grafana/plugins holds downloads, which its .gitignore keeps out of commits: %v", err)
	}

	// Every version of the app the guide and the README name is the pinned one.
	guide, err := os.ReadFile("../docs/workshop/instructor-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	download := fmt.Sprintf("https://grafana.com/api/plugins/%s/versions/%s/download", tracesDrilldown, want)
	if !strings.Contains(string(guide), download) {
		t.Errorf("the instructor guide does not download %s", download)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(tracesDrilldown + `(?:-|/versions/)([0-9.]+[0-9])|"version": "([0-9.]+)"|Drilldown app \(([0-9.]+)\)`)
	seen := 0
	for _, m := range named.FindAllStringSubmatch(string(guide)+string(readme), -1) {
		seen++
		if v := m[1] + m[2] + m[3]; v != want {
			t.Errorf("the instructor guide or the README names version %s of the app (%q), want %s", v, m[0], want)
		}
	}
	if seen < 4 {
		t.Errorf("the guide and the README name the app's version %d times, want the download, the unzip, the check and the README", seen)
	}
}

// make chaos posts each switch to Grafana's annotations API tagged "chaos"
// (pkg/scenario/annotate.go): every dashboard shows them, from Grafana's own
// annotation store filtered by that tag, and make chaos posts as the admin
// the compose file sets.
func TestGrafanaDashboardsShowChaos(t *testing.T) {
	files, _ := filepath.Glob("grafana/dashboards/*.json")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		var dash struct {
			Annotations struct {
				List []struct {
					Name       string
					Enable     bool
					Datasource struct{ Type, UID string }
					Target     struct {
						Type     string
						Tags     []string
						MatchAny bool
					}
				}
			}
		}
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		shown := false
		for _, a := range dash.Annotations.List {
			if a.Name != "chaos" {
				continue
			}
			shown = true
			if !a.Enable || a.Datasource.Type != "grafana" || a.Datasource.UID != "-- Grafana --" {
				t.Errorf("%s: the chaos annotations are enabled %v from %+v, want on, from Grafana's own store", f, a.Enable, a.Datasource)
			}
			if a.Target.Type != "tags" || strings.Join(a.Target.Tags, ",") != "chaos" || a.Target.MatchAny {
				t.Errorf("%s: the chaos annotations are queried by %+v, want the tag chaos", f, a.Target)
			}
		}
		if !shown {
			t.Errorf("%s: no annotation query named chaos: make chaos's switches would not show", f)
		}
	}

	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	setting := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*\?=\s*(\S*)$`).FindSubmatch(makefile)
		if m == nil {
			t.Errorf("the Makefile sets no %s", name)
			return ""
		}
		return string(m[1])
	}
	env := loadCompose(t).Services["grafana"].Environment
	password := "admin" // Grafana's default
	if v := env["GF_SECURITY_ADMIN_PASSWORD"]; v != nil {
		password = *v
	}
	user := "admin"
	if v := env["GF_SECURITY_ADMIN_USER"]; v != nil {
		user = *v
	}
	if got := setting("GRAFANA_USER") + ":" + setting("GRAFANA_PASSWORD"); got != user+":"+password {
		t.Errorf("make chaos annotates as %s, want the compose file's Grafana admin %s:%s", got, user, password)
	}
	if got := setting("GRAFANA_URL"); got != "http://localhost:3000" {
		t.Errorf("make chaos annotates at %s, want the compose stack's Grafana, http://localhost:3000", got)
	}
}
