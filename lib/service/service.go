// Package service is the shared main() of the netpulse commands: load the
// configuration, build the logger, run until SIGINT/SIGTERM, exit non-zero
// on error.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/netpulse/netpulse/lib/config"
)

// Main loads cfg (a pointer to the service's config struct holding its
// defaults) for the service name, then calls run with a context that ends
// on SIGINT or SIGTERM. logOf returns the loaded log settings. Main does not
// return.
func Main(name string, cfg any, logOf func() config.Log, run func(ctx context.Context, log *slog.Logger) error) {
	if err := mainErr(name, cfg, logOf, run); err != nil {
		fmt.Fprintf(os.Stderr, "netpulse-%s: %v\n", name, err)
		os.Exit(1)
	}
}

func mainErr(name string, cfg any, logOf func() config.Log, run func(context.Context, *slog.Logger) error) error {
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
	log := logOf().Logger(name)
	for _, w := range warnings {
		log.Warn(w)
	}
	log.Info("configuration loaded", "file", file)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, log)
}
