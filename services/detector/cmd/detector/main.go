// Command netpulse-detector consumes raw events from NATS JetStream and
// raises alerts. For now it consumes and counts; the detectors come next.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/services/detector/internal/detector"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "netpulse-detector:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := detector.DefaultConfig()
	var warnings []string
	file, err := config.Loader{
		Service: "detector", Args: os.Args[1:], Environ: os.Environ(),
		Warn: func(m string) { warnings = append(warnings, m) },
	}.Load(&cfg)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := cfg.Log.Logger("detector")
	for _, w := range warnings {
		log.Warn(w)
	}
	log.Info("configuration loaded", "file", file)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return detector.New(cfg, log).Run(ctx)
}
