// Command netpulse-detector consumes raw events from NATS JetStream, runs
// the detectors on them and publishes alerts on
// netpulse.alerts.<detector>.<severity>.<host>.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/service"
	"github.com/netpulse/netpulse/services/detector/detect"
	_ "github.com/netpulse/netpulse/services/detector/detectors/all"
	"github.com/netpulse/netpulse/services/detector/internal/supervisor"
)

func main() {
	cfg, err := supervisor.DefaultConfigFor(detect.Default)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netpulse-detector: %v\n", err)
		os.Exit(1)
	}
	service.Main("detector", &cfg, func() service.Settings { return service.Settings{Log: cfg.Log, Metrics: cfg.Metrics} }, func(ctx context.Context, log *slog.Logger, o *obs.Obs) error {
		d, err := supervisor.New(cfg, detect.Default, log)
		if err != nil {
			return err
		}
		return d.Observe(o).Run(ctx)
	})
}
