//go:build !bench

package e2e

// The services run with the race detector in the tests, as the unit tests do.
var buildFlags = []string{"-race"}
