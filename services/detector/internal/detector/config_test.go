package detector

import (
	"testing"

	"github.com/netpulse/netpulse/lib/config/configtest"
)

func TestShippedConfigIsTheDefault(t *testing.T) {
	configtest.ShippedIsDefault(t, "detector", "../../../../config/detector.yaml", DefaultConfig)
}
