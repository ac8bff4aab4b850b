// Command scenario lists and switches the workshop's scenarios in the
// scenarios file that the running services watch (make scenario, make
// scenarios). A switch takes effect within a second, without a restart.
//
//	scenario [-file path] list
//	scenario [-file path] set NAME on|off      (1 and 0 too, as make scenario ON= passes them)
//	scenario [-file path] reset        every scenario off
//	scenario [-file path] chaos [-every 2m-5m] [-hold 3m-6m] [-scenarios a,b] [-seed N] [-rounds N]
//	                                   make chaos: one scenario at a time, on and off at random, until
//	                                   the rounds are done or Ctrl-C; then every scenario off
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

func main() {
	path := flag.String("file", "deploy/scenarios/scenarios.json", "the scenarios file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: scenario [-file path] list | set NAME on|off | reset | chaos [flags]")
	}
	flag.Parse()
	if err := run(*path, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "scenario:", err)
		os.Exit(2)
	}
}

func run(path string, args []string) error {
	if len(args) > 0 && args[0] == "chaos" {
		return chaos(path, args[1:], os.Getenv, os.Stdout)
	}
	f, err := scenario.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = scenario.Defaults(), nil
	}
	if err != nil {
		return err
	}
	switch {
	case len(args) == 1 && args[0] == "list":
		for _, name := range slices.Sorted(maps.Keys(f.Flags)) {
			fl := f.Flags[name]
			fmt.Printf("%-20s %-3s  %s (on: %v)\n", name, fl.DefaultVariant, fl.Description, fl.Variants["on"])
		}
		return nil
	case len(args) == 1 && args[0] == "reset":
		return scenario.WriteFile(path, scenario.Defaults())
	case len(args) == 3 && args[0] == "set":
		on, ok := switchValues[args[2]]
		if !ok {
			return fmt.Errorf("%q is not a switch value: use 1 or on, 0 or off", args[2])
		}
		if err := scenario.Set(path, args[1], on); err != nil {
			return err
		}
		fmt.Printf("%s is %s\n", args[1], map[bool]string{true: "on", false: "off"}[on])
		return nil
	}
	return errors.New("usage: scenario [-file path] list | set NAME on|off | reset | chaos [flags]")
}

// switchValues are the values `set` accepts: the words, and the digits that
// make scenario ON=1 and ON=0 pass. Anything else is refused, never read as
// off.
var switchValues = map[string]bool{"1": true, "on": true, "0": false, "off": false}
