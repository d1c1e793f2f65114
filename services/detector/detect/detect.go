// Package detect is the plugin interface of netpulse detectors.
//
// A detector is a pure state machine: it is given one host's event batches
// in stream order (Observe) and, on a clock the framework drives, says which
// conditions hold now (Evaluate). It never touches NATS: the framework
// consumes the events, turns conditions into alerts (pending, firing,
// resolved, fingerprints, reminders) and publishes them.
//
// Adding a detector is one package that calls Register from init, and one
// blank import in services/detector/detectors/all.
package detect

import (
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Severity of an alert; also the third token of its subject.
type Severity string

const (
	Info     Severity = "info"
	Warning  Severity = "warning"
	Critical Severity = "critical"
)

// Valid reports whether s is one of the three severities.
func (s Severity) Valid() bool { return s == Info || s == Warning || s == Critical }

// Input is one batch of events from one host, of one kind, in stream order.
type Input struct {
	Host string
	// Kind is the subject's last token (wire.KindState, KindConn, ...).
	Kind  string
	Batch *eventpb.Batch
	// Replay is true while the framework rebuilds state after taking a host
	// over (latest snapshot and recent events): observe as usual.
	Replay bool
}

// Condition is one thing that is wrong now. The same Labels at the next
// evaluation mean the same alert.
type Condition struct {
	// Labels identify the condition; with the detector name and the host
	// they make the alert's fingerprint and, with alertname, severity and
	// host, its label set (what Alertmanager routes and groups on), so they
	// must not hold values that change while the condition lasts (counts,
	// ages). Names as Prometheus labels: [a-zA-Z_][a-zA-Z0-9_]*.
	Labels map[string]string
	// Details are the values that change while the condition lasts (count,
	// oldest_age_seconds, ratio, ...): the alert's annotations, beside
	// summary and description. Names as for Labels.
	Details  map[string]string
	Severity Severity
	// Value is what was observed and Threshold what it crossed, in the
	// detector's unit (documented per detector).
	Value     float64
	Threshold float64
	// Summary is one line; Description says what to look at.
	Summary     string
	Description string
	// Evidence is the proof in JSON-able values: counts, sample sockets or
	// connections.
	Evidence map[string]any
	// SQL is a ready ClickHouse query showing the underlying events.
	SQL string
}

// Instance is a plugin's state machine for one host (Plugin.New makes one
// per host). Observe and Evaluate are never called concurrently.
type Instance interface {
	// Observe takes one batch. in.Batch is only valid during the call.
	Observe(in Input)
	// Evaluate returns the conditions that hold at now. now comes from the
	// framework's clock (a fake one in tests); event times come from events.
	Evaluate(now time.Time) []Condition
}

// Counting is an Instance that counts what it saw (bad events, evictions,
// ...). The framework adds up the counters of a plugin's instances and shows
// them in the plugin's stats line as <plugin>.<name>; names are snake_case.
type Counting interface {
	Counters() map[string]uint64
}

// Plugin describes a detector kind.
type Plugin struct {
	// Name is the detector's name in config, subjects and labels:
	// lower-case letters, digits and '_'.
	Name        string
	Description string
	// Kinds are the event kinds it consumes (wire.KindState, ...).
	Kinds []string
	// Config returns a pointer to a new config struct holding the defaults,
	// with koanf tags. It may implement Validate() error.
	Config func() any
	// New makes the instance for one host from a validated config (the
	// pointer Config returned, filled in).
	New func(cfg any, host string) (Instance, error)
}

// Typed makes a Plugin.New from a constructor that takes the plugin's own
// config type C (Config returns a *C): the conversion and, when *C has a
// Validate method, the check, with their errors, in one place.
func Typed[C any, I Instance](mk func(cfg C, host string) I) func(cfg any, host string) (Instance, error) {
	return func(cfg any, host string) (Instance, error) {
		c, ok := cfg.(*C)
		if !ok {
			return nil, fmt.Errorf("config is %T, want %T", cfg, c)
		}
		if v, ok := any(c).(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		return mk(*c, host), nil
	}
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Registry holds plugins by name.
type Registry struct {
	mu      sync.RWMutex
	plugins map[string]Plugin
}

// Register adds p; it refuses an empty, malformed or duplicate name and a
// plugin without Config or New.
func (r *Registry) Register(p Plugin) error {
	switch {
	case p.Name == "":
		return fmt.Errorf("detect: plugin with an empty name")
	case !validName.MatchString(p.Name):
		return fmt.Errorf("detect: plugin name %q: use lower-case letters, digits and '_'", p.Name)
	case p.Config == nil || p.New == nil:
		return fmt.Errorf("detect: plugin %q: Config and New are required", p.Name)
	case len(p.Kinds) == 0:
		return fmt.Errorf("detect: plugin %q: consumes no event kinds", p.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.plugins == nil {
		r.plugins = map[string]Plugin{}
	}
	if _, dup := r.plugins[p.Name]; dup {
		return fmt.Errorf("detect: plugin %q registered twice", p.Name)
	}
	r.plugins[p.Name] = p
	return nil
}

// Lookup returns the plugin called name.
func (r *Registry) Lookup(name string) (Plugin, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.plugins[name]
	return p, ok
}

// Names lists the registered plugins, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.plugins))
	for n := range r.plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default is the registry the netpulse-detector command uses.
var Default = &Registry{}

// Register adds p to Default and panics on a refused plugin: it runs from
// init, where a bad plugin is a programming error.
func Register(p Plugin) {
	if err := Default.Register(p); err != nil {
		panic(err)
	}
}
