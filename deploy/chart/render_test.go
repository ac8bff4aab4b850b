// Package chart tests the Helm chart in ordertrace/: it renders the chart
// with the Helm SDK, as `helm template` does, for each value set of
// ordertrace/ci, and checks what a cluster would run: probes, selectors,
// security, the environment the services read, Secrets, images and the two
// collector tiers.
package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"helm.sh/helm/v4/pkg/action"
	ci "helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/yaml"
)

// The release every test renders: a name and a namespace that are not the
// chart's, so nothing passes by accident.
const (
	chartDir    = "ordertrace"
	releaseName = "shop"
	namespace   = "shop-prod"

	minKubeVersion = "v1.30.0"
)

// valueSets are the value files the chart is tested with, Helm's ci/
// convention; "" is the chart's defaults alone.
var valueSets = []struct{ name, file string }{
	{"default", ""},
	{"secure", "ordertrace/ci/secure-values.yaml"},
	{"external", "ordertrace/ci/external-values.yaml"},
	{"scaled", "ordertrace/ci/scaled-values.yaml"},
}

// render renders the chart with valuesFile ("" for the defaults) as `helm
// template` does, without a cluster, and returns every object as one
// multi-document YAML stream.
func render(t *testing.T, valuesFile string) []byte {
	t.Helper()
	manifest, err := renderValues(valuesFile)
	if err != nil {
		t.Fatalf("render with %q: %v", valuesFile, err)
	}
	return manifest
}

func renderValues(valuesFile string) ([]byte, error) {
	return renderRelease(releaseName, valuesFile)
}

func renderRelease(name, valuesFile string) ([]byte, error) {
	chrt, err := loader.LoadDir(chartDir)
	if err != nil {
		return nil, err
	}
	vals := common.Values{}
	if valuesFile != "" {
		if vals, err = common.ReadValuesFile(valuesFile); err != nil {
			return nil, err
		}
	}
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = name
	install.Namespace = namespace
	// The oldest Kubernetes the chart declares (Chart.yaml kubeVersion).
	if install.KubeVersion, err = common.ParseKubeVersion(minKubeVersion); err != nil {
		return nil, err
	}
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	return []byte(rel.(*release.Release).Manifest), nil
}

// object is one rendered document: its kind and name, and its JSON.
type object struct {
	Kind, Name string
	JSON       []byte
}

// objects splits a rendered stream into its objects.
func objects(t *testing.T, manifest []byte) []object {
	t.Helper()
	var out []object
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(manifest), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("a rendered document is not YAML: %v\n%s", err, doc)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			t.Fatal(err)
		}
		out = append(out, object{meta.Kind, meta.Metadata.Name, js})
	}
	return out
}

func stripComments(doc string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")
}

// decode reads an object into its API type and refuses a field the type does
// not have, so a misspelt field (readOnlyRootFileSystem) fails here rather
// than being dropped by the cluster.
func decode[T any](t *testing.T, o object) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(o.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
	}
	return v
}

// chart holds one rendering, decoded.
type chart struct {
	objects      []object
	deployments  []appsv1.Deployment
	statefulSets []appsv1.StatefulSet
	daemonSets   []appsv1.DaemonSet
	services     []corev1.Service
	configMaps   []corev1.ConfigMap
	secrets      []corev1.Secret
	pdbs         []policyv1.PodDisruptionBudget
	hpas         []autoscalingv2.HorizontalPodAutoscaler
}

// workload is anything that runs pods.
type workload struct {
	Kind, Name string
	Selector   map[string]string
	Pod        corev1.PodTemplateSpec
}

func renderChart(t *testing.T, valuesFile string) chart {
	t.Helper()
	c := chart{objects: objects(t, render(t, valuesFile))}
	seen := map[string]bool{}
	for _, o := range c.objects {
		if seen[o.Kind+"/"+o.Name] {
			t.Errorf("%s %s is rendered twice", o.Kind, o.Name)
		}
		seen[o.Kind+"/"+o.Name] = true
		switch o.Kind {
		case "Deployment":
			c.deployments = append(c.deployments, decode[appsv1.Deployment](t, o))
		case "StatefulSet":
			c.statefulSets = append(c.statefulSets, decode[appsv1.StatefulSet](t, o))
		case "DaemonSet":
			c.daemonSets = append(c.daemonSets, decode[appsv1.DaemonSet](t, o))
		case "Service":
			c.services = append(c.services, decode[corev1.Service](t, o))
		case "ConfigMap":
			c.configMaps = append(c.configMaps, decode[corev1.ConfigMap](t, o))
		case "Secret":
			c.secrets = append(c.secrets, decode[corev1.Secret](t, o))
		case "PodDisruptionBudget":
			c.pdbs = append(c.pdbs, decode[policyv1.PodDisruptionBudget](t, o))
		case "HorizontalPodAutoscaler":
			c.hpas = append(c.hpas, decode[autoscalingv2.HorizontalPodAutoscaler](t, o))
		case "ServiceAccount":
			decode[corev1.ServiceAccount](t, o)
		case "Role":
			decode[rbacv1.Role](t, o)
		case "RoleBinding":
			decode[rbacv1.RoleBinding](t, o)
		default:
			t.Errorf("%s %s: a kind these tests do not check", o.Kind, o.Name)
		}
	}
	return c
}

func (c chart) workloads() []workload {
	var ws []workload
	for _, d := range c.deployments {
		ws = append(ws, workload{"Deployment", d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template})
	}
	for _, s := range c.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, s.Spec.Selector.MatchLabels, s.Spec.Template})
	}
	for _, d := range c.daemonSets {
		ws = append(ws, workload{"DaemonSet", d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template})
	}
	return ws
}

// component returns the workload of one part of the chart (gateway,
// collector-agent, ...), by its component label.
func (c chart) component(t *testing.T, name string) workload {
	t.Helper()
	for _, w := range c.workloads() {
		if w.Pod.Labels["app.kubernetes.io/component"] == name {
			return w
		}
	}
	t.Fatalf("no workload of component %s", name)
	return workload{}
}

func (c chart) service(name string) *corev1.Service {
	for i := range c.services {
		if c.services[i].Name == name {
			return &c.services[i]
		}
	}
	return nil
}

func (c chart) configMap(t *testing.T, name string) corev1.ConfigMap {
	t.Helper()
	for _, cm := range c.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return corev1.ConfigMap{}
}

// eachValueSet runs test once per value set, on its rendering.
func eachValueSet(t *testing.T, test func(t *testing.T, c chart)) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) { test(t, renderChart(t, vs.file)) })
	}
}

// The suite's services, and their ports.
var services = map[string]int32{"gateway": 8080, "orders": 8081, "fulfillment": 8082}

func TestChartRendersEveryValueSet(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		kinds := map[string]int{}
		for _, o := range c.objects {
			kinds[o.Kind]++
		}
		t.Logf("%d objects: %v", len(c.objects), kinds)
		for name := range services {
			c.component(t, name)
		}
		c.component(t, "collector-agent")
		c.component(t, "collector-gateway")
	})
}

func TestServicesAreConfigured(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for name, port := range services {
			w := c.component(t, name)
			ctr := w.Pod.Spec.Containers[0]
			env := envOf(ctr)
			if got, want := env["HTTP_ADDR"], fmt.Sprintf(":%d", port); got != want {
				t.Errorf("%s: HTTP_ADDR = %q, want %q", name, got, want)
			}
			if got := ctr.ReadinessProbe; got == nil || got.HTTPGet == nil || got.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness probe %+v, want GET /readyz", name, got)
			}
			if got := ctr.LivenessProbe; got == nil || got.HTTPGet == nil || got.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness probe %+v, want GET /healthz", name, got)
			}
			if len(ctr.Ports) == 0 || ctr.Ports[0].ContainerPort != port {
				t.Errorf("%s: ports %+v, want %d first", name, ctr.Ports, port)
			}
			if !strings.HasPrefix(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http") {
				t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT = %q, want a URL with its scheme", name, env["OTEL_EXPORTER_OTLP_ENDPOINT"])
			}
		}
		// The gateway calls orders through the orders Service, on its port.
		ordersURL := envOf(c.component(t, "gateway").Pod.Spec.Containers[0])["ORDERS_URL"]
		svc := c.service(releaseName + "-ordertrace-orders")
		if svc == nil || ordersURL != fmt.Sprintf("http://%s:%d", svc.Name, svc.Spec.Ports[0].Port) {
			t.Errorf("ORDERS_URL = %q, which is not the orders Service %v", ordersURL, svc)
		}
		if c.service(releaseName+"-ordertrace-gateway") == nil {
			t.Error("no Service for the gateway")
		}
	})
}

// envOf returns a container's literal variables; those from a Secret or the
// downward API have the value "(from <source>)".
func envOf(ctr corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "(from secret)"
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "(from " + e.ValueFrom.FieldRef.FieldPath + ")"
		default:
			env[e.Name] = "(from elsewhere)"
		}
	}
	return env
}

// Every probe names a port its container declares: a probe on a port nothing
// listens on kills or hides a healthy pod.
func TestProbesUseDeclaredPorts(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for _, w := range c.workloads() {
			for _, ctr := range w.Pod.Spec.Containers {
				for kind, p := range map[string]*corev1.Probe{"startup": ctr.StartupProbe, "liveness": ctr.LivenessProbe, "readiness": ctr.ReadinessProbe} {
					if p == nil {
						continue
					}
					var port *intstr.IntOrString
					switch {
					case p.HTTPGet != nil:
						port = &p.HTTPGet.Port
					case p.TCPSocket != nil:
						port = &p.TCPSocket.Port
					case p.GRPC != nil:
						port = &intstr.IntOrString{IntVal: p.GRPC.Port}
					}
					if port != nil && !declares(ctr, *port) {
						t.Errorf("%s %s: the %s probe's port %s is not a container port %v", w.Kind, w.Name, kind, port.String(), ctr.Ports)
					}
				}
				if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil {
					t.Errorf("%s %s: container %s lacks a readiness or liveness probe", w.Kind, w.Name, ctr.Name)
				}
			}
		}
	})
}

func declares(ctr corev1.Container, port intstr.IntOrString) bool {
	return slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool {
		if port.Type == intstr.String {
			return p.Name == port.StrVal
		}
		return p.ContainerPort == port.IntVal
	})
}

// Each PodDisruptionBudget and each Service selects the pods of exactly one
// workload, each HorizontalPodAutoscaler scales a rendered workload, and
// every workload's selector matches its own pods.
func TestSelectorsMatchPods(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		ws := c.workloads()
		selected := func(sel map[string]string) []string {
			var names []string
			for _, w := range ws {
				if len(sel) > 0 && subset(sel, w.Pod.Labels) {
					names = append(names, w.Name)
				}
			}
			return names
		}
		for _, w := range ws {
			if !subset(w.Selector, w.Pod.Labels) {
				t.Errorf("%s %s: selector %v does not match its pods' labels %v", w.Kind, w.Name, w.Selector, w.Pod.Labels)
			}
		}
		for _, pdb := range c.pdbs {
			if got := selected(pdb.Spec.Selector.MatchLabels); len(got) != 1 || got[0] != pdb.Name {
				t.Errorf("PodDisruptionBudget %s selects the pods of %v, want only %s's", pdb.Name, got, pdb.Name)
			}
		}
		for _, svc := range c.services {
			if got := selected(svc.Spec.Selector); len(got) != 1 {
				t.Errorf("Service %s selects the pods of %v, want one workload", svc.Name, got)
			}
		}
		for _, hpa := range c.hpas {
			ref := hpa.Spec.ScaleTargetRef
			found := slices.ContainsFunc(ws, func(w workload) bool { return w.Kind == ref.Kind && w.Name == ref.Name })
			if !found || ref.APIVersion != "apps/v1" {
				t.Errorf("HorizontalPodAutoscaler %s scales %s %s %s, which is not rendered", hpa.Name, ref.APIVersion, ref.Kind, ref.Name)
			}
			if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
				t.Errorf("HorizontalPodAutoscaler %s: bounds %v to %d", hpa.Name, hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
			}
		}
		// A workload an autoscaler scales leaves its replica count to it, and
		// every Deployment and the gateway tier has a disruption budget.
		for _, d := range c.deployments {
			scaled := slices.ContainsFunc(c.hpas, func(h autoscalingv2.HorizontalPodAutoscaler) bool { return h.Spec.ScaleTargetRef.Name == d.Name })
			if scaled == (d.Spec.Replicas != nil) {
				t.Errorf("Deployment %s: replicas %v with an autoscaler %v", d.Name, d.Spec.Replicas, scaled)
			}
		}
		for _, name := range []string{"gateway", "orders", "fulfillment", "collector-gateway"} {
			w := c.component(t, name)
			if !slices.ContainsFunc(c.pdbs, func(p policyv1.PodDisruptionBudget) bool { return p.Name == w.Name }) {
				t.Errorf("%s has no PodDisruptionBudget", w.Name)
			}
		}
	})
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// rootWritable lists the containers whose root filesystem stays writable, and
// why; every other container's is read-only.
var rootWritable = map[string]string{
	"rabbitmq": "the RabbitMQ image writes under /etc/rabbitmq and /var/log/rabbitmq as it starts",
}

// Every container runs as a non-root user without privileges, capabilities
// or privilege escalation, under the runtime's seccomp profile.
func TestSecurityContexts(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for _, w := range c.workloads() {
			pod := w.Pod.Spec.SecurityContext
			for _, ctr := range w.Pod.Spec.Containers {
				sc := ctr.SecurityContext
				where := w.Kind + " " + w.Name + " " + ctr.Name
				if sc == nil {
					t.Errorf("%s: no security context", where)
					continue
				}
				if !isTrue(sc.RunAsNonRoot) && (pod == nil || !isTrue(pod.RunAsNonRoot)) {
					t.Errorf("%s: runAsNonRoot is not set", where)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation is not false", where)
				}
				if isTrue(sc.Privileged) {
					t.Errorf("%s: privileged", where)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities %+v, want all dropped and none added", where, sc.Capabilities)
				}
				if seccomp(sc.SeccompProfile) != "RuntimeDefault" && (pod == nil || seccomp(pod.SeccompProfile) != "RuntimeDefault") {
					t.Errorf("%s: no RuntimeDefault seccomp profile", where)
				}
				if _, writable := rootWritable[ctr.Name]; !writable && !isTrue(sc.ReadOnlyRootFilesystem) {
					t.Errorf("%s: the root filesystem is writable", where)
				}
				if pod == nil || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
					t.Errorf("%s: the pod names no non-root user", where)
				}
			}
			// Only the agent talks to the Kubernetes API (its load balancer).
			token := w.Pod.Spec.AutomountServiceAccountToken
			if agent := w.Pod.Labels["app.kubernetes.io/component"] == "collector-agent"; !agent && (token == nil || *token) {
				t.Errorf("%s %s mounts a service account token it does not need", w.Kind, w.Name)
			}
		}
	})
}

func isTrue(b *bool) bool { return b != nil && *b }

func seccomp(p *corev1.SeccompProfile) corev1.SeccompProfileType {
	if p == nil {
		return ""
	}
	return p.Type
}

// Every container has requests and limits for CPU and memory.
func TestResourcesAreBounded(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for _, w := range c.workloads() {
			for _, ctr := range w.Pod.Spec.Containers {
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, lim := ctr.Resources.Requests[r], ctr.Resources.Limits[r]
					if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
						t.Errorf("%s %s: %s request %s, limit %s", w.Kind, w.Name, r, req.String(), lim.String())
					}
				}
			}
		}
	})
}

// A pod is given more time to stop than the service takes: the pre-stop
// pause, SHUTDOWN_TIMEOUT for requests in flight, then up to 5 s to flush
// telemetry (docs/design.md, "Shutdown").
func TestShutdownFitsTheGracePeriod(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for name := range services {
			w := c.component(t, name)
			ctr := w.Pod.Spec.Containers[0]
			var shutdown int64
			if _, err := fmt.Sscanf(envOf(ctr)["SHUTDOWN_TIMEOUT"], "%ds", &shutdown); err != nil {
				t.Fatalf("%s: SHUTDOWN_TIMEOUT %q: %v", name, envOf(ctr)["SHUTDOWN_TIMEOUT"], err)
			}
			var preStop int64
			if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
				preStop = ctr.Lifecycle.PreStop.Sleep.Seconds
			}
			bound := preStop + shutdown + 5
			if g := w.Pod.Spec.TerminationGracePeriodSeconds; g == nil || *g <= bound {
				t.Errorf("%s: terminationGracePeriodSeconds %v, want more than %d (pre-stop %d + shutdown %d + flush 5)", name, g, bound, preStop, shutdown)
			}
		}
	})
}

// documentedVariables returns the variable names the project README writes
// in code spans: its variables table and the standard OTEL_* variables it
// names. A trailing * names a family (OTEL_BSP_*), a leading ..._ a variable
// of the OTLP exporter (..._HEADERS is OTEL_EXPORTER_OTLP_HEADERS).
func documentedVariables(t *testing.T) func(name string) bool {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	prose := regexp.MustCompile("(?ms)^```.*?^```").ReplaceAllString(string(readme), "")
	names := map[string]bool{}
	var families []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(prose, -1) {
		s := m[1]
		switch {
		case regexp.MustCompile(`^[A-Z][A-Z0-9_]*_\*$`).MatchString(s):
			families = append(families, strings.TrimSuffix(s, "*"))
		case regexp.MustCompile(`^\.\.\._[A-Z0-9_]+$`).MatchString(s):
			names["OTEL_EXPORTER_OTLP"+strings.TrimPrefix(s, "...")] = true
		case regexp.MustCompile(`^[A-Z][A-Z0-9]*_[A-Z0-9_]+$`).MatchString(s):
			names[s] = true
		}
	}
	return func(name string) bool {
		return names[name] || slices.ContainsFunc(families, func(f string) bool { return strings.HasPrefix(name, f) })
	}
}

// The services are configured only through the variables the README
// documents: a name it does not know would be a setting no service reads.
func TestServiceVariablesAreDocumented(t *testing.T) {
	documented := documentedVariables(t)
	eachValueSet(t, func(t *testing.T, c chart) {
		for name := range services {
			w := c.component(t, name)
			for _, ctr := range append(w.Pod.Spec.InitContainers, w.Pod.Spec.Containers...) {
				if len(ctr.EnvFrom) > 0 {
					t.Errorf("%s: envFrom brings in names no test sees", name)
				}
				for _, e := range ctr.Env {
					if !documented(e.Name) {
						t.Errorf("%s sets %s, which README.md does not document", name, e.Name)
					}
				}
			}
		}
	})
}

// Every Secret a pod reads is rendered by the chart (with the key read) or
// named in the values, for the cluster to hold; the secure set reads the
// Secrets of the secure compose profile's files.
func TestSecretsReferencedExist(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			c := renderChart(t, vs.file)
			inValues := valueStrings(t, vs.file)
			rendered := map[string]corev1.Secret{}
			for _, s := range c.secrets {
				rendered[s.Name] = s
			}
			check := func(where, name, key string) {
				if s, ok := rendered[name]; ok {
					_, inData := s.Data[key]
					_, inString := s.StringData[key]
					if key != "" && !inData && !inString {
						t.Errorf("%s reads key %s of Secret %s, which the chart does not write", where, key, name)
					}
					return
				}
				if !inValues[name] {
					t.Errorf("%s reads Secret %s, which is neither rendered nor named in the values", where, name)
				}
			}
			for _, w := range c.workloads() {
				for _, ctr := range w.Pod.Spec.Containers {
					for _, e := range ctr.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							check(w.Name+" "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
						}
					}
				}
				for _, v := range w.Pod.Spec.Volumes {
					if v.Secret != nil {
						for _, item := range v.Secret.Items {
							check(w.Name+" volume "+v.Name, v.Secret.SecretName, item.Key)
						}
					}
				}
			}
		})
	}
}

// valueStrings returns every string of the chart's values merged with a
// value file, as Helm merges them.
func valueStrings(t *testing.T, valuesFile string) map[string]bool {
	t.Helper()
	chrt, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals := common.Values{}
	if valuesFile != "" {
		if vals, err = common.ReadValuesFile(valuesFile); err != nil {
			t.Fatal(err)
		}
	}
	merged := mergeMaps(chrt.Values, map[string]any(vals))
	out := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			out[v] = true
		}
	}
	walk(merged)
	return out
}

// mergeMaps merges over onto base as Helm and the collector merge
// configurations: maps key by key, anything else replaced.
func mergeMaps(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if b, ok := out[k].(map[string]any); ok {
			if o, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(b, o)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// exactTag is a version: digits and dots, perhaps a v before and a variant
// after (18.6-alpine, v3.14.0), never latest.
var exactTag = regexp.MustCompile(`^v?\d+(\.\d+)+(-[a-z0-9][a-z0-9.-]*)?$`)

// Every image has an exact tag, and the third-party ones are the compose
// stack's: the same PostgreSQL, Redis, RabbitMQ and collector.
func TestImagesArePinned(t *testing.T) {
	compose := composeImages(t)
	eachValueSet(t, func(t *testing.T, c chart) {
		for _, w := range c.workloads() {
			for _, ctr := range append(w.Pod.Spec.InitContainers, w.Pod.Spec.Containers...) {
				repo, tag, ok := strings.Cut(ctr.Image[strings.LastIndex(ctr.Image, "/")+1:], ":")
				if !ok || !exactTag.MatchString(tag) {
					t.Errorf("%s %s: image %s has no exact tag", w.Kind, w.Name, ctr.Image)
					continue
				}
				if _, ours := services[repo]; ours {
					continue
				}
				if !compose[ctr.Image] {
					t.Errorf("%s %s: image %s is not one deploy/docker-compose.yml runs", w.Kind, w.Name, ctr.Image)
				}
			}
		}
	})
}

// composeImages returns the images of deploy/docker-compose.yml, with the
// base images its wrapper builds start from (the collector's).
func composeImages(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image string `json:"image"`
			Build struct {
				Args map[string]string `json:"args"`
			} `json:"build"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	images := map[string]bool{}
	for _, s := range compose.Services {
		images[s.Image] = true
		if base := s.Build.Args["BASE_IMAGE"]; base != "" {
			images[base] = true
		}
	}
	return images
}

// The optional charts are pinned to exact versions, each behind a condition
// that is off by default; without charts/ the chart still renders (every
// test here), and Helm's own check says what `helm install` needs first.
func TestDependenciesArePinnedAndOff(t *testing.T) {
	chrt, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	deps := chrt.Metadata.Dependencies
	if len(deps) != 3 {
		t.Fatalf("%d dependencies, want Tempo, Loki and Prometheus", len(deps))
	}
	semver := regexp.MustCompile(`^\d+\.\d+\.\d+$`)
	for _, d := range deps {
		if !semver.MatchString(d.Version) {
			t.Errorf("%s: version %q is not an exact version", d.Name, d.Version)
		}
		if d.Condition != d.Name+".enabled" {
			t.Errorf("%s: condition %q, want %s.enabled", d.Name, d.Condition, d.Name)
		}
		sub, _ := chrt.Values[d.Name].(map[string]any)
		if enabled, ok := sub["enabled"].(bool); !ok || enabled {
			t.Errorf("%s.enabled is %v in values.yaml, want false", d.Name, sub["enabled"])
		}
		if !strings.HasPrefix(d.Repository, "https://") {
			t.Errorf("%s: repository %q", d.Name, d.Repository)
		}
	}
	accessor, err := ci.NewAccessor(chrt)
	if err != nil {
		t.Fatal(err)
	}
	err = action.CheckDependencies(chrt, accessor.MetaDependencies())
	if err == nil || !strings.Contains(err.Error(), "missing in charts/") {
		t.Errorf("CheckDependencies: %v, want the dependencies missing (helm dependency build fetches them)", err)
	}
	t.Logf("without charts/, helm install says: %v", err)
}

// writeValues writes a value file for one test.
func writeValues(t *testing.T, values string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Values reach the variables they name: the services' own settings, the
// built-in backends' passwords (inside the URLs), and the dependency charts'
// Services as the gateway tier's exporters' endpoints.
func TestValuesReachTheirVariables(t *testing.T) {
	c := renderChart(t, writeValues(t, `
telemetry: { priorityTenants: "acme,globex", samplerArg: "0.25", protocol: grpc }
gateway: { env: { ORDERS_TIMEOUT: 5s, LOG_LEVEL: debug } }
shutdownTimeoutSeconds: 20
backends: { builtin: { postgres: { password: pg-secret.1 }, rabbitmq: { password: mq_secret~2 } } }
tempo: { enabled: true }
loki: { enabled: true }
prometheus: { enabled: true }
`))
	gateway := envOf(c.component(t, "gateway").Pod.Spec.Containers[0])
	for name, want := range map[string]string{
		"PRIORITY_TENANTS":            "acme,globex",
		"OTEL_TRACES_SAMPLER_ARG":     "0.25",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
		"ORDERS_TIMEOUT":              "5s",
		"LOG_LEVEL":                   "debug",
		"SHUTDOWN_TIMEOUT":            "20s",
	} {
		if gateway[name] != want {
			t.Errorf("gateway %s = %q, want %q", name, gateway[name], want)
		}
	}
	if got := *c.component(t, "gateway").Pod.Spec.TerminationGracePeriodSeconds; got != 35 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 35 (5 + 20 + 5 + 5)", got)
	}
	secret := c.secrets[0].StringData
	for key, want := range map[string]string{
		"database-url": "postgres://postgres:pg-secret.1@shop-ordertrace-postgres:5432/orders?sslmode=disable",
		"amqp-url":     "amqp://ordertrace:mq_secret~2@shop-ordertrace-rabbitmq:5672/",
		"redis-url":    "redis://shop-ordertrace-redis:6379/0",
	} {
		if secret[key] != want {
			t.Errorf("Secret %s = %q, want %q", key, secret[key], want)
		}
	}
	collector := envOf(c.component(t, "collector-gateway").Pod.Spec.Containers[0])
	for name, want := range map[string]string{
		"TEMPO_OTLP_ENDPOINT":      "http://shop-tempo:4318",
		"LOKI_OTLP_ENDPOINT":       "http://shop-loki-gateway/otlp",
		"PROMETHEUS_OTLP_ENDPOINT": "http://shop-prometheus-server/api/v1/otlp",
	} {
		if collector[name] != want {
			t.Errorf("gateway tier %s = %q, want %q (the dependency chart's Service)", name, collector[name], want)
		}
	}

	// And what cannot work is refused at render time, with the value named.
	for values, want := range map[string]string{
		`backends: { builtin: { postgres: { password: "p@ss/word" } } }`: "the password goes into a URL",
		`backends: { builtin: { enabled: false } }`:                      "backends.external.postgres.secretName is required",
		`orders: { env: { DATABASE_URL: "postgres://x" } }`:              "orders.env.DATABASE_URL",
	} {
		if _, err := renderValues(writeValues(t, values)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("values %s: error %v, want one saying %q", values, err, want)
		}
	}
}

// Names fit Kubernetes' limits for the longest release name Helm allows (53
// characters): 63 for a Service (a DNS label) and for the label values a
// StatefulSet gives its pods.
func TestLongReleaseNamesFit(t *testing.T) {
	long := strings.Repeat("a-very-long-release-name-", 3)[:53]
	manifest, err := renderRelease(long, "")
	if err != nil {
		t.Fatal(err)
	}
	dnsLabel := regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	for _, o := range objects(t, manifest) {
		if o.Kind == "Service" && !dnsLabel.MatchString(o.Name) {
			t.Errorf("Service %q is not a DNS label of at most 63 characters", o.Name)
		}
		// A StatefulSet's pods are labelled <name>-<10-character revision hash>.
		if o.Kind == "StatefulSet" && len(o.Name)+11 > 63 {
			t.Errorf("StatefulSet %q leaves its pods' revision label over 63 characters", o.Name)
		}
		if len(o.Name) > 63 {
			t.Errorf("%s %q is longer than 63 characters", o.Kind, o.Name)
		}
	}
}
