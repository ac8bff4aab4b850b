package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// generate runs the command's logic into dir at time now and returns what
// it printed.
func generate(t *testing.T, dir string, now time.Time) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(dir, &out, now); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// snapshot returns every file of dir and its content.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	cert, err := readPEM(path, "CERTIFICATE", x509.ParseCertificate)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// The contract other parts of the suite build on: these files, these modes.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	// Keys a container reads are its group's too (group_add); the CA's key
	// and the credentials are the owner's alone.
	want := map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "collector.htpasswd": 0o640}
	for _, s := range servers {
		want[s.file+".crt"], want[s.file+".key"] = 0o644, 0o640
	}
	for _, c := range clients {
		want[c+".crt"], want[c+".key"], want[c+".headers"], want[c+".env"] = 0o644, 0o640, 0o600, 0o600
	}
	// The Helm chart's README makes the collector agent's Secret from these.
	for _, name := range []string{"collector-agent.crt", "collector-agent.key", "collector-agent.headers"} {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is not written: the chart's secure setup needs it", name)
		}
	}
	got := snapshot(t, dir)
	if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("files = %v, want %v", names, slices.Sorted(maps.Keys(want)))
	}
	for name, mode := range want {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s mode = %v, want %v", name, info.Mode().Perm(), mode)
		}
	}
}

// Each chain verifies for its own use and names, and for no other use.
func TestChainsVerify(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "ca.crt")))
	verify := func(cert *x509.Certificate, name string, usage x509.ExtKeyUsage) error {
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	for _, s := range servers {
		cert := readCert(t, filepath.Join(dir, s.file+".crt"))
		for _, name := range []string{s.host, "localhost", "127.0.0.1", "::1"} {
			if err := verify(cert, name, x509.ExtKeyUsageServerAuth); err != nil {
				t.Errorf("%s.crt as the server %s: %v", s.file, name, err)
			}
		}
		if verify(cert, "example.com", x509.ExtKeyUsageServerAuth) == nil {
			t.Errorf("%s.crt verifies for example.com", s.file)
		}
		if verify(cert, "", x509.ExtKeyUsageClientAuth) == nil {
			t.Errorf("%s.crt verifies as a client certificate", s.file)
		}
	}
	for _, c := range clients {
		cert := readCert(t, filepath.Join(dir, c+".crt"))
		if err := verify(cert, "", x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("%s.crt as a client: %v", c, err)
		}
		if cert.Subject.CommonName != c {
			t.Errorf("%s.crt CN = %q", c, cert.Subject.CommonName)
		}
		if verify(cert, "", x509.ExtKeyUsageServerAuth) == nil {
			t.Errorf("%s.crt verifies as a server certificate", c)
		}
	}
}

// A real mutual-TLS handshake, as the collector and a service make it.
func TestMutualTLSHandshake(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	pair := func(name string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(dir, "ca.crt")))

	// Over TCP, not net.Pipe: a pipe blocks each write until the other side
	// reads, and the closing alerts would wait for a reader that has gone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clientConn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	serverConn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server := tls.Server(serverConn, &tls.Config{
		Certificates: []tls.Certificate{pair("collector")},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	client := tls.Client(clientConn, &tls.Config{
		Certificates: []tls.Certificate{pair("orders")}, RootCAs: pool, ServerName: "otel-collector",
	})
	defer server.Close()
	defer client.Close()
	serverErr := make(chan error, 1)
	go func() { serverErr <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-serverErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if peer := server.ConnectionState().PeerCertificates[0].Subject.CommonName; peer != "orders" {
		t.Errorf("the server sees the client as %q, want orders", peer)
	}
}

// Each .headers file is what the SDK's OTEL_EXPORTER_OTLP_HEADERS takes, and
// collector.htpasswd accepts its credential (bcrypt, which the collector's
// htpasswd reader knows).
func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	hashes := readHtpasswd(filepath.Join(dir, "collector.htpasswd"))
	if len(hashes) != len(clients) {
		t.Errorf("collector.htpasswd has %d users, want %d", len(hashes), len(clients))
	}
	passwords := map[string]bool{}
	for _, c := range clients {
		raw, err := os.ReadFile(filepath.Join(dir, c+".headers"))
		if err != nil {
			t.Fatal(err)
		}
		encoded, ok := strings.CutPrefix(string(raw), "Authorization=Basic%20")
		if !ok || strings.ContainsAny(encoded, ", \n") {
			t.Fatalf("%s.headers is not one Authorization header the SDK reads whole", c)
		}
		decoded, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			t.Fatalf("%s.headers: %v", c, err)
		}
		user, password, _ := strings.Cut(string(decoded), ":")
		if user != c || len(password) < 32 {
			t.Errorf("%s.headers names user %q with a %d-character password", c, user, len(password))
		}
		if !strings.HasPrefix(hashes[c], "$2a$") {
			t.Errorf("%s's htpasswd entry is not bcrypt", c)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hashes[c]), []byte(password)); err != nil {
			t.Errorf("collector.htpasswd refuses %s: %v", c, err)
		}
		passwords[password] = true
	}
	if len(passwords) != len(clients) {
		t.Error("two clients share a password")
	}
}

// A second run changes nothing, byte for byte, and says so.
func TestRerunKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	before := snapshot(t, dir)
	out := generate(t, dir, time.Now())
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "kept ") {
			t.Errorf("second run: %s", line)
		}
	}
	if got := strings.Count(out, "\n"); got != len(before) {
		t.Errorf("second run printed %d lines for %d files", got, len(before))
	}
	after := snapshot(t, dir)
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed", name)
		}
	}
}

// What is no longer good is replaced, and only that: an expired leaf, a
// leaf of another CA, a leaf with other names, a credential the htpasswd
// does not accept, and a CA close to its end (which takes every leaf along).
func TestReplaces(t *testing.T) {
	dir := t.TempDir()
	generate(t, dir, time.Now())
	ca, err := ensureCA(dir, io.Discard, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// tempo: signed by the right CA, but expired.
	issue(t, dir, ca, "tempo", time.Now().Add(-400*24*time.Hour), time.Now().Add(-24*time.Hour), []string{"tempo", "localhost"})
	// loki: a pair from another CA.
	foreign := t.TempDir()
	generate(t, foreign, time.Now())
	for _, ext := range []string{".crt", ".key"} {
		b, _ := os.ReadFile(filepath.Join(foreign, "loki"+ext))
		if err := os.WriteFile(filepath.Join(dir, "loki"+ext), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// prometheus: good for a year, but without its compose name.
	issue(t, dir, ca, "prometheus", time.Now(), time.Now().Add(300*24*time.Hour), []string{"localhost"})
	// orders: a credential collector.htpasswd does not know.
	if err := os.WriteFile(filepath.Join(dir, "orders.headers"), []byte(headerValue("orders", "not-the-password")), 0o600); err != nil {
		t.Fatal(err)
	}

	before := snapshot(t, dir)
	out := generate(t, dir, time.Now())
	t.Logf("the second run:\n%s", out)
	replaced := map[string]bool{
		"tempo.crt": true, "tempo.key": true, "loki.crt": true, "loki.key": true,
		"prometheus.crt": true, "prometheus.key": true, "orders.headers": true, "orders.env": true, "collector.htpasswd": true,
	}
	after := snapshot(t, dir)
	for name, b := range before {
		changed := !bytes.Equal(after[name], b)
		if changed != replaced[name] {
			t.Errorf("%s changed = %v, want %v", name, changed, replaced[name])
		}
		verb := "kept"
		if replaced[name] {
			verb = "created"
		}
		if !hasLine(out, verb, name) {
			t.Errorf("the run did not report %s %s", verb, name)
		}
	}
	// The other credentials stayed in the rewritten htpasswd.
	oldFile := filepath.Join(t.TempDir(), "old.htpasswd")
	if err := os.WriteFile(oldFile, before["collector.htpasswd"], 0o600); err != nil {
		t.Fatal(err)
	}
	hashes, oldHashes := readHtpasswd(filepath.Join(dir, "collector.htpasswd")), readHtpasswd(oldFile)
	if hashes["gateway"] != oldHashes["gateway"] || hashes["orders"] == oldHashes["orders"] {
		t.Error("collector.htpasswd: want gateway's line kept and orders' replaced")
	}

	// A CA with 20 days left is replaced, and every leaf with it.
	old := t.TempDir()
	generate(t, old, time.Now().Add(-345*24*time.Hour))
	out = generate(t, old, time.Now())
	for _, s := range servers {
		if !hasLine(out, "created", s.file+".crt") {
			t.Errorf("after the CA was replaced, %s.crt was not", s.file)
		}
	}
	if !hasLine(out, "created", "ca.crt") || !hasLine(out, "kept", "gateway.headers") {
		t.Errorf("a CA near its end: want ca.crt created and the credentials kept, got\n%s", out)
	}
}

// hasLine reports whether out has the line "<verb> .../<name>".
func hasLine(out, verb, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == verb && filepath.Base(f[1]) == name {
			return true
		}
	}
	return false
}

// issue writes a server pair for name, signed by ca, with the given
// lifetime and DNS names.
func issue(t *testing.T, dir string, ca *issuer, name string, notBefore, notAfter time.Time, dns []string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		DNSNames: dns, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), der, key); err != nil {
		t.Fatal(err)
	}
}
