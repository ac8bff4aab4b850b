// Package signature says, once, what each workshop incident leaves in its
// traces: e2e/scenarios_test.go asserts it against the real services, and
// the grader (cmd/grade) compares a student's query with it. A signature
// reads a small neutral span type, which each side fills from what it has:
// OTLP from the tests' receiver, Jaeger's or Tempo's JSON in the grader.
package signature

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

// Kind is a span's kind, lower case as Jaeger writes it.
type Kind string

// The span kinds.
const (
	Server   Kind = "server"
	Client   Kind = "client"
	Internal Kind = "internal"
	Producer Kind = "producer"
	Consumer Kind = "consumer"
)

// Span is one span, as much of it as a signature reads.
type Span struct {
	TraceID  string
	SpanID   string
	ParentID string
	Service  string
	Name     string
	Kind     Kind
	Error    bool // its status is ERROR
	Attrs    map[string]string
	Start    time.Time
	End      time.Time
}

// Duration is how long the span took.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Trace is the spans of one trace.
type Trace []Span

// ID is the trace's ID ("" for no span).
func (t Trace) ID() string {
	if len(t) == 0 {
		return ""
	}
	return t[0].TraceID
}

// Named returns the spans of service with this name.
func (t Trace) Named(service, name string) []Span {
	var out []Span
	for _, s := range t {
		if s.Service == service && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// Children returns the spans whose parent is p.
func (t Trace) Children(p Span) []Span {
	var out []Span
	for _, s := range t {
		if s.ParentID == p.SpanID && s.SpanID != p.SpanID {
			out = append(out, s)
		}
	}
	return out
}

// one returns the only span of service with this name, if there is exactly one.
func (t Trace) one(service, name string) (Span, bool) {
	found := t.Named(service, name)
	if len(found) != 1 {
		return Span{}, false
	}
	return found[0], true
}

// The names the signatures look for: the suite's spans as exported today.
const (
	chargeSpan    = "order.charge_payment"
	processSpan   = "order.process"
	inventorySpan = "order.validate_inventory"
	pricingSpan   = "order.calculate_pricing"
	publishSpan   = "create orders:order.created"
	consumeSpan   = "process orders:order.created:fulfillment.order-created"
)

// Check is one condition of a signature, and what to tell a student whose
// query returns traces that fail it.
type Check struct {
	Says  string // what a trace of the incident has, as "traces without <Says>"
	Hint  string // how to narrow a query that returns traces without it
	holds func(t Trace, window []Trace) bool
}

// Signature is one incident's mark on its traces: a trace shows the incident
// when every check holds.
type Signature struct {
	Lab      int
	Scenario string
	Title    string
	Question string // what the student's query must isolate, without the answer
	Checks   []Check
	Missed   string // the hint for a query that leaves some of them out
}

// Match reports whether t, on its own, shows the incident. A signature read
// across traces (order-lock) needs Matching and the window.
func (s Signature) Match(t Trace) bool { return s.matchIn(t, []Trace{t}) }

func (s Signature) matchIn(t Trace, window []Trace) bool {
	for _, c := range s.Checks {
		if !c.holds(t, window) {
			return false
		}
	}
	return true
}

// Matching returns the traces of window that show the incident.
func (s Signature) Matching(window []Trace) []Trace {
	var out []Trace
	for _, t := range window {
		if s.matchIn(t, window) {
			out = append(out, t)
		}
	}
	return out
}

// FirstFailed returns the first check t fails within window, or nil.
func (s Signature) FirstFailed(t Trace, window []Trace) *Check {
	for i, c := range s.Checks {
		if !c.holds(t, window) {
			return &s.Checks[i]
		}
	}
	return nil
}

// For returns the signature of lab n (10 to 18).
func For(lab int) (Signature, bool) {
	i := slices.IndexFunc(All(), func(s Signature) bool { return s.Lab == lab })
	if i < 0 {
		return Signature{}, false
	}
	return All()[i], true
}

// All returns the incidents' signatures, lab 10 to 18.
func All() []Signature {
	return []Signature{
		{
			Lab: 10, Scenario: scenario.PaymentFailures, Title: "Customers see payment errors",
			Question: "Which traces hold the payment errors customers report, and only those?",
			Checks: []Check{
				{Says: "a payment step", Hint: "the failure is in one step of the order: add a condition on the span's name",
					holds: func(t Trace, _ []Trace) bool { return len(t.Named("orders", chargeSpan)) > 0 }},
				{Says: "a failed payment", Hint: "add a condition on the span's status",
					holds: func(t Trace, _ []Trace) bool { return slices.ContainsFunc(t.Named("orders", chargeSpan), Span.failed) }},
				{Says: "a declined payment", Hint: "those payments failed for another reason: which attribute of a failed span says why?",
					holds: func(t Trace, _ []Trace) bool {
						return slices.ContainsFunc(t.Named("orders", chargeSpan), DeclinedCharge)
					}},
			},
			Missed: "declined payments come from every tenant and customer: keep only the conditions on the failing span",
		},
		{
			Lab: 11, Scenario: scenario.SlowInventory, Title: "One customer says the shop is slow",
			Question: "Which traces are the slow orders the customer complains about, and only those?",
			Checks: []Check{
				{Says: "a slow step", Hint: "most of these orders were fast: add a condition on the duration",
					holds: func(t Trace, _ []Trace) bool { return SlowInventoryCheck(t) }},
				{Says: "the complaining customer", Hint: "the slow orders are one tenant's: add a condition on the tenant",
					holds: func(t Trace, _ []Trace) bool { return TenantOf(t) == SlowTenant() }},
			},
			Missed: "one step is slow by about half a second, not by seconds: is your duration threshold too high, or on the wrong span?",
		},
		{
			Lab: 12, Scenario: scenario.PricingNPlusOne, Title: "The database is busier than it should be",
			Question: "Which traces price an order with a query per product, and only those?",
			Checks: []Check{
				{Says: "a query per product under pricing", Hint: "an order may read one product row; the incident reads one per product: look for many queries under one step, not for one",
					holds: func(t Trace, _ []Trace) bool { return PricingQueries(t) > 1 }},
			},
			Missed: "look under the pricing step of every order, not only the slow ones",
		},
		{
			Lab: 13, Scenario: scenario.CacheBypass, Title: "Database load doubled after a release",
			Question: "Which traces look up products without the cache, and only those?",
			Checks: []Check{
				{Says: "lookups that skip Redis", Hint: "these orders did ask Redis: look at what is missing under the lookups, or at their cache attributes",
					holds: func(t Trace, _ []Trace) bool { r, _, ok := CacheLookups(t); return ok && r == 0 }},
				{Says: "lookups with no cache hit", Hint: "add a condition on the lookups' cache hits",
					holds: func(t Trace, _ []Trace) bool { _, hits, ok := CacheLookups(t); return ok && hits == 0 }},
			},
			Missed: "every order's lookups skip the cache while it happens: a condition on one lookup's attributes is enough",
		},
		{
			Lab: 14, Scenario: scenario.OrderLock, Title: "Fast alone, slow together",
			Question: "Which traces' payments waited for another order's payment, and only those?",
			Checks: []Check{
				{Says: "a payment that waited for another order's", Hint: "these payments took their usual time: compare the payment step's duration with the fastest ones",
					holds: Waited},
			},
			Missed: "every payment that overlapped another one waited: is your duration threshold too high?",
		},
		{
			Lab: 15, Scenario: scenario.SlowFulfillment, Title: "Orders take minutes to be fulfilled",
			Question: "Which traces spend time in fulfillment outside any child span, and only those?",
			Checks: []Check{
				{Says: "a message handled for a long time outside any child span", Hint: "a long wait before fulfillment starts is queueing; look inside the consuming span for time no child covers",
					holds: func(t Trace, _ []Trace) bool { return UninstrumentedConsume(t) >= SlowFulfillmentAtLeast }},
			},
			Missed: "every message is slow to handle, not only the ones that queued: look at the consuming span's own duration",
		},
		{
			Lab: 16, Scenario: scenario.PoisonMessages, Title: "Some orders are never fulfilled",
			Question: "Which traces are the orders whose message fulfillment could not read, and only those?",
			Checks: []Check{
				{Says: "a failed message", Hint: "add a condition on the consuming span's status",
					holds: func(t Trace, _ []Trace) bool {
						return slices.ContainsFunc(t.Named("fulfillment", consumeSpan), Span.failed)
					}},
				{Says: "a dead letter", Hint: "those messages failed but were not dead-lettered: which attribute says what became of the message, or why it failed?",
					holds: func(t Trace, _ []Trace) bool { return DeadLettered(t) }},
			},
			Missed: "the dead letters come from every tenant: keep only the conditions on the consuming span",
		},
		{
			Lab: 17, Scenario: scenario.PaymentTimeouts, Title: "Every order times out",
			Question: "Which traces retried a payment that timed out, and only those?",
			Checks: []Check{
				{Says: "a failed payment", Hint: "add a condition on the payment span's status",
					holds: func(t Trace, _ []Trace) bool { return slices.ContainsFunc(t.Named("orders", chargeSpan), Span.failed) }},
				{Says: "payments that timed out", Hint: "those payments failed for another reason: which attribute of a failed span says why?",
					holds: func(t Trace, _ []Trace) bool { return TimedOutAttempts(t) >= PaymentAttempts }},
			},
			Missed: "every attempt of those orders timed out: a condition on one attempt is enough",
		},
		{
			Lab: 18, Scenario: scenario.SpanNamePerOrder, Title: "The metrics bill exploded",
			Question: "Which traces carry a span named after one order, and only those?",
			Checks: []Check{
				{Says: "a span named after its order", Hint: "these spans have the usual name: which span names are new?",
					holds: func(t Trace, _ []Trace) bool { return NamedAfterOrder(t) }},
			},
			Missed: "every such span's name starts the same way, then differs per order",
		},
	}
}

func (s Span) failed() bool { return s.Error }

// DeclinedCharge reports whether s is a payment the provider declined
// (payment-failures): ERROR with error.type payment_declined.
func DeclinedCharge(s Span) bool {
	return s.Service == "orders" && s.Name == chargeSpan && s.Error && s.Attrs["error.type"] == "payment_declined"
}

// SlowInventoryAtLeast is how long a slow tenant's inventory check takes at
// least: the scenario's delay, less what a span's clock may read short.
const SlowInventoryAtLeast = scenario.SlowInventoryDelay - 50*time.Millisecond

// SlowTenant is the tenant whose inventory check slow-inventory slows down.
func SlowTenant() string {
	tenant, _ := scenario.Defaults().Flags[scenario.SlowInventory].Variants["on"].(string)
	return tenant
}

// InventoryCheck returns the trace's order.validate_inventory span.
func InventoryCheck(t Trace) (Span, bool) { return t.one("orders", inventorySpan) }

// SlowInventoryCheck reports whether the trace's inventory check took at
// least SlowInventoryAtLeast (slow-inventory).
func SlowInventoryCheck(t Trace) bool {
	s, ok := InventoryCheck(t)
	return ok && s.Duration() >= SlowInventoryAtLeast
}

// TenantOf returns the tenant.id of the trace's order.process span.
func TenantOf(t Trace) string {
	s, _ := t.one("orders", processSpan)
	return s.Attrs["tenant.id"]
}

// PricingQueries counts the SELECT products spans directly under
// order.calculate_pricing (pricing-n-plus-one: the list and one per product;
// otherwise none, or one when the price cache is cold).
func PricingQueries(t Trace) int {
	pricing, ok := t.one("orders", pricingSpan)
	if !ok {
		return 0
	}
	n := 0
	for _, c := range t.Children(pricing) {
		if c.Attrs["db.system.name"] == "postgresql" && c.Name == "SELECT products" {
			n++
		}
	}
	return n
}

// Lookups counts, under the two cache-backed lookups (inventory and
// pricing), their MGET spans and their SQL spans, and returns their
// cache.hits side by side ("22": two hits each; "00": none). ok is false if
// the trace lacks either lookup.
func Lookups(t Trace) (redis, sql int, hits string, ok bool) {
	for _, name := range []string{inventorySpan, pricingSpan} {
		step, found := t.one("orders", name)
		if !found {
			return 0, 0, "", false
		}
		hits += step.Attrs["cache.hits"]
		for _, c := range t.Children(step) {
			switch {
			case c.Name == "MGET":
				redis++
			case c.Attrs["db.system.name"] == "postgresql":
				sql++
			}
		}
	}
	return redis, sql, hits, true
}

// CacheLookups returns the MGET spans under the lookups and the sum of their
// cache.hits (cache-bypass: none and 0).
func CacheLookups(t Trace) (redis, hits int, ok bool) {
	redis, _, _, ok = Lookups(t)
	for _, name := range []string{inventorySpan, pricingSpan} {
		step, _ := t.one("orders", name)
		n, _ := strconv.Atoi(step.Attrs["cache.hits"])
		hits += n
	}
	return redis, hits, ok
}

// Waited reports whether the trace's payment waited for another order's
// (order-lock): another trace's charge span ended while this one was open,
// at least half the fastest charge of the window before this one ended, and
// this one took a fifth longer than the fastest. Concurrent charges that do
// not wait end about when they started apart, each taking the usual time.
func Waited(t Trace, window []Trace) bool {
	charge, ok := t.one("orders", chargeSpan)
	if !ok {
		return false
	}
	var others []Span
	fastest := charge.Duration()
	for _, w := range window {
		c, ok := w.one("orders", chargeSpan)
		if !ok {
			continue
		}
		fastest = min(fastest, c.Duration())
		if w.ID() != t.ID() {
			others = append(others, c)
		}
	}
	if charge.Duration() < fastest*6/5 {
		return false
	}
	return slices.ContainsFunc(others, func(o Span) bool {
		return o.End.After(charge.Start) && o.End.Before(charge.End) && charge.End.Sub(o.End) >= fastest/2
	})
}

// SlowFulfillmentAtLeast is the time a slow-fulfillment message spends in
// its CONSUMER span outside any child (the scenario's 300 ms, less a margin).
const SlowFulfillmentAtLeast = 250 * time.Millisecond

// UninstrumentedConsume returns how long fulfillment's CONSUMER span ran
// with no child span open: un-instrumented work (slow-fulfillment).
func UninstrumentedConsume(t Trace) time.Duration {
	consume, ok := t.one("fulfillment", consumeSpan)
	if !ok {
		return 0
	}
	kids := t.Children(consume)
	slices.SortFunc(kids, func(a, b Span) int { return a.Start.Compare(b.Start) })
	var covered time.Duration
	at := consume.Start
	for _, k := range kids {
		start, end := later(k.Start, at), earlier(k.End, consume.End)
		if end.After(start) {
			covered += end.Sub(start)
			at = end
		}
	}
	return consume.Duration() - covered
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// QueueLag is how long the order's message waited between its PRODUCER span
// and fulfillment's CONSUMER span.
func QueueLag(t Trace) (time.Duration, bool) {
	publish, ok1 := t.one("orders", publishSpan)
	consume, ok2 := t.one("fulfillment", consumeSpan)
	return consume.Start.Sub(publish.End), ok1 && ok2
}

// DeadLettered reports whether fulfillment dead-lettered the order's message
// because it could not read it (poison-messages): its CONSUMER span is ERROR
// with fulfillment.dead_lettered=true and error.type invalid_message.
func DeadLettered(t Trace) bool {
	return slices.ContainsFunc(t.Named("fulfillment", consumeSpan), func(s Span) bool {
		return s.Error && s.Attrs["fulfillment.dead_lettered"] == "true" && s.Attrs["error.type"] == "invalid_message"
	})
}

// PaymentAttempts is how many times orders tries a payment.
const PaymentAttempts = 3

// TimedOutAttempts counts the payment attempts that timed out
// (payment-timeouts: all three), each ERROR with error.type timeout.
func TimedOutAttempts(t Trace) int {
	n := 0
	for _, s := range t.Named("orders", chargeSpan) {
		if s.Error && s.Attrs["error.type"] == "timeout" {
			n++
		}
	}
	return n
}

// NamedAfterOrder reports whether the trace's order.process span carries
// its order's ID in its name (span-name-per-order).
func NamedAfterOrder(t Trace) bool {
	return slices.ContainsFunc(t, func(s Span) bool {
		id := s.Attrs["order.id"]
		return s.Service == "orders" && id != "" && s.Name == processSpan+" "+id
	})
}

// String is a span in one line, for messages.
func (s Span) String() string {
	status := ""
	if s.Error {
		status = " ERROR"
	}
	return fmt.Sprintf("%s %s %q%s %v", s.Service, s.Kind, s.Name, status, s.Duration().Round(time.Millisecond))
}
