// Package service is the shared main() of the netpulse commands: load the
// configuration, build the logger, serve metrics and health, run until
// SIGINT/SIGTERM, exit non-zero on error.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/version"
)

// Settings are the keys every service has that Main acts on.
type Settings struct {
	Log     config.Log
	Metrics config.Metrics
}

// Main loads cfg (a pointer to the service's config struct holding its
// defaults) for the service name, serves metrics.addr, then calls run with
// a context that ends on SIGINT or SIGTERM and the service's registry and
// readiness. settings returns the loaded shared keys. --version prints the
// build and exits. Main does not return.
func Main(name string, cfg any, settings func() Settings, run func(ctx context.Context, log *slog.Logger, o *obs.Obs) error) {
	if slices.Contains(os.Args[1:], "--version") {
		fmt.Printf("netpulse-%s %s\n", name, version.Get())
		os.Exit(0)
	}
	if err := mainErr(name, cfg, settings, run); err != nil {
		fmt.Fprintf(os.Stderr, "netpulse-%s: %v\n", name, err)
		os.Exit(1)
	}
}

func mainErr(name string, cfg any, settings func() Settings, run func(context.Context, *slog.Logger, *obs.Obs) error) error {
	var warnings []string
	file, err := config.Loader{
		Service: name, Args: os.Args[1:], Environ: os.Environ(),
		Warn: func(m string) { warnings = append(warnings, m) },
	}.Load(cfg)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	set := settings()
	log := set.Log.Logger(name)
	for _, w := range warnings {
		log.Warn(w)
	}
	log.Info("configuration loaded", "file", file, "version", version.Get().String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := obs.New(name)
	stopServing, err := o.Serve(ctx, set.Metrics.Addr, log)
	if err != nil {
		return err
	}
	defer stopServing()
	return run(ctx, log, o)
}
