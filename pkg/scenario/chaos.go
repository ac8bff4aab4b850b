package scenario

// make chaos: a scheduler that switches scenarios on and off at random, for
// a class that must not wait for one instructor's terminal. A round is a
// pause (EVERY), then one scenario on for a while (HOLD), then off again: at
// most one scenario is on at a time. The same seed gives the same rounds.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The defaults of make chaos, each used when its variable is empty.
const (
	DefaultEvery = "2m-5m" // EVERY: the pause before each scenario goes on
	DefaultHold  = "3m-6m" // HOLD: how long it stays on
)

// ChaosScenarios are the scenarios make chaos picks from when SCENARIOS is
// empty: the incidents' own. span-name-per-order and propagation-off only
// when named: the first leaves a series per order in Prometheus long after
// it is off, and the second breaks the traces every other incident is
// hunted in.
func ChaosScenarios() []string {
	return []string{
		PaymentFailures, SlowInventory, PricingNPlusOne, CacheBypass,
		OrderLock, SlowFulfillment, PoisonMessages, PaymentTimeouts,
	}
}

// ChaosSettings are make chaos's variables as given; an empty one takes its
// default.
type ChaosSettings struct {
	Every     string // "2m-5m", or one duration: "3m"
	Hold      string // as Every
	Scenarios string // comma-separated names
	Seed      string // a whole number; empty: a random one, logged
	Rounds    string // how many rounds; empty or 0: until stopped
}

// Chaos is a checked schedule configuration.
type Chaos struct {
	Every     Bounds
	Hold      Bounds
	Scenarios []string
	Seed      int64
	Rounds    int // 0: until stopped
}

// Bounds is a range of durations; a pause or hold is drawn from it, to the
// millisecond.
type Bounds struct{ Min, Max time.Duration }

func (b Bounds) String() string {
	if b.Min == b.Max {
		return b.Min.String()
	}
	return b.Min.String() + "-" + b.Max.String()
}

// ParseChaos checks every setting and reports each one that is wrong,
// naming its variable (and the command's flag).
func ParseChaos(s ChaosSettings) (Chaos, error) {
	var (
		c    Chaos
		errs []error
		err  error
	)
	if c.Every, err = parseBounds("EVERY", cmp.Or(s.Every, DefaultEvery)); err != nil {
		errs = append(errs, err)
	}
	if c.Hold, err = parseBounds("HOLD", cmp.Or(s.Hold, DefaultHold)); err != nil {
		errs = append(errs, err)
	}
	if c.Scenarios, err = parseScenarios(s.Scenarios); err != nil {
		errs = append(errs, err)
	}
	if s.Seed == "" {
		c.Seed = rand.Int64N(1_000_000) // short enough to type again
	} else if c.Seed, err = strconv.ParseInt(s.Seed, 10, 64); err != nil {
		errs = append(errs, invalid("SEED", s.Seed, "not a whole number"))
	}
	if s.Rounds != "" {
		if c.Rounds, err = strconv.Atoi(s.Rounds); err != nil || c.Rounds < 0 {
			errs = append(errs, invalid("ROUNDS", s.Rounds, "not a whole number of rounds, 0 or more (0: until stopped)"))
		}
	}
	return c, errors.Join(errs...)
}

// invalid names the variable, and the command's flag of the same name.
func invalid(variable, value, why string) error {
	return fmt.Errorf("%s (-%s) %q: %s", variable, strings.ToLower(variable), value, why)
}

func parseBounds(variable, value string) (Bounds, error) {
	lo, hi, isRange := strings.Cut(value, "-")
	if !isRange {
		hi = lo
	}
	shortest, err1 := time.ParseDuration(strings.TrimSpace(lo))
	longest, err2 := time.ParseDuration(strings.TrimSpace(hi))
	switch {
	case err1 != nil || err2 != nil:
		return Bounds{}, invalid(variable, value, "want a duration (3m) or a range (2m-5m)")
	case shortest <= 0:
		return Bounds{}, invalid(variable, value, "the shortest must be more than 0")
	case shortest > longest:
		return Bounds{}, invalid(variable, value, fmt.Sprintf("the shortest (%s) is longer than the longest (%s)", shortest, longest))
	}
	return Bounds{shortest, longest}, nil
}

func parseScenarios(value string) ([]string, error) {
	if value == "" {
		return ChaosScenarios(), nil
	}
	known := Defaults().Flags
	var names []string
	for name := range strings.SplitSeq(value, ",") {
		name = strings.TrimSpace(name)
		if _, ok := known[name]; !ok {
			return nil, invalid("SCENARIOS", value, fmt.Sprintf("no scenario %q; the scenarios are %s", name, strings.Join(slices.Sorted(maps.Keys(known)), ",")))
		}
		if slices.Contains(names, name) {
			return nil, invalid("SCENARIOS", value, fmt.Sprintf("%s is named twice", name))
		}
		names = append(names, name)
	}
	return names, nil
}

// Round is one round of the schedule: a pause, then Scenario on for Hold.
type Round struct {
	N        int // from 1
	Pause    time.Duration
	Scenario string
	Hold     time.Duration
}

// Schedule draws the rounds of a Chaos, one after the other, from its seed.
type Schedule struct {
	c    Chaos
	rng  *rand.Rand
	n    int
	last int // index in c.Scenarios of the last round's scenario
}

// Schedule starts the rounds of c from its seed. PCG is a fixed algorithm:
// the same seed gives the same rounds on every machine and Go release.
func (c Chaos) Schedule() *Schedule {
	return &Schedule{c: c, rng: rand.New(rand.NewPCG(uint64(c.Seed), 0)), last: -1}
}

// Next draws the next round: its pause, then its scenario (never the one of
// the round before, when there is a choice), then its hold.
func (s *Schedule) Next() Round {
	s.n++
	r := Round{N: s.n, Pause: s.draw(s.c.Every)}
	var i int
	switch k := len(s.c.Scenarios); {
	case k == 1:
	case s.last < 0:
		i = s.rng.IntN(k) // the first round may pick any
	default:
		i = s.rng.IntN(k - 1) // any but the last one
		if i >= s.last {
			i++
		}
	}
	s.last = i
	r.Scenario = s.c.Scenarios[i]
	r.Hold = s.draw(s.c.Hold)
	return r
}

func (s *Schedule) draw(b Bounds) time.Duration {
	steps := int64((b.Max - b.Min) / time.Millisecond)
	return b.Min + time.Duration(s.rng.Int64N(steps+1))*time.Millisecond
}

// Plan is the first n rounds of c.
func (c Chaos) Plan(n int) []Round {
	s := c.Schedule()
	rounds := make([]Round, n)
	for i := range rounds {
		rounds[i] = s.Next()
	}
	return rounds
}

// Event is one switch the scheduler made.
type Event struct {
	Time     time.Time
	Round    int // 0: switched off before the first round
	Scenario string
	On       bool
}

// State is "on" or "off".
func (e Event) State() string { return map[bool]string{true: "on", false: "off"}[e.On] }

// Scheduler runs a Chaos against the scenarios file the services watch.
type Scheduler struct {
	Chaos   Chaos
	File    string
	Log     *slog.Logger
	Grafana *Grafana // nil: no annotations

	// sleep waits d, or until ctx ends (an error then); tests replace it
	// to run a schedule without waiting.
	sleep func(ctx context.Context, d time.Duration) error
}

// stopBudget bounds what a stop may still do after a signal: switch every
// scenario off, and annotate it.
const stopBudget = 5 * time.Second

// Run switches every scenario off, runs the rounds until there have been
// Chaos.Rounds or ctx ends (SIGINT, SIGTERM), and switches every scenario off
// again. A stop is no error: Run then returns nil.
func (s *Scheduler) Run(ctx context.Context) error {
	sleep := s.sleep
	if sleep == nil {
		sleep = wait
	}
	c := s.Chaos
	s.Log.InfoContext(ctx, "chaos started", "seed", c.Seed, "every", c.Every.String(), "hold", c.Hold.String(),
		"scenarios", strings.Join(c.Scenarios, ","), "rounds", c.Rounds, "file", s.File, "grafana", s.Grafana.String())
	// At most one scenario on at a time: begin with none.
	err := s.allOff(ctx, 0)
	schedule := c.Schedule()
	for err == nil && (c.Rounds == 0 || schedule.n < c.Rounds) {
		r := schedule.Next()
		if sleep(ctx, r.Pause) != nil {
			break
		}
		if err = s.switchTo(ctx, r, true); err != nil {
			break
		}
		if sleep(ctx, r.Hold) != nil {
			break
		}
		err = s.switchTo(ctx, r, false)
	}
	// Whatever happened, leave every scenario off, even after the signal.
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopBudget)
	defer cancel()
	if offErr := s.allOff(stop, schedule.n); offErr != nil {
		return errors.Join(err, offErr)
	}
	if err != nil {
		return err
	}
	reason := "rounds done"
	if ctx.Err() != nil {
		reason = "stopped by a signal"
	}
	s.Log.InfoContext(ctx, "chaos stopped: every scenario off", "reason", reason, "rounds", schedule.n, "seed", c.Seed)
	return nil
}

func (s *Scheduler) switchTo(ctx context.Context, r Round, on bool) error {
	if err := Set(s.File, r.Scenario, on); err != nil {
		return fmt.Errorf("switch %s: %w", r.Scenario, err)
	}
	s.report(ctx, Event{Time: time.Now(), Round: r.N, Scenario: r.Scenario, On: on}, r.Hold)
	return nil
}

// allOff switches off every scenario of the file that is on (keeping the
// tuned "on" values), and reports each.
func (s *Scheduler) allOff(ctx context.Context, round int) error {
	f, err := ReadFile(s.File)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = Defaults(), nil
	}
	if err != nil {
		return err
	}
	var were []string
	for name, fl := range f.Flags {
		if fl.DefaultVariant != "off" {
			were = append(were, name)
			fl.DefaultVariant = "off"
			f.Flags[name] = fl
		}
	}
	if err := WriteFile(s.File, f); err != nil {
		return fmt.Errorf("switch every scenario off: %w", err)
	}
	slices.Sort(were)
	for _, name := range were {
		s.report(ctx, Event{Time: time.Now(), Round: round, Scenario: name}, 0)
	}
	return nil
}

// report logs a switch on the scheduler's output and annotates the
// dashboards with it. A failed annotation is logged: the class goes on.
func (s *Scheduler) report(ctx context.Context, e Event, hold time.Duration) {
	attrs := []any{"round", e.Round, "scenario", e.Scenario, "state", e.State()}
	if e.On {
		attrs = append(attrs, "hold", hold.String())
	}
	s.Log.InfoContext(ctx, "chaos switch", attrs...)
	if s.Grafana == nil {
		return
	}
	if err := s.Grafana.Annotate(ctx, e); err != nil {
		s.Log.WarnContext(ctx, "chaos annotation failed; the schedule goes on", "scenario", e.Scenario, "state", e.State(), "error", err)
	}
}

func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
