// Package scenario switches the workshop's failure scenarios at runtime,
// without a restart. The switches are feature flags in one JSON file
// (SCENARIOS_FILE, flagd's format) that every service reads through the
// OpenFeature SDK, the way an application reads any feature flag; `make
// scenario NAME=... ON=1` edits the file, and `make chaos` (chaos.go) switches
// them at random for a class. docs/workshop/ has a lab for each.
package scenario

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

// The scenarios, each a flag of the file. A scenario is on when its flag's
// defaultVariant is "on"; the "on" value tunes it.
const (
	// PaymentFailures: the payment provider declines this share of charges.
	PaymentFailures = "payment-failures"
	// SlowInventory: the inventory check of this tenant (X-Tenant-ID) takes
	// SlowInventoryDelay.
	SlowInventory = "slow-inventory"
	// PricingNPlusOne: pricing reads the catalogue one product at a time.
	PricingNPlusOne = "pricing-n-plus-one"
	// CacheBypass: orders never reads the Redis cache.
	CacheBypass = "cache-bypass"
	// OrderLock: a process-wide lock around the payment serialises orders.
	OrderLock = "order-lock"
	// SlowFulfillment: fulfillment takes this many milliseconds per message.
	SlowFulfillment = "slow-fulfillment"
	// PoisonMessages: this share of order events is published with a body
	// fulfillment cannot apply.
	PoisonMessages = "poison-messages"
	// PaymentTimeouts: the payment provider hangs past orders' timeout, and
	// orders retries.
	PaymentTimeouts = "payment-timeouts"
	// SpanNamePerOrder: orders names its order.process span after the order,
	// one span name per order (a high-cardinality mistake).
	SpanNamePerOrder = "span-name-per-order"
	// PropagationOff: the relay publishes without trace headers.
	PropagationOff = "propagation-off"
)

// SlowInventoryDelay is how long the slow-inventory tenant's inventory check
// takes: orders waits it, the incident's signature looks for it.
const SlowInventoryDelay = 600 * time.Millisecond

// Defaults is the scenarios file with every scenario off: the contents of
// deploy/scenarios/defaults.json (tracked). The live file the services watch,
// deploy/scenarios/scenarios.json, is untracked: switching a scenario never
// changes a tracked file, and a missing live file means every scenario off.
func Defaults() File {
	flag := func(off, on any, about string) Flag {
		return Flag{State: "ENABLED", Variants: map[string]any{"off": off, "on": on}, DefaultVariant: "off", Description: about}
	}
	return File{
		Flags: map[string]Flag{
			PaymentFailures:  flag(0.0, 0.3, "share of charges the payment provider declines"),
			SlowInventory:    flag("", "globex", "tenant whose inventory check takes 600 ms"),
			PricingNPlusOne:  flag(false, true, "pricing reads the catalogue one product at a time"),
			CacheBypass:      flag(false, true, "orders skips the Redis cache and reads PostgreSQL"),
			OrderLock:        flag(false, true, "one lock around the payment serialises every order"),
			SlowFulfillment:  flag(0.0, 300.0, "milliseconds fulfillment spends on each message"),
			PoisonMessages:   flag(0.0, 0.2, "share of order events published with a body fulfillment rejects"),
			PaymentTimeouts:  flag(false, true, "the payment provider hangs past PAYMENT_TIMEOUT; orders retries"),
			SpanNamePerOrder: flag(false, true, "order.process spans named after each order"),
			PropagationOff:   flag(false, true, "the relay publishes without traceparent and baggage"),
		},
	}
}

// Config is where a service finds the scenarios file: SCENARIOS_FILE (none:
// every scenario off) and how often it looks for changes.
type Config struct {
	File string        `env:"SCENARIOS_FILE"`
	Poll time.Duration `env:"SCENARIOS_POLL, default=1s"`
}

// Switches reads the scenarios. Its zero value, and one without a file,
// reads every scenario as off.
type Switches struct {
	client *openfeature.Client
}

// Start installs the file provider as the process's OpenFeature provider and
// returns the switches and a stop function. Without a path, every scenario
// stays off.
func Start(cfg Config, log *slog.Logger) (Switches, func()) {
	if cfg.File == "" {
		return Switches{}, func() {}
	}
	// Init of the file provider never fails: a missing file leaves
	// everything off until it appears.
	_ = openfeature.SetProviderAndWait(NewFileProvider(cfg.File, max(cfg.Poll, 10*time.Millisecond), log))
	return Switches{client: openfeature.NewClient("ordertrace")}, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = openfeature.ShutdownWithContext(ctx)
	}
}

var noContext openfeature.EvaluationContext

// On reports whether a boolean scenario is on.
func (s Switches) On(ctx context.Context, name string) bool {
	if s.client == nil {
		return false
	}
	v, _ := s.client.BooleanValue(ctx, name, false, noContext)
	return v
}

// Number is a numeric scenario's value: 0 when off.
func (s Switches) Number(ctx context.Context, name string) float64 {
	if s.client == nil {
		return 0
	}
	v, _ := s.client.FloatValue(ctx, name, 0, noContext)
	return v
}

// Text is a string scenario's value: "" when off.
func (s Switches) Text(ctx context.Context, name string) string {
	if s.client == nil {
		return ""
	}
	v, _ := s.client.StringValue(ctx, name, "", noContext)
	return v
}

// Loaded is every scenario's value as this process reads it now, each by the
// type of its "on" value: false, 0 or "" when off.
func (s Switches) Loaded(ctx context.Context) map[string]any {
	loaded := map[string]any{}
	for name, f := range Defaults().Flags {
		switch f.Variants["on"].(type) {
		case bool:
			loaded[name] = s.On(ctx, name)
		case float64:
			loaded[name] = s.Number(ctx, name)
		case string:
			loaded[name] = s.Text(ctx, name)
		}
	}
	return loaded
}

// Handler answers GET /scenarios on a service's own port with Loaded: after
// a switch, a test (or an instructor) sees when this process has taken it.
func (s Switches) Handler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Loaded(r.Context()))
	}
}
