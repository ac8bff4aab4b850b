// Command healthcheck is the probe of the stack's containers whose images
// have no shell, curl or wget (the services, the collector, Tempo, Loki,
// Jaeger): it GETs a URL and exits 0 on a 2xx answer, 1 otherwise. With
// -cacert, an https URL is trusted through that CA only (the secure
// profile's backends, whose certificates the suite's own CA signs).
//
//	healthcheck http://127.0.0.1:8080/readyz
//	healthcheck -cacert /etc/tempo/certs/ca.crt https://127.0.0.1:3200/ready
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	cacert := flag.String("cacert", "", "PEM file of the CA that signs the server's certificate (https only)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck [-cacert FILE] URL")
		os.Exit(2)
	}
	if err := check(flag.Arg(0), *cacert); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func check(url, cacert string) error {
	client := &http.Client{Timeout: 3 * time.Second}
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return errors.New(cacert + " holds no PEM certificate")
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
