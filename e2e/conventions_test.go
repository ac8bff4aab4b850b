package e2e

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The conventions gate. Every attribute key the services export while the
// e2e tests run (span, span event, resource, metric point and log record
// attributes) must be a key of the semantic conventions version the suite
// imports, or a custom key documented in docs/telemetry-keys.md. A key that
// an older version of the conventions defined and the imported one no longer
// does is deprecated: it fails, unless the registry lists it among the keys
// a library still emits. Every span name must be free of IDs (UUIDs, long hex
// or digit runs): a name is a dimension of the span metrics, one series each.
//
// The keys of the conventions are read from the source of the semconv
// packages in the go.opentelemetry.io/otel module the suite builds with: the
// imported version's package (and its *conv metric packages) for the current
// keys, every older version's for the keys that were replaced.

// registryDoc is the project's registry of custom keys.
const registryDoc = "../docs/telemetry-keys.md"

// suiteServices are the services whose telemetry the gate checks; the
// collector's own, and what tests send the collector directly, are not the
// suite's.
var suiteServices = map[string]bool{"gateway": true, "orders": true, "fulfillment": true}

// exported notes every key and span name the services export, with the
// first place it was seen, for the gate to check after the tests ran.
var exported = struct {
	sync.Mutex
	keys  map[string]string // key -> where first seen
	names map[string]string // span name -> service
}{keys: map[string]string{}, names: map[string]string{}}

// noteKeys records the keys of one signal's attributes.
func noteKeys(service, where string, keys map[string]string) {
	if !suiteServices[service] {
		return
	}
	exported.Lock()
	defer exported.Unlock()
	for k := range keys {
		if _, ok := exported.keys[k]; !ok {
			exported.keys[k] = service + " " + where
		}
	}
}

// noteSpanName records a span name, unless its receiver is one where IDs in
// names are the point (the span-name-per-order scenario).
func noteSpanName(r *receiver, service, name string) {
	if !suiteServices[service] || r.idsInSpanNames.Load() {
		return
	}
	exported.Lock()
	defer exported.Unlock()
	exported.names[name] = service
}

// conventions are the keys the gate knows.
type conventions struct {
	version    string            // the imported semconv version, "v1.43.0"
	current    map[string]bool   // its keys
	templates  []string          // its key prefixes, "http.request.header."
	replaced   map[string]string // key -> the newest older version that had it
	custom     map[string]bool   // the registry's own keys
	libraryOld map[string]string // the registry's deprecated keys a library emits -> its issue
}

var semconvKey = regexp.MustCompile(`attribute\.(?:Key|String|Int|Int64|Float64|Bool|StringSlice|IntSlice|Int64Slice|Float64Slice|BoolSlice)\("([a-z0-9_.]+)"(\)|,|\s*\+)`)

// keysIn reads the attribute keys, and the templates' prefixes, that the Go
// files under dir define.
func keysIn(dir string) (keys map[string]bool, templates []string, err error) {
	keys = map[string]bool{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range semconvKey.FindAllStringSubmatch(string(b), -1) {
			if strings.HasSuffix(m[2], "+") {
				templates = append(templates, m[1])
			} else {
				keys[m[1]] = true
			}
		}
		return nil
	})
	return keys, templates, err
}

// importedSemconv is the one semconv version the suite's Go code imports.
func importedSemconv() (string, error) {
	imp := regexp.MustCompile(`"go\.opentelemetry\.io/otel/semconv/(v[0-9.]+)[/"]`)
	versions := map[string]bool{}
	for _, root := range []string{"../services", "../pkg"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			b, err := os.ReadFile(path)
			for _, m := range imp.FindAllStringSubmatch(string(b), -1) {
				versions[m[1]] = true
			}
			return err
		})
		if err != nil {
			return "", err
		}
	}
	if len(versions) != 1 {
		return "", fmt.Errorf("the suite imports %d semconv versions, want one: %v", len(versions), versions)
	}
	for v := range versions {
		return v, nil
	}
	return "", nil
}

func loadConventions() (*conventions, error) {
	version, err := importedSemconv()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.opentelemetry.io/otel").Output()
	if err != nil {
		return nil, fmt.Errorf("go list go.opentelemetry.io/otel: %w", err)
	}
	semconvDir := filepath.Join(strings.TrimSpace(string(out)), "semconv")
	c := &conventions{version: version, replaced: map[string]string{}}
	if c.current, c.templates, err = keysIn(filepath.Join(semconvDir, version)); err != nil {
		return nil, err
	}
	if len(c.current) < 500 {
		return nil, fmt.Errorf("semconv %s in %s defines only %d keys: not the package expected", version, semconvDir, len(c.current))
	}
	older, err := os.ReadDir(semconvDir)
	if err != nil {
		return nil, err
	}
	for _, d := range older {
		if !d.IsDir() || !strings.HasPrefix(d.Name(), "v") || d.Name() == version {
			continue
		}
		keys, _, err := keysIn(filepath.Join(semconvDir, d.Name()))
		if err != nil {
			return nil, err
		}
		for k := range keys {
			if !c.current[k] && newerVersion(d.Name(), c.replaced[k]) {
				c.replaced[k] = d.Name()
			}
		}
	}
	c.custom, c.libraryOld, err = readRegistry(registryDoc)
	return c, err
}

// newerVersion reports whether semver a ("v1.26.0") is newer than b ("" is oldest).
func newerVersion(a, b string) bool {
	parse := func(v string) (n [3]int) {
		fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d.%d", &n[0], &n[1], &n[2])
		return n
	}
	x, y := parse(a), parse(b)
	for i := range x {
		if x[i] != y[i] {
			return x[i] > y[i]
		}
	}
	return false
}

// readRegistry reads the registry's tables: a row whose first cell is a
// `key` lists a custom key; in the section on library keys, the row's last
// cell names the library's issue.
func readRegistry(path string) (custom map[string]bool, library map[string]string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	custom, library = map[string]bool{}, map[string]string{}
	row := regexp.MustCompile("^\\| `([^`]+)` \\|(.*)\\|\\s*$")
	inLibrary := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inLibrary = strings.Contains(strings.ToLower(line), "libraries")
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if inLibrary {
			cells := strings.Split(m[2], "|")
			library[m[1]] = strings.TrimSpace(cells[len(cells)-1])
		} else {
			custom[m[1]] = true
		}
	}
	return custom, library, sc.Err()
}

// idInName finds what looks like an ID in a span name.
var idInName = regexp.MustCompile(`(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{16,}\b|[0-9]{4,}`)

// check returns what is wrong with keys and span names, one line each.
func (c *conventions) check(keys, names map[string]string) []string {
	var problems []string
	for k, where := range keys {
		switch {
		case c.current[k] || c.custom[k]:
		case c.libraryOld[k] != "":
			// replaced, but a library still emits it; the registry names its issue
		case c.replaced[k] != "":
			problems = append(problems, fmt.Sprintf("%s (from %s): deprecated, in semconv %s but not in %s, the version the suite imports", k, where, c.replaced[k], c.version))
		case c.template(k):
		default:
			problems = append(problems, fmt.Sprintf("%s (from %s): neither a semconv %s key nor in %s", k, where, c.version, strings.TrimPrefix(registryDoc, "../")))
		}
	}
	for name, service := range names {
		if id := idInName.FindString(name); id != "" {
			problems = append(problems, fmt.Sprintf("span name %q (from %s) carries an ID (%s): span names must be low-cardinality", name, service, id))
		}
	}
	sort.Strings(problems)
	return problems
}

func (c *conventions) template(k string) bool {
	for _, p := range c.templates {
		if strings.HasPrefix(k, p) && len(k) > len(p) {
			return true
		}
	}
	return false
}

// checkConventions runs the gate on what the tests exported. It is called by
// TestMain after the tests, so it sees every test's telemetry.
func checkConventions() error {
	exported.Lock()
	defer exported.Unlock()
	if len(exported.keys) == 0 {
		return nil // no test of this run started a service
	}
	c, err := loadConventions()
	if err != nil {
		return fmt.Errorf("conventions gate: %w", err)
	}
	problems := c.check(exported.keys, exported.names)
	fmt.Fprintf(os.Stderr, "conventions gate: %d attribute keys and %d span names checked against semconv %s and %s\n",
		len(exported.keys), len(exported.names), c.version, strings.TrimPrefix(registryDoc, "../"))
	if len(problems) > 0 {
		return fmt.Errorf("conventions gate: %d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return nil
}

// TestConventionsGateCatches shows the gate failing on what it must refuse:
// a replaced key (db.system), an unknown one, a span name with an order ID;
// and passing current, custom and template keys.
func TestConventionsGateCatches(t *testing.T) {
	c, err := loadConventions()
	if err != nil {
		t.Fatal(err)
	}
	problems := c.check(map[string]string{
		"db.system":                  "orders CLIENT span",
		"made.up.key":                "orders INTERNAL span",
		"db.system.name":             "orders CLIENT span",
		"order.id":                   "orders INTERNAL span",
		"http.request.header.accept": "gateway SERVER span",
	}, map[string]string{
		"order.process 0192e3b4-6d2a-7c3e-9f10-2b3c4d5e6f70": "orders",
		"order.process":   "orders",
		"SELECT products": "orders",
	})
	want := []string{"db.system (", "made.up.key (", `span name "order.process 0192e3b4`}
	if len(problems) != len(want) {
		t.Fatalf("the gate found %d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(problems[i], w) {
			t.Errorf("problem %d: %q, want it to start with %q", i, problems[i], w)
		}
	}
	if !strings.Contains(problems[0], "deprecated") {
		t.Errorf("db.system: %q, want it called deprecated", problems[0])
	}
}
