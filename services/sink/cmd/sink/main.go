// Command netpulse-sink writes every raw event (every kind but stats) and
// every alert from NATS JetStream into ClickHouse, exactly once.
package main

import (
	"context"
	"log/slog"

	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/service"
	"github.com/netpulse/netpulse/services/sink/internal/ingest"
)

func main() {
	cfg := ingest.DefaultConfig()
	service.Main("sink", &cfg, func() service.Settings { return service.Settings{Log: cfg.Log, Metrics: cfg.Metrics} },
		func(ctx context.Context, log *slog.Logger, o *obs.Obs) error {
			return ingest.New(cfg, log).Observe(o).Run(ctx)
		})
}
