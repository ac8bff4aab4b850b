// Command certs writes what the secure telemetry path needs (make certs;
// docs/workshop/19-secure-telemetry.md): a local CA, a server certificate for
// the collector and each backend, a client certificate for each client of the
// collector, and each client's credential for the collector's basicauth
// extension.
//
//	go run ./deploy/cmd/certs -dir deploy/certs
//
// Run again, it keeps every file that is still good, so running services and
// the collector go on trusting each other; it prints one line per file.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A file is replaced once it has less than renewBefore left to live.
const renewBefore = 30 * 24 * time.Hour

// servers are the TLS servers of the stack: the file name, and the compose
// service name it answers to (besides localhost).
var servers = []struct{ file, host string }{
	{"collector", "otel-collector"},
	{"tempo", "tempo"},
	{"loki", "loki"},
	{"prometheus", "prometheus"},
	{"jaeger", "jaeger"},
}

// clients are what exports to a collector: the services, and the Helm chart's
// collector agent, which forwards to the gateway tier (deploy/chart/README.md).
// Each gets a client certificate and a basicauth credential under its own
// name.
var clients = []string{"gateway", "orders", "fulfillment", "collector-agent"}

func main() {
	dir := flag.String("dir", "deploy/certs", "the directory to write the certificates and credentials to")
	flag.Parse()
	if err := run(*dir, os.Stdout, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
}

// run brings dir up to date at time now, reporting each file to out.
func run(dir string, out io.Writer, now time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := ensureCA(dir, out, now)
	if err != nil {
		return err
	}
	for _, s := range servers {
		if err := ensureLeaf(dir, out, now, ca, serverLeaf(s.file, s.host)); err != nil {
			return err
		}
	}
	for _, name := range clients {
		if err := ensureLeaf(dir, out, now, ca, clientLeaf(name)); err != nil {
			return err
		}
	}
	if err := ensureCredentials(dir, out, clients); err != nil {
		return err
	}
	// The stack's programs run as their images' users, which join the group
	// of these files (compose's group_add): each leaf's key and the
	// collector's htpasswd are readable by that group. The CA's key and the
	// credentials, which no container reads as files, stay the owner's.
	shared := []string{"collector.htpasswd"}
	for _, s := range servers {
		shared = append(shared, s.file+".key")
	}
	for _, name := range clients {
		shared = append(shared, name+".key")
	}
	for _, f := range shared {
		if err := os.Chmod(filepath.Join(dir, f), 0o640); err != nil {
			return err
		}
	}
	return nil
}

// report prints one file's fate: kept, or created (and why, when a file was
// there and is replaced).
func report(out io.Writer, path string, kept bool, why error) {
	switch {
	case kept:
		fmt.Fprintf(out, "kept     %s\n", path)
	case why != nil && !os.IsNotExist(why):
		fmt.Fprintf(out, "created  %s (replaced: %v)\n", path, why)
	default:
		fmt.Fprintf(out, "created  %s\n", path)
	}
}
