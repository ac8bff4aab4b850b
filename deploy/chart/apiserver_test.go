package chart

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The chart's objects are checked by a real kube-apiserver backed by a real
// etcd (tools/kube-apiserver, tools/etcd): each object goes to the server as a
// server-side apply, dry-run, with strict field validation, so the server
// refuses what a cluster would refuse: unknown fields, wrong types, missing
// required fields, kinds it does not serve. Nothing is stored but the
// namespaces the objects go to.

// apiServer is a kube-apiserver and its etcd, run for one test.
type apiServer struct {
	url    string
	token  string // the admin's, in group system:masters
	client *http.Client

	mu         sync.Mutex
	kinds      map[string]map[string]apiResource // by apiVersion, then kind
	namespaces int                               // made so far, to name the next
}

// apiResource is how the server serves a kind, as its discovery tells.
type apiResource struct {
	Name       string `json:"name"` // the plural in the object's path
	Kind       string `json:"kind"`
	Namespaced bool   `json:"namespaced"`
}

// startAPIServer builds (or finds in the cache) etcd and kube-apiserver,
// starts them on free loopback ports, and stops them when the test ends. One
// server serves a whole test: start it once and check several renders in
// subtests.
func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	etcdBin, apiserverBin := buildTool(t, "etcd"), buildTool(t, "kube-apiserver")
	began := time.Now()
	dir := t.TempDir()

	etcdURL, peerURL := "http://"+freeAddr(t), "http://"+freeAddr(t)
	etcd := startProcess(t, etcdBin, "--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=test="+peerURL,
		// The data dies with the test: no need to wait for the disk.
		"--unsafe-no-fsync")
	waitReady(t, etcd, func() bool {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The server's certificate, its key for signing service account tokens,
	// and the admin's token, all made here for this run.
	certFile, keyFile, saKeyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key"), filepath.Join(dir, "sa.key")
	cert := selfSignedCert(t, writeKey(t, keyFile))
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	writeKey(t, saKeyFile)
	token := randomHex(t)
	tokenFile := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokenFile, []byte(token+",admin,admin,system:masters\n"))

	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	apiserver := startProcess(t, apiserverBin, "--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--tls-cert-file="+certFile, "--tls-private-key-file="+keyFile,
		"--token-auth-file="+tokenFile,
		// What the objects say is under test here, not who may send them.
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-signing-key-file="+saKeyFile,
		"--service-account-key-file="+saKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		// The default plugins, as a cluster runs them, but ServiceAccount: it
		// refuses Pods whose service account exists only in the dry run, and
		// no controller makes the namespaces' default one.
		"--disable-admission-plugins=ServiceAccount")

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	s := &apiServer{
		url:   "https://" + addr,
		token: token,
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
		kinds: map[string]map[string]apiResource{},
	}
	t.Cleanup(s.client.CloseIdleConnections)
	waitReady(t, apiserver, func() bool {
		status, _, err := s.do(http.MethodGet, "/readyz", "", nil)
		return err == nil && status == http.StatusOK
	})
	t.Logf("etcd and kube-apiserver ready in %s", time.Since(began).Round(10*time.Millisecond))
	return s
}

// applyDryRun sends each object of a YAML stream, as helm template prints
// it, to the server as a server-side apply, dry-run with strict field
// validation, and returns an error for each object the server refuses or
// does not know, naming it. Objects that name no namespace go to one made for
// this call; the namespaces are created for real, and deleted when the test
// ends.
func (s *apiServer) applyDryRun(t *testing.T, manifests []byte) []error {
	t.Helper()
	var errs []error
	var ownNamespace string
	for i, doc := range splitYAML(manifests) {
		asJSON, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i+1, err))
			continue
		}
		if string(asJSON) == "null" { // only comments, as Helm leaves for an empty template
			continue
		}
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(asJSON, &obj); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i+1, err))
			continue
		}
		what := obj.Kind + " " + obj.Metadata.Name
		res, ok := s.resource(t, obj.APIVersion, obj.Kind)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s: the server serves no kind %q in %q (a custom resource whose CRD is not installed?)",
				what, obj.Kind, obj.APIVersion))
			continue
		case obj.Metadata.Name == "":
			errs = append(errs, fmt.Errorf("document %d, a %s: no metadata.name", i+1, obj.Kind))
			continue
		}

		path := groupVersionPath(obj.APIVersion)
		if res.Namespaced {
			ns := obj.Metadata.Namespace
			if ns == "" {
				if ownNamespace == "" {
					ownNamespace = s.newNamespaceName()
					s.createNamespace(t, ownNamespace)
				}
				ns = ownNamespace
			} else {
				s.createNamespace(t, ns)
			}
			path += "/namespaces/" + url.PathEscape(ns)
		}
		path += "/" + res.Name + "/" + url.PathEscape(obj.Metadata.Name) +
			"?dryRun=All&fieldManager=ordertrace-test&fieldValidation=Strict&force=true"
		status, body, err := s.do(http.MethodPatch, path, "application/apply-patch+yaml", doc)
		if err != nil {
			t.Fatalf("apply %s: %v", what, err)
		}
		if status/100 != 2 {
			errs = append(errs, fmt.Errorf("%s: %s", what, statusMessage(body)))
		}
	}
	return errs
}

// resource finds how the server serves kind in apiVersion, asking its
// discovery (GET /api/v1, /apis/GROUP/VERSION) once per apiVersion.
func (s *apiServer) resource(t *testing.T, apiVersion, kind string) (apiResource, bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if kinds, ok := s.kinds[apiVersion]; ok {
		res, ok := kinds[kind]
		return res, ok
	}
	status, body, err := s.do(http.MethodGet, groupVersionPath(apiVersion), "", nil)
	switch {
	case err != nil:
		t.Fatalf("discovery of %s: %v", apiVersion, err)
	case status == http.StatusNotFound: // a group or version the server does not serve
		return apiResource{}, false
	case status != http.StatusOK:
		t.Fatalf("discovery of %s: %d %s", apiVersion, status, statusMessage(body))
	}
	var list struct {
		Resources []apiResource `json:"resources"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("discovery of %s: %v", apiVersion, err)
	}
	kinds := map[string]apiResource{}
	for _, res := range list.Resources {
		if !strings.Contains(res.Name, "/") { // not a subresource such as deployments/scale
			kinds[res.Kind] = res
		}
	}
	s.kinds[apiVersion] = kinds
	res, ok := kinds[kind]
	return res, ok
}

// groupVersionPath is where the server serves an apiVersion: the core group
// ("v1") has a path of its own.
func groupVersionPath(apiVersion string) string {
	if apiVersion == "v1" {
		return "/api/v1"
	}
	return "/apis/" + apiVersion
}

func (s *apiServer) newNamespaceName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.namespaces++
	return fmt.Sprintf("test-%d", s.namespaces)
}

// createNamespace creates namespace ns unless it exists, and deletes it when
// the test ends if this call created it.
func (s *apiServer) createNamespace(t *testing.T, ns string) {
	t.Helper()
	status, body, err := s.do(http.MethodPost, "/api/v1/namespaces", "application/json",
		fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, ns))
	switch {
	case err != nil:
		t.Fatalf("create namespace %s: %v", ns, err)
	case status == http.StatusConflict: // there already
		return
	case status != http.StatusCreated:
		t.Fatalf("create namespace %s: %d %s", ns, status, statusMessage(body))
	}
	t.Cleanup(func() { s.deleteNamespace(t, ns) })
}

// deleteNamespace deletes namespace ns and finishes the deletion itself: no
// namespace controller runs here to empty and finalize it, and it holds
// nothing, since every apply was a dry run. A later test may then create it
// again.
func (s *apiServer) deleteNamespace(t *testing.T, ns string) {
	t.Helper()
	path := "/api/v1/namespaces/" + url.PathEscape(ns)
	finalized := fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q},"spec":{"finalizers":[]}}`, ns)
	for _, req := range []struct {
		method, path string
		body         []byte
	}{
		{http.MethodDelete, path, nil},
		{http.MethodPut, path + "/finalize", finalized},
		{http.MethodDelete, path, nil},
	} {
		status, body, err := s.do(req.method, req.path, "application/json", req.body)
		if err != nil || (status/100 != 2 && status != http.StatusNotFound) {
			t.Errorf("delete namespace %s: %s %s: %d %s %v", ns, req.method, req.path, status, statusMessage(body), err)
			return
		}
	}
}

// do sends one request with the admin's token and returns the status and body.
func (s *apiServer) do(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, err = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes(), err
}

// statusMessage is the message of the Status the server answers an error
// with, or the body itself when it is not one.
func statusMessage(body []byte) string {
	var status struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Message != "" {
		return status.Message
	}
	return string(bytes.TrimSpace(body))
}

// splitYAML splits a YAML stream at its "---" lines.
func splitYAML(stream []byte) [][]byte {
	var docs [][]byte
	var doc []byte
	for _, line := range bytes.SplitAfter(stream, []byte("\n")) {
		if string(bytes.TrimRight(line, " \t\r\n")) == "---" {
			docs, doc = append(docs, doc), nil
			continue
		}
		doc = append(doc, line...)
	}
	return append(docs, doc)
}

// process is a program the harness runs; its output goes to the log of a
// test that fails.
type process struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{} // closed when it has exited
}

// startProcess starts bin, and stops it when the test ends: SIGTERM, as a
// cluster stops it, then SIGKILL if it has not exited within ten seconds.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(bin), cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Logf("%s still running 10s after SIGTERM: killed", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// waitReady polls ready until it holds, failing the test if p exits first or
// two minutes pass.
func waitReady(t *testing.T, p *process, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !ready() {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready: %v", p.name, p.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 2m", p.name)
		}
	}
}

// buildTool builds (or finds in the cache) the program of tools/NAME and
// returns its path.
func buildTool(t *testing.T, name string) string {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := exec.Command("bash", "../../scripts/build-tool.sh", name)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build-tool.sh %s: %v\n%s", name, err, stderr.String())
	}
	return strings.TrimSpace(out.String())
}

// freeAddr returns a loopback address with a port free at the time of asking.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeKey writes a new ECDSA key to path and returns it.
func writeKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	return key
}

// selfSignedCert is a serving certificate for 127.0.0.1, signed by its own
// key: the client trusts exactly it.
func selfSignedCert(t *testing.T, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The objects TestAPIServerRefusesBadObjects starts from: a Deployment and
// its Service, as a chart renders them, that a cluster accepts.
const validDeployment = `# Source: test/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: nginx:1.29
          ports:
            - containerPort: 80
`

const validService = `# Source: test/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
`

// TestAPIServerRefusesBadObjects shows that the check means something: the
// server accepts a valid Deployment and Service, and refuses a broken
// Deployment or a kind it does not serve, with one error that names the
// object and the problem.
func TestAPIServerRefusesBadObjects(t *testing.T) {
	s := startAPIServer(t)
	if errs := s.applyDryRun(t, []byte("---\n"+validDeployment+"---\n"+validService)); len(errs) > 0 {
		t.Fatalf("valid Deployment and Service refused: %v", errs)
	}

	for _, tc := range []struct {
		name, from, to string // the change to the valid Deployment
		want           string // in the one error
	}{
		{"unknown field", "          ports:", "          port:", `.port: field not declared in schema`},
		{"wrong type", "replicas: 1", `replicas: "two"`, ".spec.replicas: expected numeric"},
		{"no selector", "  selector:\n    matchLabels:\n      app: web\n", "", "spec.selector: Required value"},
		{"kind not served", "apiVersion: apps/v1\nkind: Deployment", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor",
			`no kind "ServiceMonitor" in "monitoring.coreos.com/v1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(validDeployment, tc.from, tc.to, 1)
			if broken == validDeployment {
				t.Fatalf("%q is not in the valid Deployment", tc.from)
			}
			// With the valid Service, to show that only the broken object is reported.
			errs := s.applyDryRun(t, []byte(validService+"---\n"+broken))
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) || !strings.Contains(errs[0].Error(), " web: ") {
				t.Fatalf("got errors %v, want one naming web and containing %q", errs, tc.want)
			}
			t.Logf("refused: %v", errs[0])
		})
	}
}
