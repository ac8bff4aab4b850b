package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

// File is the scenarios file: flagd's flag-definition format, without its
// targeting rules. Every flag has an "off" and an "on" variant; switching a
// scenario sets its defaultVariant. An instructor may edit the "on" values
// (a failure rate, a delay, a tenant) to tune a scenario.
type File struct {
	Schema string          `json:"$schema,omitempty"`
	Flags  map[string]Flag `json:"flags"`
}

// Flag is one flag of the file.
type Flag struct {
	State          string         `json:"state"` // ENABLED or DISABLED
	Variants       map[string]any `json:"variants"`
	DefaultVariant string         `json:"defaultVariant"`
	Description    string         `json:"description,omitempty"`
}

// ReadFile reads and checks a scenarios file.
func ReadFile(path string) (File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return File{}, err
	}
	return parse(raw)
}

func parse(raw []byte) (File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return File{}, fmt.Errorf("scenarios file: %w", err)
	}
	for key, fl := range f.Flags {
		if fl.State != "ENABLED" && fl.State != "DISABLED" {
			return File{}, fmt.Errorf("scenarios file: flag %s: state %q is neither ENABLED nor DISABLED", key, fl.State)
		}
		if _, ok := fl.Variants[fl.DefaultVariant]; !ok {
			return File{}, fmt.Errorf("scenarios file: flag %s: defaultVariant %q is not one of its variants", key, fl.DefaultVariant)
		}
	}
	return f, nil
}

// WriteFile writes f to path atomically (a new file renamed over the old),
// so a service never reads half of it.
func WriteFile(path string, f File) error {
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Set switches one scenario of the file at path on or off, keeping the rest
// of the file (an instructor's tuned "on" values) as it is. A missing file
// starts from the defaults.
func Set(path, name string, on bool) error {
	f, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = Defaults(), nil
	}
	if err != nil {
		return err
	}
	fl, ok := f.Flags[name]
	if !ok {
		return fmt.Errorf("no scenario %q; the scenarios are %v", name, slices.Sorted(maps.Keys(f.Flags)))
	}
	fl.DefaultVariant = map[bool]string{true: "on", false: "off"}[on]
	f.Flags[name] = fl
	return WriteFile(path, f)
}

// FileProvider is an OpenFeature provider that reads the scenarios file and
// checks it for changes every poll interval: a switch takes effect within
// one interval, without a restart. A file that is missing or does not parse
// leaves the last good flags in force (none at first: every flag then reads
// its default, which is off).
type FileProvider struct {
	path string
	poll time.Duration
	log  *slog.Logger

	mu    sync.RWMutex
	flags map[string]Flag
	stamp string // size and modification time of the file last read
	bad   string // the stamp of the last unusable file, logged once

	events chan openfeature.Event
	stop   chan struct{}
	done   chan struct{}
}

// NewFileProvider returns a provider for the file at path.
func NewFileProvider(path string, poll time.Duration, log *slog.Logger) *FileProvider {
	return &FileProvider{
		path: path, poll: poll, log: log,
		events: make(chan openfeature.Event, 4),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Metadata names the provider.
func (p *FileProvider) Metadata() openfeature.Metadata {
	return openfeature.Metadata{Name: "ordertrace-scenarios-file"}
}

// Hooks returns none.
func (p *FileProvider) Hooks() []openfeature.Hook { return nil }

// EventChannel reports configuration changes to the SDK.
func (p *FileProvider) EventChannel() <-chan openfeature.Event { return p.events }

// Init reads the file once and starts watching it.
func (p *FileProvider) Init(openfeature.EvaluationContext) error {
	p.reload()
	go p.watch()
	return nil
}

// Shutdown stops watching.
func (p *FileProvider) Shutdown() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
		<-p.done
	}
}

func (p *FileProvider) watch() {
	defer close(p.done)
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.reload()
		}
	}
}

// reload reads the file if it changed, and reports the flags that changed.
func (p *FileProvider) reload() {
	// Only the watcher goroutine (and Init, before it starts) writes stamp
	// and bad, so reading them here needs no lock.
	stamp := "missing"
	info, err := os.Stat(p.path)
	if err == nil {
		stamp = fmt.Sprint(info.Size(), info.ModTime().UnixNano())
	}
	if stamp == p.stamp || stamp == p.bad {
		return // unchanged since the last read, or already reported
	}
	f, err := ReadFile(p.path)
	if err != nil {
		p.bad = stamp
		if errors.Is(err, fs.ErrNotExist) && p.stamp == "" {
			// A fresh checkout: the live file appears with the first switch.
			p.log.Info("no scenarios file yet: every scenario is off until make scenario writes it", "path", p.path)
			return
		}
		p.log.Warn("scenarios file unusable; the last good flags stay in force", "path", p.path, "error", err)
		return
	}
	p.mu.RLock()
	old := p.flags // only this watcher writes p.flags
	p.mu.RUnlock()

	var changed []string
	for key := range f.Flags {
		if !reflect.DeepEqual(old[key], f.Flags[key]) {
			changed = append(changed, key)
		}
	}
	for key := range old {
		if _, kept := f.Flags[key]; !kept {
			changed = append(changed, key)
		}
	}
	slices.Sort(changed)
	// Logged before the flags are in force: whoever sees a switch's effect
	// finds its log line already written.
	for _, key := range changed {
		if old != nil { // the first read is no switch
			p.log.Info("scenario switched", "flag", key, "variant", f.Flags[key].DefaultVariant)
		}
	}
	p.mu.Lock()
	p.flags = f.Flags
	p.mu.Unlock()
	p.stamp, p.bad = stamp, ""
	if len(changed) == 0 {
		return
	}
	select {
	case p.events <- openfeature.Event{
		ProviderName: p.Metadata().Name, EventType: openfeature.ProviderConfigChange,
		ProviderEventDetails: openfeature.ProviderEventDetails{Message: "scenarios file changed", FlagChanges: changed},
	}:
	default: // nobody is listening; the flags are in force anyway
	}
}

// resolve finds the value of a flag, or why the default applies.
func (p *FileProvider) resolve(flag string) (any, openfeature.ProviderResolutionDetail) {
	p.mu.RLock()
	f, ok := p.flags[flag]
	p.mu.RUnlock()
	switch {
	case !ok:
		return nil, openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewFlagNotFoundResolutionError("no flag " + flag + " in the scenarios file"),
			Reason:          openfeature.ErrorReason,
		}
	case f.State == "DISABLED":
		return nil, openfeature.ProviderResolutionDetail{Reason: openfeature.DisabledReason}
	}
	return f.Variants[f.DefaultVariant], openfeature.ProviderResolutionDetail{Reason: openfeature.StaticReason, Variant: f.DefaultVariant}
}

func mismatch(flag, want string, v any) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{
		ResolutionError: openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("flag %s is %T, not %s", flag, v, want)),
		Reason:          openfeature.ErrorReason,
	}
}

// resolveAs resolves a flag as a T: the default when the flag is missing or
// disabled, or when convert cannot make a T of its value.
func resolveAs[T any](p *FileProvider, flag string, def T, want string, convert func(any) (T, bool)) openfeature.GenericResolutionDetail[T] {
	v, d := p.resolve(flag)
	if v == nil {
		return openfeature.GenericResolutionDetail[T]{Value: def, ProviderResolutionDetail: d}
	}
	t, ok := convert(v)
	if !ok {
		return openfeature.GenericResolutionDetail[T]{Value: def, ProviderResolutionDetail: mismatch(flag, want, v)}
	}
	return openfeature.GenericResolutionDetail[T]{Value: t, ProviderResolutionDetail: d}
}

func typed[T any](v any) (T, bool) {
	t, ok := v.(T)
	return t, ok
}

// BooleanEvaluation resolves a boolean flag.
func (p *FileProvider) BooleanEvaluation(_ context.Context, flag string, def bool, _ openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	return resolveAs(p, flag, def, "a boolean", typed[bool])
}

// StringEvaluation resolves a string flag.
func (p *FileProvider) StringEvaluation(_ context.Context, flag string, def string, _ openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	return resolveAs(p, flag, def, "a string", typed[string])
}

// FloatEvaluation resolves a number flag (encoding/json decodes every number
// as a float64).
func (p *FileProvider) FloatEvaluation(_ context.Context, flag string, def float64, _ openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return resolveAs(p, flag, def, "a number", typed[float64])
}

// IntEvaluation resolves a whole-number flag.
func (p *FileProvider) IntEvaluation(_ context.Context, flag string, def int64, _ openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return resolveAs(p, flag, def, "a whole number", func(v any) (int64, bool) {
		n, ok := v.(float64)
		return int64(n), ok && n == math.Trunc(n)
	})
}

// ObjectEvaluation resolves any flag as its JSON value.
func (p *FileProvider) ObjectEvaluation(_ context.Context, flag string, def any, _ openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return resolveAs(p, flag, def, "a JSON value", func(v any) (any, bool) { return v, true })
}
