package ingest

import (
	"testing"

	"github.com/netpulse/netpulse/lib/config/configtest"
)

func TestShippedConfigIsTheDefault(t *testing.T) {
	configtest.ShippedIsDefault(t, "sink", "../../../../config/sink.yaml", DefaultConfig)
}
