// Command netpulse-probe watches every TCP state change on this host through
// eBPF and publishes the events to NATS JetStream.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/services/probe/internal/probe"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "netpulse-probe:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := probe.DefaultConfig()
	var warnings []string
	file, err := config.Loader{
		Service: "probe", Args: os.Args[1:], Environ: os.Environ(),
		Warn: func(m string) { warnings = append(warnings, m) },
	}.Load(&cfg)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := cfg.Log.Logger("probe")
	for _, w := range warnings {
		log.Warn(w)
	}
	log.Info("configuration loaded", "file", file)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := probe.New(cfg, log)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
