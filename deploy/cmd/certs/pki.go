package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// validFor is the lifetime of a new certificate: long enough for a workshop
// season, short enough that nobody mistakes these for lasting ones.
const validFor = 365 * 24 * time.Hour

// issuer is the CA, loaded or made.
type issuer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// leaf is what a certificate must say to be kept.
type leaf struct {
	file  string // ca.crt's sibling: <file>.crt and <file>.key
	cn    string
	dns   []string
	ips   []net.IP
	usage x509.ExtKeyUsage
}

// serverLeaf answers to its compose service name and to the local machine,
// so the same file serves the stack and a native run.
func serverLeaf(file, host string) leaf {
	return leaf{
		file: file, cn: host,
		dns:   []string{host, "localhost"},
		ips:   []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		usage: x509.ExtKeyUsageServerAuth,
	}
}

// clientLeaf names a client: its certificate's subject is who it is.
func clientLeaf(name string) leaf {
	return leaf{file: name, cn: name, usage: x509.ExtKeyUsageClientAuth}
}

// ensureCA keeps ca.crt and ca.key while they are a CA pair with time left,
// and makes a new CA otherwise (every leaf then follows, as none is signed by
// it).
func ensureCA(dir string, out io.Writer, now time.Time) (*issuer, error) {
	crtPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	cert, key, err := loadPair(crtPath, keyPath)
	if err == nil {
		err = checkCA(cert, now)
	}
	if err == nil {
		report(out, crtPath, true, nil)
		report(out, keyPath, true, nil)
		return &issuer{cert: cert, key: key}, nil
	}
	why := err

	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"ordertrace"}, CommonName: "ordertrace local CA"},
		NotBefore:             now.Add(-time.Hour), // a container's clock may lag the host's
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	if err := writePair(crtPath, keyPath, der, key); err != nil {
		return nil, err
	}
	report(out, crtPath, false, why)
	report(out, keyPath, false, why)
	return &issuer{cert: cert, key: key}, nil
}

func checkCA(cert *x509.Certificate, now time.Time) error {
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("not a CA certificate")
	}
	return checkTime(cert, now)
}

// checkTime accepts a certificate already valid and valid for renewBefore more.
func checkTime(cert *x509.Certificate, now time.Time) error {
	switch left := cert.NotAfter.Sub(now); {
	case now.Before(cert.NotBefore):
		return fmt.Errorf("not valid before %s", cert.NotBefore.Format(time.DateOnly))
	case left < renewBefore:
		return fmt.Errorf("expires %s, less than %d days from now", cert.NotAfter.Format(time.DateOnly), renewBefore/(24*time.Hour))
	}
	return nil
}

// ensureLeaf keeps a leaf's pair while the CA signed it, it has time left,
// and it names exactly what l says; otherwise it issues a new one.
func ensureLeaf(dir string, out io.Writer, now time.Time, ca *issuer, l leaf) error {
	crtPath, keyPath := filepath.Join(dir, l.file+".crt"), filepath.Join(dir, l.file+".key")
	cert, _, err := loadPair(crtPath, keyPath)
	if err == nil {
		err = checkLeaf(cert, ca, l, now)
	}
	if err == nil {
		report(out, crtPath, true, nil)
		report(out, keyPath, true, nil)
		return nil
	}
	why := err

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	notAfter := now.Add(validFor)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter // a leaf never outlives its CA
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"ordertrace"}, CommonName: l.cn},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{l.usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return err
	}
	if err := writePair(crtPath, keyPath, der, key); err != nil {
		return err
	}
	report(out, crtPath, false, why)
	report(out, keyPath, false, why)
	return nil
}

func checkLeaf(cert *x509.Certificate, ca *issuer, l leaf, now time.Time) error {
	if err := cert.CheckSignatureFrom(ca.cert); err != nil {
		return errors.New("not signed by ca.crt")
	}
	if err := checkTime(cert, now); err != nil {
		return err
	}
	if cert.Subject.CommonName != l.cn || !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{l.usage}) {
		return fmt.Errorf("not the %s certificate it should be", l.cn)
	}
	sameIPs := slices.EqualFunc(cert.IPAddresses, l.ips, func(a, b net.IP) bool { return a.Equal(b) })
	if !slices.Equal(cert.DNSNames, l.dns) || !sameIPs {
		return fmt.Errorf("names %v %v, want %v %v", cert.DNSNames, cert.IPAddresses, l.dns, l.ips)
	}
	return nil
}

// loadPair reads a certificate and its key, and checks that they belong
// together.
func loadPair(crtPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := readPEM(crtPath, "CERTIFICATE", x509.ParseCertificate)
	if err != nil {
		return nil, nil, err
	}
	parsed, err := readPEM(keyPath, "PRIVATE KEY", x509.ParsePKCS8PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyPath)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil || !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return nil, nil, fmt.Errorf("%s does not belong to %s", keyPath, crtPath)
	}
	return cert, key, nil
}

// readPEM parses the one PEM block of a file. Its errors never quote the
// file: it may be a key.
func readPEM[T any](path, kind string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	raw, err := os.ReadFile(path)
	if err != nil {
		return zero, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != kind {
		return zero, fmt.Errorf("%s: no %s block", path, kind)
	}
	v, err := parse(block.Bytes)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// writePair writes a certificate (0644: public) and its key (0600).
func writePair(crtPath, keyPath string, der []byte, key crypto.Signer) error {
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return err
	}
	return writeFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile replaces path in one rename, so a reader never sees half a file.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename; cleans up after a failure
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// serial is a random 128-bit serial number: unique without a counter to keep.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}
