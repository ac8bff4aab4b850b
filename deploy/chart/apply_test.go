package chart

import "testing"

// Every object of every value set is one a real kube-apiserver accepts:
// server-side apply, dry-run, with strict field validation (apiserver_test.go),
// so no field is misspelt, mistyped, missing or of a kind the server does not
// serve.
func TestChartAppliesToAPIServer(t *testing.T) {
	s := startAPIServer(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			manifest := render(t, vs.file)
			for _, err := range s.applyDryRun(t, manifest) {
				t.Error(err)
			}
			t.Logf("%d objects accepted", len(objects(t, manifest)))
		})
	}
}
