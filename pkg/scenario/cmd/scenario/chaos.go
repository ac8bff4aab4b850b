package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

// chaos runs make chaos until its rounds are done or SIGINT or SIGTERM
// arrives, and leaves every scenario off. Its flags are make chaos's
// variables; GRAFANA_URL (with GRAFANA_USER and GRAFANA_PASSWORD) is where
// the annotations go, none when it is empty.
func chaos(path string, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	var s scenario.ChaosSettings
	fs.StringVar(&s.Every, "every", scenario.DefaultEvery, "EVERY: the pause before each scenario goes on, a range (2m-5m) or one duration")
	fs.StringVar(&s.Hold, "hold", scenario.DefaultHold, "HOLD: how long each scenario stays on, a range or one duration")
	fs.StringVar(&s.Scenarios, "scenarios", "", "SCENARIOS: the scenarios to pick from, comma-separated (empty: the incidents' own but span-name-per-order and propagation-off)")
	fs.StringVar(&s.Seed, "seed", "", "SEED: the same seed gives the same rounds (empty: a random one, logged)")
	fs.StringVar(&s.Rounds, "rounds", "", "ROUNDS: stop after this many rounds (empty or 0: at Ctrl-C)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // the flags are printed
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: scenario [-file path] chaos [-every 2m-5m] [-hold 3m-6m] [-scenarios a,b] [-seed N] [-rounds N]")
	}
	c, err := scenario.ParseChaos(s)
	if err != nil {
		return err
	}
	sched := scenario.Scheduler{Chaos: c, File: path, Log: slog.New(slog.NewJSONHandler(out, nil))}
	if url := getenv("GRAFANA_URL"); url != "" {
		sched.Grafana = &scenario.Grafana{URL: url, User: getenv("GRAFANA_USER"), Password: getenv("GRAFANA_PASSWORD")}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	return sched.Run(ctx)
}
