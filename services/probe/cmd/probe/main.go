// Command netpulse-probe watches every TCP state change on this host through
// eBPF and publishes the events to NATS JetStream.
package main

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/service"
	"github.com/netpulse/netpulse/services/probe/internal/agent"
)

func main() {
	cfg := agent.DefaultConfig()
	service.Main("probe", &cfg, func() service.Settings { return service.Settings{Log: cfg.Log, Metrics: cfg.Metrics} }, func(ctx context.Context, log *slog.Logger, o *obs.Obs) error {
		if cfg.MemoryLimit > 0 {
			// Process-wide, so here rather than in Run, which tests call
			// in their own process.
			debug.SetMemoryLimit(cfg.MemoryLimit)
		}
		p, err := agent.New(cfg, log)
		if err != nil {
			return err
		}
		return p.Observe(o).Run(ctx)
	})
}
