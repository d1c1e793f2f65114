// Command netpulse-detector consumes raw events from NATS JetStream and
// raises alerts. For now it consumes and counts; the detectors come next.
package main

import (
	"context"
	"log/slog"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/service"
	"github.com/netpulse/netpulse/services/detector/internal/detector"
)

func main() {
	cfg := detector.DefaultConfig()
	service.Main("detector", &cfg, func() config.Log { return cfg.Log }, func(ctx context.Context, log *slog.Logger) error {
		return detector.New(cfg, log).Run(ctx)
	})
}
