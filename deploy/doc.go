// Package deploy holds no code: its tests prove the files under deploy/
// (compose file, collector, Tempo, Loki, Prometheus and Grafana
// configuration) with real programs, since no Docker engine runs where the
// suite is built.
package deploy
