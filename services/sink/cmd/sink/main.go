// Command netpulse-sink writes every raw event from NATS JetStream into
// ClickHouse, exactly once.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/services/sink/internal/sink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "netpulse-sink:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := sink.DefaultConfig()
	var warnings []string
	file, err := config.Loader{
		Service: "sink", Args: os.Args[1:], Environ: os.Environ(),
		Warn: func(m string) { warnings = append(warnings, m) },
	}.Load(&cfg)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := cfg.Log.Logger("sink")
	for _, w := range warnings {
		log.Warn(w)
	}
	log.Info("configuration loaded", "file", file)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sink.New(cfg, log).Run(ctx)
}
